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

Lean inference route. :class:`Conv` and :class:`ResBlock` (and the decoder's levels) are
:class:`~magvit.kernels.LeanRoute` modules: inside :func:`magvit.kernels.lean_route`, which a tokenizer's
``encode``/``decode`` enter, they run the same arithmetic through :mod:`magvit.kernels.conv` (GroupNorm +
swish written into the next conv's pre-padded channels-last buffer, temporal slabs, the 1x1 shortcut
accumulated in place), with a lower memory peak and no autograd. Training calls ``forward`` outside it and
takes the plain route; tests check the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.errors import InputError
from magvit.kernels import LeanRoute
from magvit.kernels.conv import (
    fill_border_,
    norm_swish_conv,
    norm_swish_padded,
    padded_buffer,
    pointwise_conv,
    pointwise_conv_add_,
)
from magvit.precision import Float32GroupNorm

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


class Conv(LeanRoute, nn.Module):
    """An N-d convolution (N = 2 or 3) with explicit same-padding in ``padding`` mode.

    Parameters are ``weight`` ``[out, in, *kernel]`` and optional ``bias`` ``[out]`` in both 2D and 3D,
    so 2D kernels map onto 3D ones by a temporal axis at dim 2 (for inflation). On the lean route
    (module docstring) a kernel wider than 1 reads its input from a pre-padded channels-last buffer.
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
        interior is written, and only its border is filled here (lean route), on ``border_axes`` (all
        by default; a temporal slab brings its own time border). ``add_to`` (1x1 kernels): return
        ``add_to + conv(x)`` accumulated in ``add_to``'s memory. Going through the module call either way
        keeps forward hooks (feature taps, FLOP counters) firing on both routes."""
        if add_to is not None:
            if any(k != 1 for k in self.kernel):
                raise InputError(f"add_to is for 1x1 convolutions, this one has kernel {self.kernel}")
            return pointwise_conv_add_(add_to, x, self.weight, self.bias)
        if prepadded:
            return self._conv_prepadded(x, border_axes)
        if all(k == 1 for k in self.kernel) and (
            x.is_contiguous() or x.is_contiguous(memory_format=_CHANNELS_LAST[self.spatial_dims])
        ):
            return pointwise_conv(x, self.weight, self.bias)
        if self.lean and any(k > 1 for k in self.kernel):
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
        return padded_buffer(like, size, channels, self.kernel)


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
    """GroupNorm with Flax's eps (as the authors' ``model_utils.py``); ``groups`` must divide ``channels``.
    Its statistics are float32 under autocast (:class:`~magvit.precision.Float32GroupNorm`)."""
    if channels % groups:
        raise InputError(f"norm_groups={groups} must divide every layer width; {channels} channels is not divisible")
    return Float32GroupNorm(groups, channels, eps=GROUPNORM_EPS)


class ResBlock(LeanRoute, nn.Module):
    """Pre-activation residual block of the encoder/decoder (``enc_dec_3dcnn.ResBlock``): no attention, no dropout.

    On the lean route (module docstring) each GroupNorm + swish writes into the next conv's padded buffer.
    """

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
        if self.lean:
            return self._forward_lean(x)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + h

    def _forward_lean(self, x: Tensor) -> Tensor:
        """Same values, lower peak: GN + swish land in the next conv's padded buffer (module docstring)."""
        h = norm_swish_conv(self.norm1, self.conv1, x)
        buf = norm_swish_padded(self.norm2, self.conv2, h)
        del h  # the conv below reads only the buffer: one activation less at peak
        h = self.conv2(buf, prepadded=True)
        return h.add_(x) if self.shortcut is None else self.shortcut(x, add_to=h)


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
