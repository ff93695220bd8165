"""Shared pieces of the built-in tasks: input validation and the region helpers (as the authors'
``videogvt/train_lib/cond_utils.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from magvit.errors import InputError


def check_video(video: Tensor, task: str, *, min_frames: int = 1, min_size: int = 1) -> None:
    """Raise :class:`InputError` unless ``video`` is float ``[B, 3, T, H, W]`` in [0, 1] (finite) and large enough."""
    if not isinstance(video, Tensor):
        raise InputError(f"task {task!r}: expected a torch.Tensor video [B, 3, T, H, W], got {type(video).__name__}")
    if video.dim() != 5:
        raise InputError(
            f"task {task!r}: expected a video of shape [B, 3, T, H, W] (5 dims), got {video.dim()} dims "
            f"{tuple(video.shape)}"
        )
    if video.shape[1] != 3:
        raise InputError(
            f"task {task!r}: expected 3 channels in dim 1 ([B, 3, T, H, W], channels first), got shape "
            f"{tuple(video.shape)}"
        )
    if not video.is_floating_point():
        raise InputError(f"task {task!r}: expected a float video with values in [0, 1], got dtype {video.dtype}")
    if video.numel() and not bool(torch.isfinite(video).all()):
        bad = int((~torch.isfinite(video)).sum())
        raise InputError(f"task {task!r}: the video holds {bad} NaN or infinite values of {video.numel()}; "
                         "expected values in [0, 1]")
    if video.numel() and (video.min() < 0 or video.max() > 1):
        raise InputError(
            f"task {task!r}: expected values in [0, 1], got range [{video.min().item():.3g}, {video.max().item():.3g}]"
            " (convert uint8 with video.float() / 255)"
        )
    _, _, t, h, w = video.shape
    if t < min_frames or h < min_size or w < min_size:
        raise InputError(
            f"task {task!r}: the video {t}x{h}x{w} (T x H x W) is too small; this task needs at least "
            f"{min_frames} frames and {min_size}x{min_size} pixels"
        )


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
