"""Shared pieces of the built-in tasks: input validation and the region helpers (as the authors'
``videogvt/train_lib/cond_utils.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from magvit.video import check_video as check_video_tensor


def check_video(video: Tensor, task: str, *, min_frames: int = 1, min_size: int = 1) -> None:
    """Raise :class:`~magvit.errors.InputError` unless ``video`` is float ``[B, 3, T, H, W]`` in [0, 1] (finite), with at
    least ``min_frames`` frames and ``min_size`` x ``min_size`` pixels: the input check of every task."""
    check_video_tensor(video, f"task {task!r}", min_frames=min_frames, min_size=min_size)


def central_span(size: int) -> tuple[int, int]:
    """The central half ``[size // 4, 3 * size // 4)`` of an axis (1/4 to 3/4, as ``cond_utils.py``)."""
    return size // 4, 3 * size // 4


def sliding_offsets(frames: int, width: int) -> Tensor:
    """Left edge ``s(t) = round(linspace(0, W/2, T))`` of the W/2-wide band that slides left to right.

    ``torch.round`` rounds half to even, like ``jnp.round`` in the authors' ``cond_utils.py``.
    At 64 px: ``[0,2,4,6,9,11,13,15,17,19,21,23,26,28,30,32]``.
    """
    return torch.linspace(0, width // 2, frames, dtype=torch.float64).round().long()


def sliding_band_mask(frames: int, height: int, width: int, rows: tuple[int, int] | None = None) -> Tensor:
    """Bool ``[T, H, W]``: True inside the band cols ``[s(t), s(t) + W/2)`` (and ``rows`` if given)."""
    s = sliding_offsets(frames, width)[:, None]  # [T, 1]
    cols = torch.arange(width)[None, :]  # [1, W]
    band = (cols >= s) & (cols < s + width // 2)  # [T, W]
    mask = band[:, None, :].expand(frames, height, width).clone()
    if rows is not None:
        r = torch.arange(height)
        mask &= ((r >= rows[0]) & (r < rows[1]))[None, :, None]
    return mask


def broadcast_mask(mask: Tensor, video: Tensor) -> Tensor:
    """A ``[T, H, W]`` bool mask as ``[B, 1, T, H, W]`` for ``video``."""
    b = video.shape[0]
    return mask.to(video.device)[None, None].expand(b, 1, *mask.shape).clone()


def edge_pad_box(video: Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
    """Keep the box ``rows x cols`` and replicate its border outward (``jnp.pad(mode='edge')``).

    Index clamping is exactly edge replication: every outside pixel takes the nearest box pixel,
    corners take the corner pixel.
    """
    _, _, _, h, w = video.shape
    ri = torch.arange(h, device=video.device).clamp(rows[0], rows[1] - 1)
    ci = torch.arange(w, device=video.device).clamp(cols[0], cols[1] - 1)
    return video.index_select(3, ri).index_select(4, ci)


def keep(video: Tensor, mask: Tensor) -> Tensor:
    """``video`` where ``mask`` ([B, 1, T, H, W]) is True, zeros elsewhere (the ``'constant'`` fill)."""
    return video * mask.to(video.dtype)
