"""Cutting fixed-length clips out of a decoded video.

A clip is ``frames`` frames taken every ``stride`` frames, so it spans ``(frames - 1) * stride + 1``
source frames. Where clips start is deterministic (no randomness at ingestion time; training-time
randomness comes from shuffling shards and samples):

* ``clips_per_video=None``: every non-overlapping clip, starting at frame 0 (nothing is wasted);
* ``clips_per_video=1``: the middle clip;
* ``clips_per_video=k > 1``: ``k`` starts evenly spaced from the first to the last possible start.
  A video too short for ``k`` distinct clips yields fewer (duplicates are dropped, not repeated).
"""

from __future__ import annotations

import numpy as np

from magvit.errors import InputError

__all__ = ["clip_span", "clip_starts", "cut_clip"]


def clip_span(frames: int, stride: int) -> int:
    """Number of source frames one clip covers."""
    if frames < 1 or stride < 1:
        raise InputError(f"frames and stride must be >= 1, got frames={frames}, stride={stride}")
    return (frames - 1) * stride + 1


def clip_starts(num_frames: int, *, frames: int, stride: int = 1, clips_per_video: int | None = None) -> list[int]:
    """Start frames of the clips cut from a ``num_frames``-frame video (empty if it is too short)."""
    span = clip_span(frames, stride)
    if clips_per_video is not None and clips_per_video < 1:
        raise InputError(f"clips_per_video must be >= 1 or None (all non-overlapping clips), got {clips_per_video}")
    if num_frames < span:
        return []
    last = num_frames - span
    if clips_per_video is None:
        return list(range(0, last + 1, span))
    if clips_per_video == 1:
        return [last // 2]
    k = clips_per_video
    return sorted({i * last // (k - 1) for i in range(k)})


def cut_clip(video: np.ndarray, start: int, *, frames: int, stride: int = 1) -> np.ndarray:
    """The clip ``video[start : start + span : stride]`` (a view; ``video`` is ``[T, H, W, C]``)."""
    span = clip_span(frames, stride)
    if start < 0 or start + span > len(video):
        raise InputError(f"a clip of span {span} at frame {start} does not fit a {len(video)}-frame video")
    return video[start : start + span : stride]
