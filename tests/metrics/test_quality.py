"""Video PSNR / SSIM over folded frames and PSNR inside a region mask, with hand-computed values."""

import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from magvit.errors import InputError
from magvit.metrics import MaskedPSNR, VideoPSNR, VideoSSIM


def row(values, channels: int = 1) -> torch.Tensor:
    """A one-frame, one-row video [1, C, 1, 1, W] holding ``values`` in every channel."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, 1, -1).repeat(1, channels, 1, 1, 1)


def region(flags) -> torch.Tensor:
    return torch.tensor(flags).view(1, 1, 1, 1, -1)


@pytest.mark.parametrize("channels", [1, 3])
def test_masked_psnr_scores_only_the_region(channels):
    preds, target = row([0.1, 0.2, 0.5, 0.5], channels), row([0.0, 0.0, 0.0, 0.0], channels)
    inside, outside = MaskedPSNR(), MaskedPSNR()
    inside.update(preds, target, region([True, True, False, False]))
    outside.update(preds, target, region([False, False, True, True]))
    # inside: MSE = (0.01 + 0.04) / 2 = 0.025 -> 10 log10(40); outside: MSE = 0.25 -> 10 log10(4)
    assert inside.compute().item() == pytest.approx(10 * math.log10(40), abs=1e-6)
    assert outside.compute().item() == pytest.approx(10 * math.log10(4), abs=1e-6)
    assert inside.count.item() == 2 * channels


def test_masked_psnr_pools_squared_error_over_updates_and_merges_exactly():
    target = row([0.0, 0.0])
    single, rank0, rank1 = MaskedPSNR(), MaskedPSNR(), MaskedPSNR()
    batches = [(row([0.1, 0.9]), region([True, False])), (row([0.3, 0.3]), region([True, True]))]
    for i, (preds, mask) in enumerate(batches):
        single.update(preds, target, mask)
        (rank0, rank1)[i].update(preds, target, mask)
    rank0.merge_state(rank1)
    # SSE = 0.01 + 0.09 + 0.09 over 3 values -> MSE 0.19 / 3
    expected = 10 * math.log10(3 / 0.19)
    assert single.compute().item() == pytest.approx(expected, abs=1e-6)
    assert rank0.compute().item() == pytest.approx(expected, abs=1e-6)


def test_masked_psnr_with_full_mask_equals_video_psnr():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 4, 8, 8, generator=gen)
    preds = (target + 0.05 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    masked, plain = MaskedPSNR(), VideoPSNR()
    masked.update(preds, target, torch.ones(2, 1, 4, 8, 8, dtype=torch.bool))
    plain.update(preds, target)
    assert masked.compute().item() == pytest.approx(plain.compute().item(), abs=1e-4)


def test_masked_psnr_errors():
    metric = MaskedPSNR()
    preds = row([0.1, 0.2])
    with pytest.raises(InputError, match=r"bool tensor \[B, 1, T, H, W\]"):
        metric.update(preds, preds, region([1, 0]))
    with pytest.raises(InputError, match=r"bool tensor \[B, 1, T, H, W\]"):
        metric.update(preds, preds, region([True, False, True]))
    with pytest.raises(InputError, match="same shape"):
        metric.update(preds, row([0.1, 0.2, 0.3]), region([True, False]))
    with pytest.raises(InputError, match=r"\.clamp\(0, 1\)"):
        metric.update(row([1.2, 0.0]), preds, region([True, False]))
    metric.update(preds, preds, region([False, False]))
    with pytest.raises(InputError, match="no masked pixels"):
        metric.compute()


def test_video_psnr_pooled_and_per_frame():
    target = torch.zeros(1, 1, 2, 2, 2)
    preds = target.clone()
    preds[:, :, 0] = 0.1   # frame 0: MSE 0.01 -> 20 dB
    preds[:, :, 1] = 0.01  # frame 1: MSE 1e-4 -> 40 dB
    pooled, per_frame = VideoPSNR(), VideoPSNR(dim=(1, 2, 3))
    pooled.update(preds, target)
    per_frame.update(preds, target)
    assert pooled.compute().item() == pytest.approx(10 * math.log10(2 / 0.0101), abs=1e-4)
    assert per_frame.compute().item() == pytest.approx(30.0, abs=1e-4)


def test_video_ssim_averages_frames():
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 3, 16, 16, generator=gen)
    preds = (target + 0.1 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    metric = VideoSSIM()
    metric.update(preds, target)
    frames = [structural_similarity_index_measure(preds[b, :, t][None], target[b, :, t][None], data_range=1.0)
              for b in range(2) for t in range(3)]
    assert metric.compute().item() == pytest.approx(torch.stack(frames).mean().item(), abs=1e-6)
    same = VideoSSIM()
    same.update(target, target)
    assert same.compute().item() == pytest.approx(1.0, abs=1e-6)


def test_video_metrics_reject_images():
    with pytest.raises(InputError, match=r"\[B, C, T, H, W\]"):
        VideoPSNR().update(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
