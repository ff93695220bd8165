"""FVD: preprocessing, the Frechet distance, sum states under merging / simulated DDP, and the record."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from magvit.errors import InputError, MagvitError
from magvit.metrics import I3D, FrechetVideoDistance, Preprocessing, frechet_distance
from magvit.metrics.fvd import gaussian_from_sums, preprocess_video, resize_frames

SMALL = Preprocessing(size=(8, 8))


class PooledColour(nn.Module):
    """A linear, parameter-free extractor: mean colour of each 2x2 quadrant over time -> 12 features."""

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool3d(video, (1, 2, 2)).flatten(1)


def videos(n: int, seed: int, frames: int = 3, size: int = 6) -> torch.Tensor:
    """Random videos in [0.2, 0.6], leaving room for shifts that stay inside [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return 0.2 + 0.4 * torch.rand(n, 3, frames, size, size, generator=gen, dtype=torch.float64)


def fvd_metric(**kw) -> FrechetVideoDistance:
    return FrechetVideoDistance(PooledColour(), num_features=12, preprocessing=SMALL, **kw)


def test_tf1_resize_has_no_half_pixel_offset():
    row = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4)
    up = resize_frames(row, (1, 8), "tf1_bilinear").flatten().tolist()
    assert up == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]  # src = dst * 4/8, upper neighbour clamped
    assert resize_frames(row, (1, 2), "tf1_bilinear").flatten().tolist() == [0.0, 2.0]
    half = resize_frames(row, (1, 8), "half_pixel_bilinear").flatten().tolist()
    assert half == [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]


def test_preprocess_resizes_every_frame_and_scales_to_minus_one_one():
    video = torch.full((2, 3, 4, 10, 12), 0.75)
    video[:, :, 1] = 0.25
    out = preprocess_video(video)
    assert out.shape == (2, 3, 4, 224, 224)
    assert torch.all(out[:, :, 1] == -0.5) and torch.all(out[:, :, [0, 2, 3]] == 0.5)


