"""Frames sampled from each clip: what the 2D-VQ baseline trains on (MAGVIT paper Table 7; the authors'
2D-VQ config trains on ``num_train_sampled_frames = 4`` frames per clip, ``videogvt/configs/vqgan2d_ucf101_config.py``).

Each clip of ``[B, C, T, H, W]`` gives ``k`` distinct frames drawn uniformly without replacement, kept in
their temporal order, drawn from an explicit generator (the trainer's step generator, so that a resumed run
draws the same frames).
"""

from __future__ import annotations

import torch
from torch import Tensor

from magvit.errors import InputError


def frame_indices(batch: int, frames: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``[batch, k]`` long indices of ``k`` distinct frames of ``frames`` per clip, increasing along each row."""
    if not 1 <= k <= frames:
        raise InputError(f"cannot sample {k} distinct frames per clip from clips of {frames} frames; "
                         f"expected 1 <= k <= {frames}")
    order = torch.rand(batch, frames, generator=generator).argsort(dim=1)
    return order[:, :k].sort(dim=1).values


def sample_frames(video: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``k`` frames per clip of ``video`` ``[B, C, T, H, W]`` -> ``[B, C, k, H, W]`` (differentiable in ``video``).

    ``k == T`` returns ``video`` itself (every frame, no draw from ``generator``).
    """
    if video.dim() != 5:
        raise InputError(f"expected a video [B, C, T, H, W], got shape {tuple(video.shape)}")
    b, c, t, h, w = video.shape
    if k == t:
        return video
    index = frame_indices(b, t, k, generator).to(video.device)
    return video.gather(2, index[:, None, :, None, None].expand(b, c, k, h, w))
