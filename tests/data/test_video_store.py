"""Stored video segments (magvit.data.video_store): splitting, the H.264 round trip, cutting a clip at a start,
and the per-epoch start draw."""

import os
import subprocess
import sys

import numpy as np
import pytest

from magvit.data.shard_format import VideoStore
from magvit.data.synthetic import synthetic_clips
from magvit.data.video_store import clip_start, encode_segment, read_clip, segment_bounds
from magvit.errors import InputError

STORE = VideoStore(max_segment_frames=300)
#: Mean absolute error of the H.264 (crf 18, yuv420p) round trip on 64x64 synthetic shapes, in 1/255:
#: measured 2.14 on average and 2.33 at worst over these clips (most of it is the 4:2:0 chroma subsampling).
TOLERANCE = 2.5


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    clips, _ = synthetic_clips(3, frames=40, size=64, num_classes=3, seed=3)
    return clips


@pytest.fixture(scope="module")
def encoded(source: np.ndarray) -> list[bytes]:
    return [encode_segment(clip, STORE) for clip in source]


@pytest.mark.parametrize(
    ("num_frames", "span", "cap", "bounds"),
    [
        (10, 16, 300, []),  # shorter than a clip
        (16, 16, 300, [(0, 16)]),
        (300, 16, 300, [(0, 300)]),
        (301, 16, 300, [(0, 150), (150, 301)]),
        (700, 16, 300, [(0, 233), (233, 466), (466, 700)]),
        (17, 16, 16, [(0, 17)]),  # two segments would each be shorter than a clip
        (50, 16, 20, [(0, 16), (16, 33), (33, 50)]),  # near-equal, at most 20 frames each
        (40, 16, 20, [(0, 20), (20, 40)]),
    ],
)
def test_segment_bounds(num_frames: int, span: int, cap: int, bounds: list[tuple[int, int]]) -> None:
    assert segment_bounds(num_frames, span, cap) == bounds


def test_segment_bounds_refuses_a_cap_below_one_clip() -> None:
    with pytest.raises(InputError, match="max_segment_frames must be at least one clip"):
        segment_bounds(100, 16, 15)


@pytest.mark.parametrize("start", [0, 5, 24])
def test_round_trip_is_close_to_the_source(source: np.ndarray, encoded: list[bytes], start: int) -> None:
    for clip, data in zip(source, encoded, strict=True):
        got = read_clip(data, frames=16, stride=1, start_of=lambda n, s=start: s)
        assert got.shape == (16, 64, 64, 3) and got.dtype == np.uint8
        want = clip[start : start + 16]
        assert np.abs(got.astype(np.float64) - want).mean() < TOLERANCE
        # the frames are the right ones: each is closer to its own source frame than to any other
        for i, frame in enumerate(got):
            errors = [np.abs(frame.astype(np.float64) - other).mean() for other in clip]
            assert int(np.argmin(errors)) == start + i


def test_a_strided_clip_takes_every_stride_th_frame(source: np.ndarray, encoded: list[bytes]) -> None:
    got = read_clip(encoded[0], frames=8, stride=3, start_of=lambda n: 4)
    for i, frame in enumerate(got):
        errors = [np.abs(frame.astype(np.float64) - other).mean() for other in source[0]]
        assert int(np.argmin(errors)) == 4 + 3 * i


def test_the_start_is_chosen_among_the_starts_that_fit(encoded: list[bytes]) -> None:
    seen: list[int] = []
    read_clip(encoded[0], frames=16, stride=2, start_of=lambda n: seen.append(n) or 0)
    assert seen == [40 - 31 + 1]


def test_a_video_shorter_than_a_clip_is_refused(encoded: list[bytes]) -> None:
    with pytest.raises(ValueError, match="the video has 40 frames, a clip needs 41"):
        read_clip(encoded[0], frames=21, stride=2, start_of=lambda n: 0)


def test_an_odd_size_cannot_be_encoded() -> None:
    with pytest.raises(InputError, match="even width and height"):
        encode_segment(np.zeros((4, 33, 32, 3), np.uint8), STORE)


def test_clip_start_is_a_function_of_seed_epoch_and_key() -> None:
    draws = [clip_start(0, epoch, "0000001-0000", 25) for epoch in range(20)]
    assert all(0 <= d < 25 for d in draws)
    assert draws == [clip_start(0, epoch, "0000001-0000", 25) for epoch in range(20)]
    assert len(set(draws)) > 5  # epochs give different starts
    assert draws != [clip_start(1, epoch, "0000001-0000", 25) for epoch in range(20)]
    assert draws != [clip_start(0, epoch, "0000002-0000", 25) for epoch in range(20)]
    assert clip_start(-3, 2**70, "k", 7) in range(7)  # any integer seed and epoch


def test_clip_start_does_not_depend_on_the_process() -> None:
    """The same in processes with different string hashing (DataLoader workers, a resumed run)."""
    code = "from magvit.data.video_store import clip_start; print([clip_start(5, e, 'a-b', 100) for e in range(8)])"
    outputs = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{[clip_start(5, e, 'a-b', 100) for e in range(8)]}\n"}
