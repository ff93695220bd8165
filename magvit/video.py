"""The one check of a video tensor: float ``[B, C, T, H, W]`` (channels first, the Conv3d layout).

Tasks, tokenizers and metrics all validate their input video here, so every caller reports a bad video
in the same words: ``"<what>: expected a float video [B, 3, T, H, W] with values in [lo, hi], got ..."``.
The layout checks read only the shape and dtype; the value checks (finite, in range) are reduced on the
video's device and fetched together, so a valid video costs one device-to-host transfer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from magvit.errors import InputError


def check_video(
    video: Tensor,
    what: str,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    tolerance: float = 0.0,
    channels: int | None = 3,
    min_batch: int = 0,
    min_frames: int = 0,
    min_size: int = 0,
) -> None:
    """Raise :class:`InputError` unless ``video`` is a float ``[B, channels, T, H, W]`` tensor, finite, with
    values in ``value_range`` (widened by ``tolerance`` on both sides), at least ``min_batch`` videos of at
    least ``min_frames`` frames and ``min_size`` x ``min_size`` pixels.

    ``what`` names the caller in the message (``"task 'fp'"``, ``"I3D"``); ``channels=None`` accepts any
    channel count.
    """
    lo, hi = value_range
    layout = f"[B, {'C' if channels is None else channels}, T, H, W]"
    expected = f"{what}: expected a float video {layout} with values in [{lo:g}, {hi:g}]"
    if not isinstance(video, Tensor):
        raise InputError(f"{expected}, got a {type(video).__name__}, not a torch.Tensor")
    shape = tuple(video.shape)
    if video.dim() != 5:
        raise InputError(f"{expected}, got shape {shape} ({video.dim()} dims)")
    if channels is not None and shape[1] != channels:
        raise InputError(f"{expected}, got shape {shape} with {shape[1]} channels in dim 1")
    if not video.is_floating_point():
        raise InputError(f"{expected}, got dtype {video.dtype}; convert uint8 frames with "
                         f"{_from_uint8(lo, hi)}")
    b, _, t, h, w = shape
    if b < min_batch or t < min_frames or h < min_size or w < min_size:
        raise InputError(f"{expected}, got shape {shape}, which is too small: needs at least "
                         f"{_minima(min_batch, min_frames, min_size)}")
    if video.numel() == 0:
        return
    values = video.detach()
    low, high = torch.aminmax(values)
    nonfinite = (~torch.isfinite(values)).sum()
    # The range decision is taken on the device in the video's dtype; the float32 copies of the
    # extremes are only for the message (float32 also exists on every backend).
    outside = (low < lo - tolerance) | (high > hi + tolerance)
    count, out, low_, high_ = torch.stack([nonfinite.float(), outside.float(), low.float(), high.float()]).tolist()
    if count:
        raise InputError(f"{expected}, got {int(count)} NaN or infinite values of {video.numel()}")
    if out:
        raise InputError(f"{expected}, got values in [{low_:.6g}, {high_:.6g}]; rescale, or clamp with "
                         f"video.clamp({lo:g}, {hi:g})")


def _from_uint8(lo: float, hi: float) -> str:
    """The expression mapping uint8 frames [0, 255] onto ``[lo, hi]``, e.g. ``video.float() / 127.5 - 1``."""
    offset = "" if lo == 0 else f" + {lo:g}" if lo > 0 else f" - {-lo:g}"
    return f"video.float() / {255 / (hi - lo):g}{offset}"


def _minima(batch: int, frames: int, size: int) -> str:
    parts = []
    if batch > 0:
        parts.append(f"{batch} video{'s' if batch > 1 else ''}")
    if frames > 0:
        parts.append(f"{frames} frame{'s' if frames > 1 else ''}")
    if size > 0:
        parts.append(f"{size}x{size} pixels")
    return " and ".join(parts)
