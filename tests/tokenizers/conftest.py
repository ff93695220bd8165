"""Shared fixtures of the tokenizer tests: small deterministic synthetic clips."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor


def moving_boxes(num: int, frames: int, size: int, seed: int = 0) -> Tensor:
    """``num`` clips ``[num, 3, frames, size, size]`` in [0, 1]: a coloured box moving over a gradient."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames).float()[:, None, None]
    y = torch.arange(size).float()[None, :, None]
    x = torch.arange(size).float()[None, None, :]
    clips = []
    for _ in range(num):
        colour = torch.rand(3, generator=g)
        background = torch.rand(3, generator=g) * 0.5
        x0 = torch.randint(0, size // 2, (1,), generator=g).item()
        y0 = torch.randint(size // 4, size // 2, (1,), generator=g).item()
        box = (((x - x0 - t) % size).abs() < size / 5) & ((y - y0 - 0.5 * t).abs() < size / 5)
        ramp = (y + x) / (2 * size)
        clip = background[:, None, None, None] * ramp[None] + box[None].float() * colour[:, None, None, None]
        clips.append(clip.clamp(0, 1))
    return torch.stack(clips)


@pytest.fixture
def make_clips():
    """Factory fixture: ``make_clips(num, frames, size, seed=0)`` -> :func:`moving_boxes`."""
    return moving_boxes
