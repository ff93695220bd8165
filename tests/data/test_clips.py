"""Where clips start and how they are cut."""

import numpy as np
import pytest

from magvit.data.clips import clip_span, clip_starts, cut_clip
from magvit.errors import InputError


def test_clip_span() -> None:
    assert clip_span(16, 1) == 16
    assert clip_span(16, 2) == 31


def test_all_non_overlapping_clips_by_default() -> None:
    assert clip_starts(40, frames=16) == [0, 16]
    assert clip_starts(48, frames=16) == [0, 16, 32]
    assert clip_starts(15, frames=16) == []


def test_evenly_spaced_and_middle_clips() -> None:
    assert clip_starts(40, frames=16, clips_per_video=1) == [12]
    assert clip_starts(40, frames=16, clips_per_video=3) == [0, 12, 24]
    # Only 2 distinct starts exist: duplicates are dropped, not repeated.
    assert clip_starts(17, frames=16, clips_per_video=4) == [0, 1]
    assert clip_starts(40, frames=8, stride=2, clips_per_video=2) == [0, 25]


def test_cut_clip_takes_strided_frames() -> None:
    video = np.arange(20)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    clip = cut_clip(video, 3, frames=4, stride=2)
    assert clip[:, 0, 0, 0].tolist() == [3, 5, 7, 9]
    with pytest.raises(InputError):
        cut_clip(video, 14, frames=4, stride=2)


def test_bad_settings() -> None:
    with pytest.raises(InputError):
        clip_starts(40, frames=0)
    with pytest.raises(InputError):
        clip_starts(40, frames=8, clips_per_video=0)
