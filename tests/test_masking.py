"""Mask schedules, condition-token derivation and the training-time mask."""

import math
import warnings

import attrs
import pytest
import torch

from magvit import registry
from magvit.pipeline import MagvitPipeline
from magvit.protocols import Condition
from tests.helpers.tasks import EverySecondPixel
from magvit.transformer import MaskedTransformer
from magvit.masking import (
    ConditionCoverageWarning,
    LossWeights,
    condition_coverage_problems,
    condition_token_mask,
    num_masked,
    random_mask,
    sample_ratio,
    task_token_mask,
)

# -- schedules --------------------------------------------------------------------------------------


def test_builtin_schedulers_registered():
    assert registry.mask_scheduler_names()[:4] == ["cosine", "linear", "square", "exp"]


@pytest.mark.parametrize(
    "name,r,expected",
    [
        ("cosine", 0.0, 1.0),
        ("cosine", 0.5, math.cos(math.pi / 4)),
        ("cosine", 1.0, 0.0),
        ("linear", 0.25, 0.75),
        ("square", 0.5, 0.75),
        ("exp", 0.0, 1 - 2**-10),
        ("exp", 0.5, 1 - 2**-5),
        ("exp", 1.0, 0.0),
    ],
)
def test_schedule_values(name, r, expected):
    assert float(registry.get_mask_scheduler(name).ratio(r)) == pytest.approx(expected, abs=1e-12)


def test_cosine_decoding_counts_match_reference():
    # Tokens still masked after each of 12 cosine steps for N = 1024 (the authors' count, against all N).
    cosine = registry.get_mask_scheduler("cosine")
    counts = [math.floor(1024 * float(cosine.ratio((t + 1) / 12))) for t in range(11)]
    assert counts == [1015, 989, 946, 886, 812, 724, 623, 512, 391, 265, 133]


def test_num_masked_clips_to_at_least_one():
    assert num_masked(1024, 0.0) == 1
    assert num_masked(1024, 1.0) == 1024
    assert num_masked(1024, 0.5) == 512


