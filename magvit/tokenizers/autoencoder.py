"""The convolutional encoder and decoder of the VQ tokenizers (MAGVIT paper Sec. 3.1; the authors'
``videogvt/models/enc_dec_3dcnn.py``).

One implementation serves the 3D-VQ (``spatial_dims=3``, Conv3d, pooling in T where
``temporal_downsample`` says so) and the per-frame 2D-VQ baseline (``spatial_dims=2``). Both build the
same module tree, so their parameter names match and a 2D checkpoint inflates into a 3D model.

Encoder (``enc_dec_3dcnn.Encoder``)::

    conv3 (no bias) -> per level i: num_res_blocks x ResBlock(filters*mults[i]), then (not at the last
    level) avg-pool 2 in H, W and in T iff temporal_downsample[i] -> num_res_blocks x ResBlock
    -> GN -> swish -> conv1 (bias) to embedding_dim

Decoder (``enc_dec_3dcnn.Decoder``, ``upsample='nearest+conv'``) mirrors it::

    conv3 (bias) to filters*mults[-1] -> num_res_blocks x ResBlock -> per level i from the last:
    num_res_blocks x ResBlock(filters*mults[i]), then (i > 0) nearest-upsample x2 in H, W and in T iff
    temporal_downsample[i-1] -> conv3 (bias) -> GN -> swish -> conv3 (bias) to 3 channels

``activation_checkpointing``: in training mode each encoder and decoder level runs under non-reentrant
``torch.utils.checkpoint`` (its activations recomputed in the backward pass, values and gradients unchanged);
never in eval mode nor on the lean inference route (:mod:`magvit.kernels.conv`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from magvit.kernels import LeanRoute
from magvit.kernels.conv import SLAB_FRAMES, conv_in_slabs, norm_swish_padded, upsample_nearest_into
from magvit.tokenizers.layers import Conv, ResBlock, avg_pool_same, group_norm, upsample_nearest


def resample_factors(spatial_dims: int, temporal: bool) -> tuple[int, ...]:
    """Pool / upsample factors of one level: ``(2, 2, 2)`` or ``(1, 2, 2)`` in 3D, ``(2, 2)`` in 2D."""
    if spatial_dims == 2:
        return (2, 2)
    return (2 if temporal else 1, 2, 2)


def _blocks(
    in_ch: int, out_ch: int, count: int, *, spatial_dims: int, norm_groups: int, padding: str
) -> nn.ModuleList:
    """``count`` residual blocks; the first one changes the width from ``in_ch`` to ``out_ch``."""
    return nn.ModuleList(
        ResBlock(in_ch if j == 0 else out_ch, out_ch, spatial_dims=spatial_dims, norm_groups=norm_groups, padding=padding)
        for j in range(count)
    )


class EncoderLevel(nn.Module):
    """One resolution level of the encoder: residual blocks, then optionally an average pool."""

    def __init__(self, blocks: nn.ModuleList, pool: tuple[int, ...] | None) -> None:
        super().__init__()
        self.blocks = blocks
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.pool is None else avg_pool_same(x, self.pool)


class Encoder(LeanRoute, nn.Module):
    """Video (or frame) -> continuous latents ``[N, embedding_dim, *grid]`` (``enc_dec_3dcnn.Encoder``).

    A :class:`~magvit.kernels.LeanRoute` only so that its levels are never checkpointed on the lean route.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        filters: int,
        channel_multipliers: Sequence[int],
        temporal_downsample: Sequence[bool],
        num_res_blocks: int,
        embedding_dim: int,
        norm_groups: int,
        padding: str,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        kw = dict(spatial_dims=spatial_dims, norm_groups=norm_groups, padding=padding)
        self.activation_checkpointing = activation_checkpointing
        self.conv_in = Conv(3, filters, 3, spatial_dims=spatial_dims, bias=False, padding=padding)
        levels = []
        width = filters
        for i, mult in enumerate(channel_multipliers):
            out = filters * mult
            last = i == len(channel_multipliers) - 1
            pool = None if last else resample_factors(spatial_dims, temporal_downsample[i])
            levels.append(EncoderLevel(_blocks(width, out, num_res_blocks, **kw), pool))
            width = out
        self.levels = nn.ModuleList(levels)
        self.mid = _blocks(width, width, num_res_blocks, **kw)
        self.norm_out = group_norm(width, norm_groups)
        self.conv_out = Conv(width, embedding_dim, 1, spatial_dims=spatial_dims, bias=True, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        recompute = self.activation_checkpointing and self.training and not self.lean
        for level in self.levels:
            x = checkpoint(level, x, use_reentrant=False) if recompute else level(x)
        for block in self.mid:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class DecoderLevel(LeanRoute, nn.Module):
    """One resolution level of the decoder: residual blocks, then optionally upsample + conv (on the lean
    route, :mod:`magvit.kernels.conv`: upsampled into the conv's padded buffer, a temporal slab at a time)."""

    def __init__(self, blocks: nn.ModuleList, upsample: tuple[int, ...] | None, upsample_conv: Conv | None) -> None:
        super().__init__()
        self.blocks = blocks
        self.upsample = upsample
        self.upsample_conv = upsample_conv

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.resample(x)

    def resample(self, x: Tensor) -> Tensor:
        """The upsample + conv at the end of the level (identity on the full-resolution level)."""
        if self.upsample is None or self.upsample_conv is None:
            return x
        if not self.lean:
            return self.upsample_conv(upsample_nearest(x, self.upsample))
        # Upsample straight into the conv's padded buffer, a temporal slab at a time for clips: the upsampled
        # clip is the largest tensor of a decode.
        size = [s * f for s, f in zip(x.shape[2:], self.upsample)]
        if x.dim() == 5 and size[0] > SLAB_FRAMES:
            ft, spatial = self.upsample[0], self.upsample[1:]
            return conv_in_slabs(self.upsample_conv, lambda t, dst: upsample_nearest_into(x[:, :, t // ft], spatial, dst),
                                 x, size, x.shape[1])
        buf, inner = self.upsample_conv.empty_padded(x, size, x.shape[1])
        upsample_nearest_into(x, self.upsample, inner)
        del inner, x
        return self.upsample_conv(buf, prepadded=True)


class Decoder(LeanRoute, nn.Module):
    """Quantized latents ``[N, embedding_dim, *grid]`` -> video (or frame) ``[N, 3, ...]`` (``enc_dec_3dcnn.Decoder``).

    The output is not clipped; the tokenizer clips to [0, 1] in ``decode`` only, so training losses see
    the raw reconstruction. On the lean route the last GroupNorm + swish writes into ``conv_out``'s buffer.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        filters: int,
        channel_multipliers: Sequence[int],
        temporal_downsample: Sequence[bool],
        num_res_blocks: int,
        embedding_dim: int,
        norm_groups: int,
        padding: str,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        kw = dict(spatial_dims=spatial_dims, norm_groups=norm_groups, padding=padding)
        self.activation_checkpointing = activation_checkpointing
        width = filters * channel_multipliers[-1]
        self.conv_in = Conv(embedding_dim, width, 3, spatial_dims=spatial_dims, bias=True, padding=padding)
        self.mid = _blocks(width, width, num_res_blocks, **kw)
        levels: dict[str, DecoderLevel] = {}
        for i in reversed(range(len(channel_multipliers))):
            out = filters * channel_multipliers[i]
            blocks = _blocks(width, out, num_res_blocks, **kw)
            if i > 0:
                up = resample_factors(spatial_dims, temporal_downsample[i - 1])
                conv = Conv(out, out, 3, spatial_dims=spatial_dims, bias=True, padding=padding)
                levels[str(i)] = DecoderLevel(blocks, up, conv)
            else:
                levels[str(i)] = DecoderLevel(blocks, None, None)
            width = out
        # Keyed by level index so names read like the encoder's (levels.0 is the full-resolution level).
        self.levels = nn.ModuleDict(levels)
        self.norm_out = group_norm(width, norm_groups)
        self.conv_out = Conv(width, 3, 3, spatial_dims=spatial_dims, bias=True, padding=padding)

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_in(z)
        for block in self.mid:
            x = block(x)
        recompute = self.activation_checkpointing and self.training and not self.lean
        for i in reversed(range(len(self.levels))):
            level = self.levels[str(i)]
            if recompute:  # the checkpoint keeps the level's input for the recomputation anyway
                x = checkpoint(level, x, use_reentrant=False)
                continue
            # The level's blocks one by one from here rather than ``level(x)``: inside that call this
            # frame's ``x`` would keep the level's input (128 MB at B's full resolution) alive through all
            # of its blocks. Hooks on blocks and convs fire as usual; the DecoderLevel is not called.
            for block in level.blocks:
                x = block(x)
            x = level.resample(x)
        if not self.lean:
            return self.conv_out(F.silu(self.norm_out(x)))
        buf = norm_swish_padded(self.norm_out, self.conv_out, x)
        del x
        return self.conv_out(buf, prepadded=True)
