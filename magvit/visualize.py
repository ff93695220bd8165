"""Video grids for samples, the demo and ``magvit data inspect``.

A grid puts several videos of the same shape side by side (e.g. condition | generation | ground truth),
one row per batch element, with a 2-pixel white gutter, and writes it as an animated gif or an mp4.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from magvit.data.video_io import write_video

GUTTER = 2


def video_grid(columns: Sequence[Tensor], gutter: int = GUTTER) -> Tensor:
    """uint8 ``[T, H', W', 3]`` grid of videos ``[B, 3, T, H, W]`` in [0, 1]: columns side by side, rows = batch."""
    if not columns:
        raise ValueError("video_grid needs at least one video")
    shape = columns[0].shape
    for c in columns:
        if c.shape != shape or c.dim() != 5:
            raise ValueError(f"all grid videos must share one [B, 3, T, H, W] shape, got {[tuple(x.shape) for x in columns]}")
    b, _, t, h, w = shape
    grid = torch.ones(3, t, b * (h + gutter) - gutter, len(columns) * (w + gutter) - gutter)
    for j, video in enumerate(columns):
        for i in range(b):
            y, x = i * (h + gutter), j * (w + gutter)
            grid[:, :, y : y + h, x : x + w] = video[i].detach().float().cpu().clamp(0, 1)
    return (grid.permute(1, 2, 3, 0) * 255).round().to(torch.uint8)


def save_video_grid(columns: Sequence[Tensor], path: str | Path, fps: int = 8, scale: int = 1) -> Path:
    """Write :func:`video_grid` to ``path`` (``.gif`` or ``.mp4``), atomically; ``scale`` enlarges pixels."""
    frames = video_grid(columns)
    if scale > 1:
        frames = frames.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return write_video(path, frames.numpy(), fps=fps)
