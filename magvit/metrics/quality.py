"""Per-pixel video quality: PSNR and SSIM (torchmetrics) for videos, and PSNR inside a region mask.

MAGVIT's standalone BAIR evaluation reports SSIM and PSNR next to FVD (the authors'
``videogvt/train_lib/eval_utils.py``). Videos are ``[B, C, T, H, W]`` in [0, 1] (data range 1); frames
are folded into the batch so torchmetrics' image metrics apply unchanged. :class:`MaskedPSNR` scores only
the pixels of a bool region mask ``[B, 1, T, H, W]`` (a task's condition mask or its complement,
:class:`~magvit.protocols.Condition`) so the generated region and the condition region can be scored
separately.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from magvit.errors import InputError
from magvit.video import check_video

DATA_RANGE = 1.0


def check_video_pair(preds: Tensor, target: Tensor) -> None:
    """Two float videos of the same shape ``[B, C, T, H, W]`` (any channel count) with values in [0, 1]."""
    check_video(preds, "preds", channels=None)
    check_video(target, "target", channels=None)
    if preds.shape != target.shape:
        raise InputError(f"preds and target must have the same shape; got {tuple(preds.shape)} and "
                         f"{tuple(target.shape)}")


def fold_frames(video: Tensor) -> Tensor:
    """``[B, C, T, H, W]`` -> ``[B*T, C, H, W]`` (each frame an image)."""
    b, c, t, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


class VideoPSNR(PeakSignalNoiseRatio):
    """torchmetrics PSNR over video frames, data range 1.

    By default the squared error is pooled over every pixel of every frame (one PSNR of the total MSE,
    equal to :class:`MaskedPSNR` with an all-True mask); pass ``dim=(1, 2, 3)`` for the mean of per-frame
    PSNRs instead.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("data_range", DATA_RANGE)
        super().__init__(**kwargs)

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        check_video_pair(preds, target)
        super().update(fold_frames(preds), fold_frames(target))


class VideoSSIM(StructuralSimilarityIndexMeasure):
    """torchmetrics SSIM (Gaussian 11x11, sigma 1.5) averaged over video frames, data range 1."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("data_range", DATA_RANGE)
        super().__init__(**kwargs)

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        check_video_pair(preds, target)
        super().update(fold_frames(preds), fold_frames(target))


class MaskedPSNR(Metric):
    """PSNR of the pixels where ``mask`` is True: ``10 log10(1 / (SSE / count))``, data range 1.

    States are sums (squared error and counted values, float64, ``dist_reduce_fx="sum"``) so DDP
    reduction is exact. ``count`` counts values: a masked pixel of a C-channel video adds C. A perfect
    match inside the region gives ``inf``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sse", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor) -> None:  # type: ignore[override]
        """Add videos ``[B, C, T, H, W]`` in [0, 1] and a bool region ``[B, 1, T, H, W]``."""
        check_video_pair(preds, target)
        b, c, t, h, w = preds.shape
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (b, 1, t, h, w):
            got = (tuple(mask.shape), mask.dtype) if isinstance(mask, Tensor) else type(mask).__name__
            raise InputError(f"mask must be a bool tensor [B, 1, T, H, W] = {[b, 1, t, h, w]}; got {got}. "
                             "Use a task's Condition.mask for the condition region or ~mask for the rest.")
        err = (preds.to(torch.float64) - target.to(torch.float64)).square()
        self.sse = self.sse + err.masked_fill(~mask, 0).sum()
        self.count = self.count + mask.sum().to(torch.float64) * c

    def compute(self) -> Tensor:
        if self.count.item() == 0:
            raise InputError("MaskedPSNR saw no masked pixels: every mask was all False. Pass a region mask "
                             "with at least one True pixel (e.g. the complement of the condition mask).")
        mse = self.sse / self.count
        return 10 * torch.log10(DATA_RANGE**2 / mse)
