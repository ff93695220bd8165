"""Building blocks of the VQ autoencoders (MAGVIT paper Sec. 3.1; the authors' ``videogvt/models/enc_dec_3dcnn.py``
and ``videogvt/models/model_utils.py``).

Every block works in 2D (``[N, C, H, W]``, the per-frame 2D-VQ) and 3D (``[N, C, T, H, W]``, the 3D-VQ)
with the *same parameter names*, so that a 2D state dict can be inflated into the 3D model
(:mod:`magvit.tokenizers.inflation`).

* :class:`Conv` -- a convolution with explicit "same" padding ``((k-1)//2, k//2)`` per axis
  (``custom_conv_padding`` of the authors' ``model_utils.Conv``) in a selectable mode: ``"reflect"`` (the
  paper, default), ``"zeros"`` (Flax ``'SAME'``, the authors' released configs) or ``"replicate"``.
* :class:`ResBlock` -- ``GN -> swish -> conv3 -> GN -> swish -> conv3`` plus a 1x1 shortcut when the
  width changes (``enc_dec_3dcnn.ResBlock``).
* :func:`avg_pool_same` / :func:`upsample_nearest` -- the parameter-free resampling.

Inference path. When autograd is off (``encode``/``decode``, the frozen tokenizer of stage two)
the blocks take a leaner route with the same arithmetic: each 3x3x3 convolution reads a channels-last
buffer that already holds its padding, and the op before it (GroupNorm + swish, or the nearest
upsample) writes straight into that buffer's interior (:meth:`Conv.empty_padded`,
``conv(buf, prepadded=True)``). That removes the ``F.pad`` copy, the separate swish output and oneDNN's
channels-first reorders: the peak of a B generation at 16x128x128 went from 1727 to ~1450 MiB in an
in-process trace (full-resolution activations are 67-134 MB each). Clips longer than :data:`SLAB_FRAMES`
go through the upsampling convs and each block's first conv in temporal slabs (:func:`conv_in_slabs`), so
that their padded input never exists whole, and the 1x1 shortcut accumulates into the block's output
(:func:`pointwise_conv_add_`): the decoder's peak over its input went from ~340 to ~280 MiB at that size,
for 2-3 % more decode time. Training keeps the plain autograd route; tests check the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.errors import InputError

PADDING_MODES: tuple[str, ...] = ("reflect", "zeros", "replicate")

#: Flax ``nn.GroupNorm`` defaults used by the authors' encoder/decoder (``videogvt/models/model_utils.py``).
GROUPNORM_EPS = 1e-6

_CONV = {2: F.conv2d, 3: F.conv3d}
_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}
_POOL = {2: F.avg_pool2d, 3: F.avg_pool3d}


def check_padding(padding: str) -> str:
    """Return ``padding`` if it is a known mode, else raise :class:`InputError` naming the choices."""
    if padding not in PADDING_MODES:
        raise InputError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    return padding


def same_pads(kernel: tuple[int, ...]) -> list[int]:
    """``F.pad`` amounts (last axis first) for the split ``((k-1)//2, k//2)`` of ``model_utils.Conv``."""
    pads: list[int] = []
    for k in reversed(kernel):
        pads += [(k - 1) // 2, k // 2]
    return pads


def axis_pads(kernel: Sequence[int]) -> list[tuple[int, int]]:
    """``(before, after)`` padding of each axis, in axis order: ``((k-1)//2, k//2)`` (as ``model_utils.Conv``)."""
    return [((k - 1) // 2, k // 2) for k in kernel]


def fill_border_(buf: Tensor, kernel: Sequence[int], mode: str, axes: Sequence[int] | None = None) -> Tensor:
    """Write the "same" padding of ``kernel`` into the border of ``buf`` from its interior, in place.

    Axis by axis over the full extent of the others, which is how separable padding composes: the same
    values as :func:`pad_same` on the interior, including its reflect -> replicate fallback on short axes.
    ``axes``: only these kernel axes (all by default).
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
    """``out += conv1x1(x)`` in place: the residual shortcut of the inference path, without a third
    activation of ``out``'s size (64 MB at B's full resolution) alive at the block's end."""
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
    write, and swish in place; no intermediate tensor of ``x``'s size (inference path)."""
    return affine_swish_into(x, *group_norm_affine(norm, x), out)


def upsample_nearest_into(x: Tensor, factors: Sequence[int], out: Tensor) -> Tensor:
    """:func:`upsample_nearest` of ``x`` written into ``out`` (any strides; e.g. a padded buffer's interior)."""
    view, src = out, x
    for axis in reversed(range(len(factors))):  # last axis first, so earlier dims keep their index
        view = view.unflatten(2 + axis, (x.shape[2 + axis], factors[axis]))
        src = src.unsqueeze(3 + axis)
    view.copy_(src)
    return out


def pad_same(x: Tensor, kernel: tuple[int, ...], mode: str) -> Tensor:
    """Pad the trailing ``len(kernel)`` axes of ``x`` so a VALID conv keeps their size (as ``model_utils.Conv``).

    ``reflect`` needs more than ``pad`` samples on an axis; on smaller axes (a single frame left after
    temporal pooling) it falls back to ``replicate``, which is what ``jnp.pad(mode='reflect')`` and
    ``numpy.pad`` produce on a size-1 axis.
    """
    pads = same_pads(kernel)
    if not any(pads):
        return x
    if mode == "zeros":
        return F.pad(x, pads)
    sizes = x.shape[-len(kernel) :]
    if mode == "replicate" or all(s > max(pads[2 * i], pads[2 * i + 1]) for i, s in enumerate(reversed(sizes))):
        return F.pad(x, pads, mode=mode)
    for i, size in enumerate(reversed(sizes)):  # axis by axis, reflect where possible
        axis_pads = [0] * len(pads)
        axis_pads[2 * i : 2 * i + 2] = pads[2 * i : 2 * i + 2]
        if any(axis_pads):
            axis_mode = "reflect" if size > max(axis_pads) else "replicate"
            x = F.pad(x, axis_pads, mode=axis_mode)
    return x


class Conv(nn.Module):
    """An N-d convolution (N = 2 or 3) with explicit same-padding in ``padding`` mode.

    Parameters are ``weight`` ``[out, in, *kernel]`` and optional ``bias`` ``[out]`` in both 2D and 3D,
    so 2D kernels map onto 3D ones by a temporal axis at dim 2 (for inflation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        spatial_dims: int,
        bias: bool,
        padding: str = "reflect",
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.padding = check_padding(padding)
        shape = (out_channels, in_channels) + (kernel_size,) * spatial_dims
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[2:])

    def forward(
        self, x: Tensor, prepadded: bool = False, border_axes: Sequence[int] | None = None, add_to: Tensor | None = None
    ) -> Tensor:
        """Convolve ``x`` with same-padding; ``prepadded``: ``x`` is a buffer from :meth:`empty_padded` whose
        interior is written, and only its border is filled here (inference path), on ``border_axes`` (all
        by default; a temporal slab brings its own time border). ``add_to`` (1x1 kernels, no autograd):
        return ``add_to + conv(x)`` accumulated in ``add_to``'s memory. Going through the module call
        either way keeps forward hooks (feature taps, FLOP counters) firing on both paths."""
        if add_to is not None:
            if any(k != 1 for k in self.kernel) or torch.is_grad_enabled():
                raise InputError("add_to is for 1x1 convolutions without autograd")
            return pointwise_conv_add_(add_to, x, self.weight, self.bias)
        if prepadded:
            return self._conv_prepadded(x, border_axes)
        if all(k == 1 for k in self.kernel) and (
            x.is_contiguous() or x.is_contiguous(memory_format=_CHANNELS_LAST[self.spatial_dims])
        ):
            return pointwise_conv(x, self.weight, self.bias)
        if not torch.is_grad_enabled() and any(k > 1 for k in self.kernel):
            buf, inner = self.empty_padded(x, x.shape[2:], x.shape[1])
            inner.copy_(x)
            return self._conv_prepadded(buf)
        x = pad_same(x, self.kernel, self.padding)
        return _CONV[self.spatial_dims](x, self.weight, self.bias)

    def _conv_prepadded(self, buf: Tensor, axes: Sequence[int] | None = None) -> Tensor:
        fill_border_(buf, self.kernel, self.padding, axes)
        return _CONV[self.spatial_dims](buf, self.weight, self.bias)

    def empty_padded(self, like: Tensor, size: Sequence[int], channels: int) -> tuple[Tensor, Tensor]:
        """An uninitialised channels-last input buffer for a ``size`` input plus its padding, and its interior.

        The caller writes the input into the interior view, then calls ``conv(buf, prepadded=True)``.
        """
        pads = axis_pads(self.kernel)
        shape = [like.shape[0], channels] + [s + lo + hi for s, (lo, hi) in zip(size, pads)]
        buf = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_CHANNELS_LAST[self.spatial_dims])
        inner = buf[(slice(None), slice(None)) + tuple(slice(lo, lo + s) for s, (lo, _) in zip(size, pads))]
        return buf, inner


#: Output frames per temporal slab in :func:`conv_in_slabs` (inference path). With a 3-tap temporal
#: kernel a slab's buffer holds 4 + 2 frames: 6/16 of a 16-frame clip's full padded input.
SLAB_FRAMES = 4


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
    conv: Conv, fill_frame: Callable[[int, Tensor], object], like: Tensor, size: Sequence[int], channels: int
) -> Tensor:
    """``conv`` of a ``[N, channels, *size]`` 3D input that is never held whole (inference path).

    The output is computed :data:`SLAB_FRAMES` frames at a time. Each slab's padded buffer receives its
    input frames, halo included, from ``fill_frame(t, dst)``, which writes input frame ``t`` into the
    ``[N, channels, H, W]`` view ``dst``; the time border of the clip follows ``conv``'s padding mode
    (:func:`padded_source`), the spatial border is filled by the conv. Same values as the whole-buffer
    route (up to the convolution's summation order); the input's peak drops from the full padded clip to
    one slab's worth, which at the decoder's full resolution is ~100 MB of a B generation.
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


def norm_swish_conv(norm: nn.GroupNorm, conv: Conv, x: Tensor) -> Tensor:
    """``conv(swish(norm(x)))`` on the inference path: 3D clips longer than a slab go through
    :func:`conv_in_slabs`, anything else through one padded buffer."""
    if conv.spatial_dims != 3 or x.shape[2] <= SLAB_FRAMES:
        return conv(norm_swish_padded(norm, conv, x), prepadded=True)
    scale, shift = group_norm_affine(norm, x)  # statistics over the whole clip, as GroupNorm takes them
    return conv_in_slabs(conv, lambda t, dst: affine_swish_into(x[:, :, t], scale, shift, dst), x, x.shape[2:],
                         x.shape[1])


def lecun_normal_(weight: Tensor, generator: torch.Generator | None) -> None:
    """Flax's default conv init ``variance_scaling(1, 'fan_in', 'truncated_normal')``, clipped at 2 sigma.

    0.8796... is the std of a unit normal truncated to [-2, 2]; dividing by it keeps variance 1/fan_in.
    """
    if weight.is_meta:  # shape-only models (parameter counting) have no values to draw
        return
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        weight.copy_(truncated_normal(weight.shape, generator) * std)


def truncated_normal(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Unit normal samples truncated to [-2, 2], by redrawing the ~4.6% outside (exact rejection sampling).

    Much faster than ``nn.init.trunc_normal_`` (inverse-CDF) on the 10^8 weights of the L preset.
    """
    x = torch.randn(shape, generator=generator)
    bad = x.abs() > 2
    while bad.any():
        x[bad] = torch.randn(int(bad.sum()), generator=generator)
        bad = x.abs() > 2
    return x


def init_autoencoder_(module: nn.Module, generator: torch.Generator | None) -> None:
    """Initialise every :class:`Conv` (LeCun normal, zero bias) and GroupNorm (1, 0) under ``module``."""
    for m in module.modules():
        if isinstance(m, Conv):
            lecun_normal_(m.weight, generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with Flax's eps (as the authors' ``model_utils.py``); ``groups`` must divide ``channels``."""
    if channels % groups:
        raise InputError(f"norm_groups={groups} must divide every layer width; {channels} channels is not divisible")
    return nn.GroupNorm(groups, channels, eps=GROUPNORM_EPS)


class ResBlock(nn.Module):
    """Pre-activation residual block of the encoder/decoder (``enc_dec_3dcnn.ResBlock``): no attention, no dropout."""

    def __init__(
        self, in_channels: int, out_channels: int, *, spatial_dims: int, norm_groups: int, padding: str
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = Conv(in_channels, out_channels, 3, spatial_dims=spatial_dims, bias=False, padding=padding)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.conv2 = Conv(out_channels, out_channels, 3, spatial_dims=spatial_dims, bias=False, padding=padding)
        # 1x1 projection only when the width changes; the identity otherwise (as enc_dec_3dcnn.ResBlock).
        self.shortcut = (
            Conv(in_channels, out_channels, 1, spatial_dims=spatial_dims, bias=False, padding=padding)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return self._forward_inference(x)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + h

    def _forward_inference(self, x: Tensor) -> Tensor:
        """Same values, lower peak: GN + swish land in the next conv's padded buffer (module docstring)."""
        h = norm_swish_conv(self.norm1, self.conv1, x)
        buf = norm_swish_padded(self.norm2, self.conv2, h)
        del h  # the conv below reads only the buffer: one activation less at peak
        h = self.conv2(buf, prepadded=True)
        return h.add_(x) if self.shortcut is None else self.shortcut(x, add_to=h)


def norm_swish_padded(norm: nn.GroupNorm, conv: Conv, x: Tensor) -> Tensor:
    """``conv``'s padded input buffer holding ``swish(norm(x))`` (inference path; see the module docstring)."""
    buf, inner = conv.empty_padded(x, x.shape[2:], x.shape[1])
    group_norm_swish_into(norm, x, inner)
    return buf


def avg_pool_same(x: Tensor, factors: tuple[int, ...]) -> Tensor:
    """Average-pool the trailing axes by ``factors`` (each 1 or 2) with TF 'SAME' semantics.

    TF 'SAME' pooling pads an odd axis at its end and excludes the pad from the average, so the last
    window holds one sample and returns it unchanged; replicating that sample and averaging the pair
    gives exactly the same value. A size-1 axis therefore stays 1 (the authors'
    ``model_utils.tensorflow_style_avg_pooling``, which their discriminator uses).
    """
    pads: list[int] = []
    for f, size in zip(reversed(factors), reversed(x.shape[-len(factors) :])):
        pads += [0, 1 if (f == 2 and size % 2) else 0]
    if any(pads):
        x = F.pad(x, pads, mode="replicate")
    return _POOL[len(factors)](x, kernel_size=factors, stride=factors)


def upsample_nearest(x: Tensor, factors: tuple[int, ...]) -> Tensor:
    """Nearest-neighbour upsampling of the trailing axes by integer ``factors`` (``upsample='nearest+conv'``)."""
    return F.interpolate(x, scale_factor=tuple(float(f) for f in factors), mode="nearest")
