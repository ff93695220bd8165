"""The StyleGAN-style video discriminator of the 3D-VQ's GAN loss (MAGVIT paper Sec. 3.1; the authors'
``videogvt/models/stylegan_discriminator_3d.py``).

::

    conv3 (filters) -> LReLU(0.2) -> ResBlock(filters*m) for m in multipliers
    -> conv3 (filters*mults[-1]) -> LReLU -> flatten -> Dense(filters*mults[-1]) -> LReLU -> Dense(1)

    ResBlock: conv3 (in) -> LReLU -> avg-pool 2 -> conv3 (out) -> LReLU;
              residual: avg-pool 2 -> conv1 (no bias);  output (x + residual) / sqrt(2)

No normalisation (``norm_type`` unset), xavier-uniform kernels, zero biases, zero ('SAME') padding.
Every block pools T as well, and a size-1 axis stays 1 (TF 'SAME' pooling): 16 frames go
16 -> 8 -> 4 -> 2 -> 1 -> 1 with the five blocks used at 128 px.

``spatial_dims=2`` gives the per-frame discriminator of the 2D-VQ (T folded into the batch, one logit
per frame). It has the 3D model's parameter names, and because T collapses to 1 in 3D the dense layers
have equal shapes, so the whole discriminator inflates (``inflate_2d_to_3d`` in the authors'
``videogvt/train_lib/vqgan_train_lib.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.config import register_to_config
from magvit.errors import InputError
from magvit.tokenizers import presets
from magvit.tokenizers.layers import Conv, avg_pool_same
from magvit.tokenizers.tokenizer import fold_time

LEAKY_SLOPE = 0.2


def _pooled(size: int) -> int:
    """Size of an axis after one TF-'SAME' pool by 2: ceil(size / 2), so 1 stays 1."""
    return (size + 1) // 2


class DiscriminatorBlock(nn.Module):
    """Downsampling residual block (``stylegan_discriminator_3d.py``)."""

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.conv1 = Conv(in_channels, in_channels, 3, spatial_dims=spatial_dims, bias=True, padding="zeros")
        self.conv2 = Conv(in_channels, out_channels, 3, spatial_dims=spatial_dims, bias=True, padding="zeros")
        self.shortcut = Conv(in_channels, out_channels, 1, spatial_dims=spatial_dims, bias=False, padding="zeros")

    def forward(self, x: Tensor) -> Tensor:
        factors = (2,) * self.spatial_dims
        h = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        h = F.leaky_relu(self.conv2(avg_pool_same(h, factors)), LEAKY_SLOPE)
        skip = self.shortcut(avg_pool_same(x, factors))
        return (h + skip) / math.sqrt(2)


class StyleGANDiscriminator(nn.Module):
    """Video discriminator: ``[B, 3, T, H, W]`` in [0, 1] -> logits ``[B]`` (``[B*T]`` when 2D).

    Args:
        filters: base width; the authors' configs set it to the tokenizer's ``filters`` (64 B, 128 L).
        channel_multipliers: one downsampling block per entry ((2,4,4,4,4) at 128 px, (2,4,4,4) at 64).
        input_shape: the ``(T, H, W)`` of the clips it judges (fixes the flatten size of the dense head).
        spatial_dims: 3 (the 3D-VQ's discriminator) or 2 (per frame, for the 2D-VQ).
        seed: seed of the xavier-uniform initialisation.

    ``config`` holds the arguments of the construction (:func:`magvit.config.register_to_config`).
    """

    @register_to_config
    def __init__(
        self,
        *,
        filters: int = 64,
        channel_multipliers: Sequence[int] = (2, 4, 4, 4, 4),
        input_shape: Sequence[int] = (16, 128, 128),
        spatial_dims: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise InputError(f"input_shape must be (T, H, W) with positive sizes, got {tuple(input_shape)}")
        self.spatial_dims = spatial_dims
        self.input_shape = tuple(int(s) for s in input_shape)
        self.conv_in = Conv(3, filters, 3, spatial_dims=spatial_dims, bias=True, padding="zeros")
        blocks = []
        width = filters
        grid = list(self.input_shape if spatial_dims == 3 else self.input_shape[1:])
        for mult in channel_multipliers:
            blocks.append(DiscriminatorBlock(width, filters * mult, spatial_dims))
            width = filters * mult
            grid = [_pooled(s) for s in grid]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = Conv(width, width, 3, spatial_dims=spatial_dims, bias=True, padding="zeros")
        self.dense = nn.Linear(width * math.prod(grid), width)
        self.logit = nn.Linear(width, 1)
        self.reset_parameters(torch.Generator().manual_seed(seed))

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """Xavier-uniform kernels and zero biases (as ``stylegan_discriminator_3d.py``)."""
        for m in self.modules():
            if isinstance(m, (Conv, nn.Linear)):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def shard_units(self) -> list[nn.Module]:
        """What fully sharded training shards on its own (:mod:`magvit.train.sharding`): each block."""
        return list(self.blocks)

    def forward(self, video: Tensor) -> Tensor:
        if video.dim() != 5 or tuple(video.shape[1:]) != (3, *self.input_shape):
            raise InputError(
                f"discriminator expects video [B, 3, {', '.join(map(str, self.input_shape))}], got {tuple(video.shape)}"
            )
        x = video if self.spatial_dims == 3 else fold_time(video)
        x = F.leaky_relu(self.conv_in(x), LEAKY_SLOPE)
        for block in self.blocks:
            x = block(x)
        x = F.leaky_relu(self.conv_out(x), LEAKY_SLOPE)
        # Flatten channels-last like the authors' [B, T, H, W, C] layout, so Flax dense kernels line up.
        x = x.movedim(1, -1).flatten(1)
        return self.logit(F.leaky_relu(self.dense(x), LEAKY_SLOPE)).squeeze(-1)


def build_discriminator(
    preset: str = "B", resolution: int = 128, frames: int = 16, spatial_dims: int = 3, **overrides: Any
) -> StyleGANDiscriminator:
    """The discriminator matching tokenizer ``preset`` at ``resolution`` for ``frames``-frame clips."""
    args: dict[str, Any] = dict(
        filters=presets.get_preset(preset).filters,
        channel_multipliers=presets.discriminator_multipliers(preset, resolution),
        input_shape=(frames, resolution, resolution),
        spatial_dims=spatial_dims,
    )
    args.update(overrides)
    return StyleGANDiscriminator(**args)
