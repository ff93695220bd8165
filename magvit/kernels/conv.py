"""The lean inference route of the tokenizer's convolutions: pre-padded channels-last buffers, temporal slabs.

The encoder and decoder of the VQ tokenizers (the authors' ``videogvt/models/enc_dec_3dcnn.py``) are stacks
of ``GroupNorm -> swish -> same-padded conv``. Run as written, each conv's input exists three times at a
block's peak: the norm's output, the swish output and the ``F.pad`` copy, plus oneDNN's channels-first
reorders. Without autograd nothing has to be kept for a backward pass, and the route here uses that:

* each 3x3x3 convolution reads a channels-last buffer that already holds its padding; the op before it
  (GroupNorm + swish, or the nearest upsample) writes straight into the buffer's interior
  (:func:`padded_buffer`, :func:`group_norm_swish_into`, :func:`upsample_nearest_into`) and only the border
  is filled in place (:func:`fill_border_`);
* clips longer than :data:`SLAB_FRAMES` go through a conv in temporal slabs (:func:`conv_in_slabs`), so that
  its padded input never exists whole;
* a 1x1 convolution is one matmul in either memory layout (:func:`pointwise_conv`), and the residual
  shortcut accumulates into the block's output (:func:`pointwise_conv_add_`).

The values are the training route's up to float summation order (``tests/kernels/test_conv.py``); the
memory saved is measured in benchmarks/README.md. The tokenizer blocks take this route only inside
:func:`magvit.kernels.lean_route`; :func:`pointwise_conv` serves both routes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}

#: Output frames per temporal slab in :func:`conv_in_slabs`. With a 3-tap temporal kernel a slab's buffer
#: holds 4 + 2 frames: 6/16 of a 16-frame clip's full padded input.
SLAB_FRAMES = 4


class PaddedConv(Protocol):
    """What the lean route needs of a same-padded convolution (``magvit.tokenizers.layers.Conv``)."""

    padding: str
    spatial_dims: int

    @property
    def kernel(self) -> tuple[int, ...]: ...

    def empty_padded(self, like: Tensor, size: Sequence[int], channels: int) -> tuple[Tensor, Tensor]: ...

    def __call__(self, x: Tensor, prepadded: bool = False, border_axes: Sequence[int] | None = None) -> Tensor: ...


def axis_pads(kernel: Sequence[int]) -> list[tuple[int, int]]:
    """``(before, after)`` padding of each axis, in axis order: ``((k-1)//2, k//2)`` (as ``model_utils.Conv``)."""
    return [((k - 1) // 2, k // 2) for k in kernel]


def padded_buffer(like: Tensor, size: Sequence[int], channels: int, kernel: Sequence[int]) -> tuple[Tensor, Tensor]:
    """An uninitialised channels-last buffer for a ``[N, channels, *size]`` input plus ``kernel``'s same
    padding (``N``, dtype and device of ``like``), and its interior view, where the input is written."""
    pads = axis_pads(kernel)
    shape = [like.shape[0], channels] + [s + lo + hi for s, (lo, hi) in zip(size, pads)]
    buf = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_CHANNELS_LAST[len(kernel)])
    inner = buf[(slice(None), slice(None)) + tuple(slice(lo, lo + s) for s, (lo, _) in zip(size, pads))]
    return buf, inner


def fill_border_(buf: Tensor, kernel: Sequence[int], mode: str, axes: Sequence[int] | None = None) -> Tensor:
    """Write the "same" padding of ``kernel`` into the border of ``buf`` from its interior, in place.

    Axis by axis over the full extent of the others, which is how separable padding composes: the same
    values as ``magvit.tokenizers.layers.pad_same`` on the interior, including its reflect -> replicate
    fallback on short axes. ``axes``: only these kernel axes (all by default).
    """
    for axis, (lo, hi) in enumerate(axis_pads(kernel)):
        if axes is not None and axis not in axes:
            continue
        dim = 2 + axis
        size = buf.shape[dim] - lo - hi
        first, last = lo, lo + size - 1
        reflect = mode == "reflect" and size > max(lo, hi)
        sources = [(first - j, first + j if reflect else first) for j in range(1, lo + 1)]
        sources += [(last + j, last - j if reflect else last) for j in range(1, hi + 1)]
        for dst, src in sources:
            if mode == "zeros":
                buf.select(dim, dst).zero_()
            else:
                buf.select(dim, dst).copy_(buf.select(dim, src))
    return buf


def pointwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1(x1) convolution as one matmul, without copying ``x`` in either memory layout.

    PyTorch's CPU convolution takes its slow unfold path for 1x1x1 kernels (and oneDNN reorders
    channels-first input); a 1x1 conv is just ``W @ x`` over the channel axis. Channels-last ``x`` is
    already a ``[voxels, C]`` matrix, channels-first ``x`` a ``[N, C, voxels]`` batch of them.
    """
    w = weight.flatten(1)
    if x.is_contiguous():
        out = torch.matmul(w, x.flatten(2)).unflatten(2, x.shape[2:])
        return out if bias is None else out + bias.view(-1, *(1,) * (x.dim() - 2))
    return F.linear(x.movedim(1, -1), w, bias).movedim(-1, 1)  # channels-last in, channels-last out


def pointwise_conv_add_(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``out += conv1x1(x)`` in place: the residual shortcut, without a third activation of ``out``'s size
    alive at the block's end."""
    w = weight.flatten(1)
    xm, om = x.movedim(1, -1), out.movedim(1, -1)
    if xm.is_contiguous() and om.is_contiguous():  # channels-last: [voxels, C] matrices
        om.view(-1, w.shape[0]).addmm_(xm.view(-1, w.shape[1]), w.t())
    elif x.is_contiguous() and out.is_contiguous():  # channels-first: a batch of [C, voxels] matrices
        out.view(out.shape[0], w.shape[0], -1).baddbmm_(w.expand(x.shape[0], -1, -1), x.view(x.shape[0], w.shape[1], -1))
    else:
        out.add_(pointwise_conv(x, weight, None))
    if bias is not None:
        out.add_(bias.view(-1, *(1,) * (x.dim() - 2)))
    return out


def group_norm_affine(norm: nn.GroupNorm, x: Tensor) -> tuple[Tensor, Tensor]:
    """The per-sample, per-channel ``(scale, shift)`` that ``norm`` applies to ``x`` (shapes ``[N, C]``):
    ``GroupNorm(x) = x * scale + shift``, with the statistics taken over the whole of ``x``."""
    n, c, g = x.shape[0], x.shape[1], norm.num_groups
    grouped = x.unflatten(1, (g, c // g))
    var, mean = torch.var_mean(grouped, dim=tuple(range(2, grouped.dim())), correction=0)
    scale = norm.weight.view(1, g, c // g) * torch.rsqrt(var + norm.eps)[..., None]
    shift = norm.bias.view(1, g, c // g) - mean[..., None] * scale
    return scale.reshape(n, c), shift.reshape(n, c)


def affine_swish_into(x: Tensor, scale: Tensor, shift: Tensor, out: Tensor) -> Tensor:
    """``out = swish(x * scale + shift)`` with per-channel ``[N, C]`` scale and shift, written into ``out``."""
    per_channel = tuple(scale.shape) + (1,) * (x.dim() - 2)
    torch.addcmul(shift.view(per_channel), x, scale.view(per_channel), out=out)
    return F.silu(out, inplace=True)


def group_norm_swish_into(norm: nn.GroupNorm, x: Tensor, out: Tensor) -> Tensor:
    """``out = swish(GroupNorm(x))`` written into ``out`` (any strides): one pass for the statistics, one
    write, and swish in place; no intermediate tensor of ``x``'s size."""
    return affine_swish_into(x, *group_norm_affine(norm, x), out)


def upsample_nearest_into(x: Tensor, factors: Sequence[int], out: Tensor) -> Tensor:
    """Nearest-neighbour upsampling of ``x``'s trailing axes by ``factors``, written into ``out`` (any
    strides; e.g. a padded buffer's interior)."""
    view, src = out, x
    for axis in reversed(range(len(factors))):  # last axis first, so earlier dims keep their index
        view = view.unflatten(2 + axis, (x.shape[2 + axis], factors[axis]))
        src = src.unsqueeze(3 + axis)
    view.copy_(src)
    return out


def padded_source(index: int, size: int, pads: tuple[int, int], mode: str) -> int | None:
    """The input position that position ``index`` of a same-padded axis holds (``None``: a zero)."""
    if 0 <= index < size:
        return index
    if mode == "zeros":
        return None
    if mode == "reflect" and size > max(pads):
        return -index if index < 0 else 2 * (size - 1) - index
    return min(max(index, 0), size - 1)  # replicate, and reflect's fallback on short axes (pad_same)


def conv_in_slabs(
    conv: PaddedConv, fill_frame: Callable[[int, Tensor], object], like: Tensor, size: Sequence[int], channels: int
) -> Tensor:
    """``conv`` of a ``[N, channels, *size]`` 3D input that is never held whole.

    The output is computed :data:`SLAB_FRAMES` frames at a time. Each slab's padded buffer receives its
    input frames, halo included, from ``fill_frame(t, dst)``, which writes input frame ``t`` into the
    ``[N, channels, H, W]`` view ``dst``; the time border of the clip follows ``conv``'s padding mode
    (:func:`padded_source`), the spatial border is filled by the conv. Same values as the whole-buffer
    route (up to the convolution's summation order); the input's peak drops from the full padded clip to
    one slab's worth.
    """
    frames = size[0]
    (lo, hi), *spatial_pads = axis_pads(conv.kernel)
    # every frame of the slab buffer, halo included, without its spatial border
    spatial = (slice(None),) * 3 + tuple(slice(p, p + n) for n, (p, _) in zip(size[1:], spatial_pads))
    out = None
    for start in range(0, frames, SLAB_FRAMES):
        stop = min(start + SLAB_FRAMES, frames)
        buf, _ = conv.empty_padded(like, (stop - start, *size[1:]), channels)
        inner = buf[spatial]
        for j in range(buf.shape[2]):
            source = padded_source(start - lo + j, frames, (lo, hi), conv.padding)
            if source is None:
                inner[:, :, j].zero_()
            else:
                fill_frame(source, inner[:, :, j])
        y = conv(buf, prepadded=True, border_axes=(1, 2))
        del buf, inner
        if out is None:
            out = torch.empty((y.shape[0], y.shape[1], frames, *y.shape[3:]), dtype=y.dtype, device=y.device,
                              memory_format=torch.channels_last_3d)
        out[:, :, start:stop] = y
    assert out is not None
    return out


def norm_swish_padded(norm: nn.GroupNorm, conv: PaddedConv, x: Tensor) -> Tensor:
    """``conv``'s padded input buffer holding ``swish(norm(x))``."""
    buf, inner = conv.empty_padded(x, x.shape[2:], x.shape[1])
    group_norm_swish_into(norm, x, inner)
    return buf


def norm_swish_conv(norm: nn.GroupNorm, conv: PaddedConv, x: Tensor) -> Tensor:
    """``conv(swish(norm(x)))``: 3D clips longer than a slab go through :func:`conv_in_slabs`, anything else
    through one padded buffer."""
    if conv.spatial_dims != 3 or x.shape[2] <= SLAB_FRAMES:
        return conv(norm_swish_padded(norm, conv, x), prepadded=True)
    scale, shift = group_norm_affine(norm, x)  # statistics over the whole clip, as GroupNorm takes them
    return conv_in_slabs(conv, lambda t, dst: affine_swish_into(x[:, :, t], scale, shift, dst), x, x.shape[2:],
                         x.shape[1])