def test_sample_ratio_seeded():
    cosine = registry.get_mask_scheduler("cosine")
    a = [sample_ratio(cosine, torch.Generator().manual_seed(3)) for _ in range(2)]
    u = torch.rand((), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert a[0] == a[1] == pytest.approx(math.cos(math.pi / 2 * float(u)))


@pytest.mark.parametrize("ratio", [1e-9, 0.1, 0.5, 0.77, 1.0])
def test_random_mask_exact_counts(ratio):
    m = random_mask((4, 1024), ratio, torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool
    assert m.sum(dim=1).tolist() == [num_masked(1024, ratio)] * 4


def test_random_mask_reproducible():
    a = random_mask((2, 64), 0.5, torch.Generator().manual_seed(7))
    b = random_mask((2, 64), 0.5, torch.Generator().manual_seed(7))
    c = random_mask((2, 64), 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- condition tokens -------------------------------------------------------------------------------


def _token_mask(name, size=64, down=(4, 4, 4), **kwargs):
    task = registry.get_task(name, **kwargs)
    cond = task.condition(torch.rand(1, 3, 16, size, size, generator=torch.Generator().manual_seed(0)))
    return condition_token_mask(cond.mask, down)[0]


def test_token_mask_static_regions():
    for size, down in [(64, (4, 4, 4)), (128, (4, 8, 8))]:
        box = torch.zeros(4, 16, 16, dtype=torch.bool)
        box[:, 4:12, 4:12] = True
        assert torch.equal(_token_mask("opc", size, down), box)
        assert torch.equal(_token_mask("ipc", size, down), ~box)
        band = torch.zeros(4, 16, 16, dtype=torch.bool)
        band[:, 4:12] = True
        assert torch.equal(_token_mask("oph", size, down), band)
        assert torch.equal(_token_mask("opv", size, down), band.transpose(1, 2))


def test_token_mask_frames():
    assert _token_mask("fp")[:, 0, 0].tolist() == [True, False, False, False]
    assert _token_mask("fp", cond_frames=5)[:, 0, 0].tolist() == [True, True, False, False]
    assert _token_mask("fi")[:, 0, 0].tolist() == [True, False, False, True]
    assert not _token_mask("cg").any()


def test_token_mask_dynamic_supervoxel_rule():
    # Latent frame lt covers frames 4lt..4lt+3; the band union there is [s(4lt), s(4lt+3) + 32).
    opd = _token_mask("opd")
    expected_cols = [range(0, 10), range(2, 12), range(4, 14), range(6, 16)]
    for lt, cols in enumerate(expected_cols):
        row = torch.zeros(16, dtype=torch.bool)
        row[list(cols)] = True
        assert torch.equal(opd[lt], row.expand(16, 16))
    # IPD: a token is padding only if its supervoxel lies in the hole in all four frames.
    ipd = _token_mask("ipd")
    hole_cols = [range(2, 8), range(4, 10), range(6, 12), range(8, 14)]
    for lt, cols in enumerate(hole_cols):
        hole = torch.zeros(16, 16, dtype=torch.bool)
        hole[4:12, list(cols)] = True
        assert torch.equal(ipd[lt], ~hole)


def test_token_mask_analytic_rule_reproduces_authors_code():
    # The authors' latent band (cond_utils.py): [ls(t), ls(t) + 8) with ls = [0, 3, 5, 8].
    task = registry.get_task("opd")
    cond = task.condition(torch.rand(2, 3, 16, 64, 64))
    m = task_token_mask(task, cond.mask, (4, 4, 4), rule="analytic")
    assert m.shape == (2, 4, 16, 16)
    for lt, ls in enumerate([0, 3, 5, 8]):
        assert m[0, lt, 0].nonzero().flatten().tolist() == list(range(ls, ls + 8))
    fp5 = registry.get_task("fp", cond_frames=5)
    m = task_token_mask(fp5, fp5.condition(torch.rand(1, 3, 16, 64, 64)).mask, (4, 4, 4), rule="analytic")
    assert m[0, :, 0, 0].tolist() == [True, True, False, False]
    fp5_hand = registry.get_task("fp", cond_frames=5, cond_latent_frames=1)
    m = task_token_mask(fp5_hand, fp5_hand.condition(torch.rand(1, 3, 16, 64, 64)).mask, (4, 4, 4), "analytic")
    assert m[0, :, 0, 0].tolist() == [True, False, False, False]


def test_static_regions_agree_between_rules():
    for name in ["fp", "fi", "opc", "oph", "opv", "ipc", "cg", "cfp"]:
        task = registry.get_task(name)
        mask = task.condition(torch.rand(1, 3, 16, 128, 128)).mask
        assert torch.equal(
            task_token_mask(task, mask, (4, 8, 8), "supervoxel"), task_token_mask(task, mask, (4, 8, 8), "analytic")
        ), name


def test_token_mask_rejects_indivisible():
    with pytest.raises(ValueError, match="not divisible"):
        condition_token_mask(torch.zeros(1, 1, 16, 60, 64, dtype=torch.bool), (4, 8, 8))
    with pytest.raises(ValueError, match="token rule"):
        task_token_mask(registry.get_task("fp"), torch.zeros(1, 1, 16, 64, 64, dtype=torch.bool), (4, 4, 4), "x")


# -- condition coverage -----------------------------------------------------------------------------


@attrs.frozen
class KeepNothing(EverySecondPixel):
    prompt: str = "nothing"
    name = "nothing"

    def condition(self, video, generator=None):
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool)
        return Condition(video, mask)


@attrs.frozen
class RandomFirstFrames(EverySecondPixel):
    """The first 1..T-1 frames, at random: all tokens of 16 frames under 4-frame supervoxels only if k > 12."""

    prompt: str = "rff"
    name = "rff"
    deterministic = False

    def condition(self, video, generator=None):
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool)
        mask[:, :, : int(torch.randint(1, video.shape[2], (1,), generator=generator))] = True
        return Condition(video, mask)


def test_condition_coverage_flags_all_and_none_only():
    tasks = [EverySecondPixel(), KeepNothing(), registry.get_task("fp"), registry.get_task("cg"), RandomFirstFrames()]
    problems = condition_coverage_problems(tasks, (4, 4, 4), (16, 32, 32))
    assert problems == [
        "task 'every2': its condition covers all 256 tokens of the 4x8x8 token grid under the tokenizer's 4x4x4 "
        "supervoxels: no token is left to generate, only the condition's tokens to refine; leave whole "
        "supervoxels without condition pixels",
        "task 'nothing': its condition covers none of the 256 tokens of the 4x8x8 token grid under the "
        "tokenizer's 4x4x4 supervoxels: the model sees no condition; set needs_video False if that is meant",
    ]
    # A random condition is flagged only when every draw is: here every draw keeps all 8 frames of the clip.
    assert condition_coverage_problems([RandomFirstFrames()], (8, 4, 4), (8, 32, 32)) == [
        "task 'rff': its condition covers all 64 tokens of the 1x8x8 token grid under the tokenizer's 8x4x4 "
        "supervoxels (in each of 8 random draws): no token is left to generate, only the condition's tokens to "
        "refine; leave whole supervoxels without condition pixels"
    ]
    # One pixel per supervoxel is no longer every token once the supervoxel is a single pixel.
    assert condition_coverage_problems([EverySecondPixel()], (1, 1, 1), (4, 8, 8)) == []


def test_pipeline_construction_warns_once_per_task():
    tokenizer = registry.get_tokenizer("vq3d", preset="tiny", resolution=32)
    tasks = [EverySecondPixel(), registry.get_task("fp")]
    transformer = MaskedTransformer.from_preset(
        "tiny", codebook_size=tokenizer.codebook_size, num_classes=0, prompts=[t.prompt for t in tasks],
        num_tokens=256, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MagvitPipeline(tokenizer, transformer, tasks, frames=16, resolution=32)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConditionCoverageWarning)]
    assert len(messages) == 1
    assert messages[0].startswith("task 'every2': its condition covers all 256 tokens of the 4x8x8 token grid "
                                  "under the tokenizer's 4x4x4 supervoxels: no token is left to generate")
