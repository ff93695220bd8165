"""Video files <-> uint8 frames, and the float/uint8 layout conversions."""

from pathlib import Path

import numpy as np
import pytest
import torch

from magvit.data.video_io import VideoReadError, frames_to_video, read_video, video_to_frames, write_video
from magvit.errors import InputError


def gradient_frames(t: int = 10, h: int = 24, w: int = 32) -> np.ndarray:
    """Smooth moving colour ramps: codec-friendly, yet every frame and pixel differs."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [np.stack([xx * 6 + k * 4, yy * 8, (xx + yy) * 3 + k * 10], -1) for k in range(t)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def test_mkv_round_trip_is_exact(tmp_path: Path) -> None:
    frames = gradient_frames()
    path = write_video(tmp_path / "v.mkv", frames)
    np.testing.assert_array_equal(read_video(path), frames)


@pytest.mark.parametrize(("ext", "tolerance"), [(".mp4", 3.0), (".webm", 3.0), (".avi", 4.0), (".gif", 8.0)])
def test_lossy_round_trip_within_codec_tolerance(tmp_path: Path, ext: str, tolerance: float) -> None:
    frames = gradient_frames()
    out = read_video(write_video(tmp_path / f"v{ext}", frames))
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.abs(out.astype(float) - frames).mean() < tolerance


def test_read_resizes_short_side_and_centre_crops(tmp_path: Path) -> None:
    # Left third red, middle third green, right third blue; 24x48 -> short side 12 -> 12x24 -> crop 12x12.
    frames = np.zeros((3, 24, 48, 3), np.uint8)
    frames[:, :, :16, 0] = 255
    frames[:, :, 16:32, 1] = 255
    frames[:, :, 32:, 2] = 255
    out = read_video(write_video(tmp_path / "v.mkv", frames), size=12)
    assert out.shape == (3, 12, 12, 3)
    # The crop keeps columns [6, 18) of the 24-wide resize: red | green (cols 8..15) | blue edge.
    assert out[0, 6, 0, 0] > 200 and out[0, 6, 6, 1] > 200 and out[0, 6, 11, 2] > 200


def test_write_is_atomic_and_leaves_no_partial_file(tmp_path: Path) -> None:
    write_video(tmp_path / "ok.mp4", gradient_frames())
    with pytest.raises(InputError, match="even width and height"):
        write_video(tmp_path / "odd.mp4", gradient_frames(w=31))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.mp4"]


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 8, 3), np.uint8)]
)
def test_write_rejects_non_uint8_frames(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"uint8 frames \[T, H, W, 3\]"):
        write_video(tmp_path / "v.mkv", bad)


def test_write_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="extension '.xyz'"):
        write_video(tmp_path / "v.xyz", gradient_frames())


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoReadError, match="garbage.mp4"):
        read_video(garbage)


def test_layout_conversions_round_trip_exactly() -> None:
    frames = torch.arange(2 * 4 * 5 * 6 * 3, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 4, 5, 6, 3)
    video = frames_to_video(frames)
    assert video.shape == (2, 3, 4, 5, 6) and video.dtype == torch.float32 and video.is_contiguous()
    assert video[1, 2, 3, 4, 5] == frames[1, 3, 4, 5, 2].item() / 255
    torch.testing.assert_close(video_to_frames(video), frames, rtol=0, atol=0)
    assert video_to_frames(torch.tensor([-0.5, 0.5, 2.0]).view(3, 1, 1, 1)).flatten().tolist() == [0, 128, 255]
