"""Per-task evaluation and the demo's quality bar."""

import math

import pytest
import torch
from torch import nn

from magvit.batch import ClipBatch
from magvit.metrics.evaluation import EvalReport, TaskScores, evaluate_tasks, quality_bar
from magvit.pipeline import MagvitPipeline


def scores(gen, base, cond, tok_cond=30.0):
    return TaskScores(psnr_generated=gen, psnr_trivial=base, psnr_condition=cond, psnr_tokenizer_condition=tok_cond,
                      psnr=20.0, ssim=0.5, fvd=None, num_clips=4)


def test_quality_bar_compares_generated_region_and_condition_margin():
    report = EvalReport(
        tokenizer_psnr=30.0,
        tasks={
            "fp": scores(22.0, 20.0, 29.5),  # beats the trivial answer, condition within 1 dB
            "opc": scores(19.0, 20.0, 29.5),  # worse than the trivial answer
            "ipc": scores(25.0, 20.0, 28.9),  # condition more than 1 dB below the tokenizer in that region
            "opv": scores(25.0, 20.0, 14.5, tok_cond=15.0),  # region is hard for the tokenizer too: passes
            "cg": scores(10.0, 5.0, None, None),  # no visual condition: the bar does not apply
        },
        paste_condition=False,
        fvd=None,
    )
    bar = quality_bar(report)
    assert bar == {
        "fp": {"beats_trivial": True, "condition_within_margin": True},
        "opc": {"beats_trivial": False, "condition_within_margin": True},
        "ipc": {"beats_trivial": True, "condition_within_margin": False},
        "opv": {"beats_trivial": True, "condition_within_margin": True},
    }
    assert report.average()["psnr_generated"] == pytest.approx((22 + 19 + 25 + 25 + 10) / 5)
    assert "average" in report.table() and report.to_csv().splitlines()[0].startswith("task,psnr_generated")


class MeanColour(nn.Module):
    """A tiny deterministic feature extractor: per-channel means and stds (6 features)."""

    num_features = 6

    def forward(self, video):
        return torch.cat([video.mean(dim=(2, 3, 4)), video.std(dim=(2, 3, 4))], dim=1)


def test_evaluate_tasks_scores_every_task():
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp", "opc", "cg"], num_classes=3, resolution=32)
    g = torch.Generator().manual_seed(1)
    batches = [ClipBatch(video=torch.rand(2, 3, 16, 32, 32, generator=g), label=torch.tensor([0, 2]), keys=["a", "b"])
               for _ in range(2)]
    seen = []
    report = evaluate_tasks(pipe, batches, fvd_extractor=MeanColour(), progress=False,
                            on_batch=lambda name, c, gen, real: seen.append(name))
    assert seen == ["fp", "opc", "cg"]
    assert set(report.tasks) == {"fp", "opc", "cg"}
    for name, s in report.tasks.items():
        assert s.num_clips == 4 and s.fvd is not None and s.fvd >= 0
        assert math.isfinite(s.psnr_generated) and math.isfinite(s.psnr_trivial)
    assert report.tasks["cg"].psnr_condition is None  # cg has no condition region
    assert report.tasks["cg"].psnr_tokenizer_condition is None
    assert report.tasks["fp"].psnr_condition is not None
    # trivial answer for fp = the decoded padded condition video, scored outside the condition pixels
    video = torch.cat([b.video for b in batches])
    cond = pipe.tasks["fp"].condition(video)
    base = pipe.tokenizer.decode(pipe.tokenizer.encode(cond.video)).clamp(0, 1)
    region = (~cond.mask).expand_as(video)
    mse = ((base - video)[region] ** 2).mean()
    assert report.tasks["fp"].psnr_trivial == pytest.approx(float(-10 * torch.log10(mse)), abs=1e-3)
    # ... and the same decoded condition video scored inside the condition pixels (the copy-the-condition bound)
    inside = cond.mask.expand_as(video)
    mse_in = ((base - video)[inside] ** 2).mean()
    assert report.tasks["fp"].psnr_trivial_condition == pytest.approx(float(-10 * torch.log10(mse_in)), abs=1e-3)
    assert report.tasks["cg"].psnr_trivial_condition is None
    assert report.fvd["num_real"] == 4 and report.tokenizer_psnr > 0
