"""The one video check: every rejection with its exact message, and what it lets through."""

import re

import pytest
import torch

from magvit.errors import InputError
from magvit.video import check_video

UNIT = "clip: expected a float video [B, 3, T, H, W] with values in [0, 1], got"


def rejects(video, message: str, **kwargs) -> None:
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        check_video(video, "clip", **kwargs)


def test_accepts_a_unit_video_and_its_bounds():
    video = torch.rand(2, 3, 4, 8, 8)
    video[0, 0, 0, 0, :2] = torch.tensor([0.0, 1.0])
    check_video(video, "clip")
    check_video(video.half(), "clip")
    check_video(video.double().requires_grad_(True), "clip")


def test_rejects_what_is_not_a_tensor():
    rejects([[0.5]], f"{UNIT} a list, not a torch.Tensor")


def test_rejects_the_wrong_number_of_dims():
    rejects(torch.rand(3, 4, 8, 8), f"{UNIT} shape (3, 4, 8, 8) (4 dims)")


def test_rejects_the_wrong_channel_count():
    rejects(torch.rand(1, 4, 3, 8, 8), f"{UNIT} shape (1, 4, 3, 8, 8) with 4 channels in dim 1")


def test_any_channel_count_when_channels_is_none():
    check_video(torch.rand(1, 1, 2, 4, 4), "clip", channels=None)
    with pytest.raises(InputError, match=re.escape("clip: expected a float video [B, C, T, H, W] with values in")):
        check_video(torch.rand(1, 4, 4), "clip", channels=None)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_rejects_non_float_dtypes(dtype):
    rejects(torch.zeros(1, 3, 2, 4, 4, dtype=dtype),
            f"{UNIT} dtype {dtype}; convert uint8 frames with video.float() / 255")


def test_the_uint8_hint_follows_the_range():
    with pytest.raises(InputError, match=re.escape("convert uint8 frames with video.float() / 127.5 - 1")):
        check_video(torch.zeros(1, 3, 2, 4, 4, dtype=torch.uint8), "I3D", value_range=(-1.0, 1.0))


def test_rejects_nan_and_counts_non_finite_values():
    video = torch.rand(1, 3, 2, 4, 4)
    video[0, 1, 0, 2, 3] = float("nan")
    video[0, 2, 1, 0, 0] = float("-inf")
    rejects(video, f"{UNIT} 2 NaN or infinite values of 96")


def test_rejects_inf_even_when_the_rest_is_in_range():
    video = torch.full((1, 3, 1, 2, 2), 0.5)
    video[0, 0, 0, 0, 0] = float("inf")
    rejects(video, f"{UNIT} 1 NaN or infinite values of 12")


@pytest.mark.parametrize(("low", "high"), [(-0.5, 0.5), (0.0, 1.5), (0.0, 255.0)])
def test_rejects_values_out_of_range(low, high):
    video = torch.full((1, 3, 1, 2, 2), 0.5)
    video[0, 0, 0, 0, 0], video[0, 2, 0, 1, 1] = low, high
    rejects(video, f"{UNIT} values in [{low:g}, {high:g}]; rescale, or clamp with video.clamp(0, 1)")


def test_tolerance_widens_the_range_on_both_sides():
    video = torch.full((1, 3, 1, 2, 2), 0.5)
    video[0, 0, 0, 0, 0], video[0, 1, 0, 0, 0] = -0.0005, 1.0005
    check_video(video, "clip", tolerance=1e-3)
    rejects(video, f"{UNIT} values in [-0.0005, 1.0005]; rescale, or clamp with video.clamp(0, 1)")


def test_another_value_range():
    video = torch.full((1, 3, 1, 2, 2), -1.0)
    check_video(video, "I3D", value_range=(-1.0, 1.0))
    with pytest.raises(InputError, match=re.escape(
            "I3D: expected a float video [B, 3, T, H, W] with values in [-1, 1], got values in [-1, 2]; "
            "rescale, or clamp with video.clamp(-1, 1)")):
        check_video(video.index_fill(4, torch.tensor([1]), 2.0), "I3D", value_range=(-1.0, 1.0))


def test_size_minima():
    check_video(torch.rand(1, 3, 2, 4, 4), "clip", min_batch=1, min_frames=2, min_size=4)
    rejects(torch.rand(1, 3, 1, 4, 4), f"{UNIT} shape (1, 3, 1, 4, 4), which is too small: needs at least "
            "2 frames and 4x4 pixels", min_frames=2, min_size=4)
    rejects(torch.rand(1, 3, 2, 4, 3), f"{UNIT} shape (1, 3, 2, 4, 3), which is too small: needs at least "
            "4x4 pixels", min_size=4)
    rejects(torch.rand(0, 3, 2, 4, 4), f"{UNIT} shape (0, 3, 2, 4, 4), which is too small: needs at least "
            "1 video", min_batch=1)


def test_an_empty_video_passes_without_minima():
    check_video(torch.rand(0, 3, 2, 4, 4), "clip")
