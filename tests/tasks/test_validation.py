"""Bad input to a task is a ValueError that says what was expected."""

import pytest
import torch

from magvit.registry import get_task

ALL = ["fp", "fi", "opc", "oph", "opv", "opd", "ipc", "ipd", "cg", "cfp"]


@pytest.mark.parametrize("name", ALL)
def test_wrong_rank(name):
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        get_task(name).condition(torch.rand(3, 16, 64, 64))


@pytest.mark.parametrize("name", ALL)
def test_wrong_channels(name):
    with pytest.raises(ValueError, match="with 16 channels in dim 1"):
        get_task(name).condition(torch.rand(1, 16, 3, 64, 64))


@pytest.mark.parametrize("name", ALL)
def test_integer_video(name):
    with pytest.raises(ValueError, match="float"):
        get_task(name).condition(torch.zeros(1, 3, 16, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize("name", ALL)
def test_out_of_range(name):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        get_task(name).condition(torch.rand(1, 3, 16, 64, 64) * 255)


@pytest.mark.parametrize(
    "name,kwargs,shape",
    [
        ("fp", {"cond_frames": 5}, (1, 3, 5, 64, 64)),
        ("cfp", {}, (1, 3, 1, 64, 64)),
        ("fi", {"cond_frames": 2}, (1, 3, 4, 64, 64)),
        ("opc", {}, (1, 3, 16, 2, 64)),
        ("ipc", {}, (1, 3, 16, 64, 3)),
        ("opd", {}, (1, 3, 1, 64, 64)),
    ],
)
def test_too_small(name, kwargs, shape):
    with pytest.raises(ValueError, match="too small"):
        get_task(name, **kwargs).condition(torch.rand(shape))


def test_bad_constructor_argument():
    with pytest.raises(ValueError, match="cond_frames"):
        get_task("fp", cond_frames=0)
