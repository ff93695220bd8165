"""A PNG grid of clips: one row per clip, one column per (evenly spaced) frame.

Used by ``magvit data inspect`` (a look at a dataset) and the demo pages (real vs generated clips).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from magvit.data.atomic import atomic_path
from magvit.errors import InputError

__all__ = ["clip_grid", "save_clip_grid"]


def clip_grid(video: Tensor, *, num_frames: int | None = None, padding: int = 1) -> Tensor:
    """Float ``[B, 3, T, H, W]`` in [0, 1] -> one image ``[3, H', W']``: row ``b`` shows clip ``b``.

    Args:
        video: the clips.
        num_frames: columns; frames are picked evenly from first to last (``None``: all ``T`` frames).
        padding: pixels between cells.
    """
    if video.dim() != 5 or video.shape[1] != 3 or not video.is_floating_point():
        raise InputError(f"clip_grid expects float video [B, 3, T, H, W], got {video.dtype} {tuple(video.shape)}")
    b, _, t, h, w = video.shape
    cols = t if num_frames is None else max(1, min(num_frames, t))
    index = torch.linspace(0, t - 1, cols).round().long()
    frames = video.detach().cpu().float()[:, :, index].permute(0, 2, 1, 3, 4).reshape(b * cols, 3, h, w)
    return make_grid(frames.clamp(0, 1), nrow=cols, padding=padding, pad_value=1.0)


def save_clip_grid(
    video: Tensor, path: str | os.PathLike[str], *, num_frames: int | None = None, padding: int = 1
) -> Path:
    """Write :func:`clip_grid` of ``video`` to ``path`` (PNG) atomically and return the path."""
    image = clip_grid(video, num_frames=num_frames, padding=padding)
    with atomic_path(path) as tmp:
        save_image(image, tmp, format="png")
    return Path(path)