def test_frechet_distance_of_diagonal_gaussians_is_exact():
    mu1, mu2 = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0])
    s1, s2 = torch.diag(torch.tensor([1.0, 4.0])), torch.diag(torch.tensor([4.0, 9.0]))
    # |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2 = 5 + 1 + 1
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(7.0, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 9)), rng.standard_normal((6, 9))
    s1, s2 = a @ a.T, b @ b.T  # non-commuting SPD matrices
    m1, m2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    got = frechet_distance(*(torch.from_numpy(x) for x in (m1, s1, m2, s2)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_gaussian_from_sums_is_mean_and_unbiased_covariance():
    x = torch.randn(20, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mean, cov = gaussian_from_sums(torch.tensor(20.0, dtype=torch.float64), x.sum(0), x.T @ x)
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(cov, torch.cov(x.T))


def test_fvd_of_a_set_with_itself_is_zero():
    metric = fvd_metric()
    real = videos(16, seed=0)
    metric.update(real, real=True)
    metric.update(real, real=False)
    assert abs(metric.compute().item()) < 1e-10


@pytest.mark.parametrize("shift", [0.05, 0.1, 0.2])
def test_fvd_grows_with_a_shift_exactly_as_the_mean_moves(shift):
    # Resize and pooling are linear and preserve constants, so shifting every pixel by c moves every
    # feature by 2c (the [-1, 1] scaling) and leaves the covariance alone: FVD = 12 * (2c)^2.
    metric = fvd_metric()
    real = videos(16, seed=0)
    metric.update(real, real=True)
    metric.update(real + shift, real=False)
    # (features are float32 as the extractor returns them; the sums are float64)
    assert metric.compute().item() == pytest.approx(12 * (2 * shift) ** 2, rel=1e-6)


def test_fvd_increases_monotonically_with_noise():
    real = videos(24, seed=1)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64) - 0.5
    values = []
    for scale in (0.0, 0.1, 0.2, 0.4):
        metric = fvd_metric()
        metric.update(real, real=True)
        metric.update(real + scale * noise, real=False)
        values.append(metric.compute().item())
    assert values[0] == pytest.approx(0.0, abs=1e-10)
    assert values == sorted(values) and values[1] > 0


def _updates(metric_for, parts):
    for i, (video, real) in enumerate(parts):
        metric_for(i).update(video, real=real)


@pytest.fixture
def parts():
    return [(videos(5, seed=10), True), (videos(7, seed=11, frames=4), False), (videos(6, seed=12), True),
            (videos(4, seed=13, frames=5), False), (videos(3, seed=14), True), (videos(5, seed=15), False)]


def test_split_updates_merge_to_the_single_instance_result(parts):
    single, rank0, rank1 = fvd_metric(), fvd_metric(), fvd_metric()
    _updates(lambda i: single, parts)
    _updates(lambda i: (rank0, rank1)[(i // 2) % 2], parts)  # rank0: 8 real, 12 fake; rank1: 6 real, 4 fake
    assert rank0.result().max_frames == 4 and rank1.result().max_frames == 5
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(single.compute().item(), rel=1e-12)
    a, b = rank0.result(), single.result()
    assert (a.num_real, a.num_fake, a.min_frames, a.max_frames) == (b.num_real, b.num_fake, 3, 5) == (14, 16, 3, 5)


def test_ddp_reduction_of_the_sum_states_is_exact(parts):
    single, rank0, rank1 = fvd_metric(), fvd_metric(), fvd_metric()
    _updates(lambda i: single, parts)
    _updates(lambda i: (rank0, rank1)[(i // 2) % 2], parts)
    other = {id(state): rank1.metric_state[name] for name, state in rank0.metric_state.items()}

    def all_gather(tensor, group=None):  # what torch.distributed would return on rank 0 of two ranks
        return [tensor, other[id(tensor)]]

    rank0.sync(dist_sync_fn=all_gather, distributed_available=lambda: True)
    for name, value in single.metric_state.items():
        torch.testing.assert_close(rank0.metric_state[name], value, rtol=1e-13, atol=1e-12, msg=name)
    rank0.unsync()
    assert rank0.real_count.item() == 8  # back to the local sums after unsync


def test_result_records_weights_counts_and_preprocessing():
    torch.manual_seed(0)
    metric = FrechetVideoDistance(I3D(), extractor_batch=2)
    gen = torch.Generator().manual_seed(4)
    metric.update(torch.rand(2, 3, 2, 8, 8, generator=gen), real=True)
    metric.update(torch.rand(2, 3, 2, 8, 8, generator=gen), real=False)
    res = metric.result()
    assert res.weights_sha256 == "random-init" and res.extractor == "I3D"
    assert (res.num_real, res.num_fake, res.min_frames, res.max_frames) == (2, 2, 2, 2)
    assert res.preprocessing == Preprocessing(size=(224, 224), resize="tf1_bilinear", value_range=(-1.0, 1.0))
    assert not res.follows_reference_protocol  # random weights and 2 < 9 frames
    assert math.isfinite(res.fvd) and res.fvd == metric.compute().item()


def test_injected_extractor_is_identified_by_its_state_dict():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        b.weight.add_(1)
    ids = [FrechetVideoDistance(m, num_features=2).weights_sha256 for m in (a, a, b)]
    assert ids[0] == ids[1] != ids[2] and ids[0].startswith("state-dict:")
    assert FrechetVideoDistance(a, num_features=2, weights_sha256="abc").weights_sha256 == "abc"


def test_bad_inputs_are_clear_errors():
    metric = fvd_metric()
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        metric.update(videos(2, 0) + 0.5, real=True)
    with pytest.raises(InputError, match=r"\[B, 3, T, H, W\]"):
        metric.update(torch.rand(2, 3, 8, 8), real=True)
    with pytest.raises(InputError, match="real must be True"):
        metric.update(videos(2, 0), real=1)
    with pytest.raises(InputError, match="num_features"):
        FrechetVideoDistance(PooledColour(), num_features=400, preprocessing=SMALL).update(videos(2, 0), real=True)
    metric.update(videos(1, 0), real=True)
    with pytest.raises(MagvitError, match="at least 2 real videos"):
        metric.compute()
