"""Building blocks of the VQ autoencoders (MAGVIT paper Sec. 3.1; reference 4.2-4.4).

Every block works in 2D (``[N, C, H, W]``, the per-frame 2D-VQ) and 3D (``[N, C, T, H, W]``, the 3D-VQ)
with the *same parameter names*, so that a 2D state dict can be inflated into the 3D model
(reference 4.9; :mod:`magvit.tokenizers.inflation`).

* :class:`Conv` -- a convolution with explicit "same" padding ``((k-1)//2, k//2)`` per axis
  (reference 4.4) in a selectable mode: ``"reflect"`` (the paper, default), ``"zeros"`` (Flax
  ``'SAME'``, the authors' released configs) or ``"replicate"``.
* :class:`ResBlock` -- ``GN -> swish -> conv3 -> GN -> swish -> conv3`` plus a 1x1 shortcut when the
  width changes (reference 4.2).
* :func:`avg_pool_same` / :func:`upsample_nearest` -- the parameter-free resampling (reference 4.2-4.3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.errors import InputError

PADDING_MODES: tuple[str, ...] = ("reflect", "zeros", "replicate")

#: Flax ``nn.GroupNorm`` defaults used by the authors' encoder/decoder (reference 4.1).
GROUPNORM_EPS = 1e-6

_CONV = {2: F.conv2d, 3: F.conv3d}
_POOL = {2: F.avg_pool2d, 3: F.avg_pool3d}


def check_padding(padding: str) -> str:
    """Return ``padding`` if it is a known mode, else raise :class:`InputError` naming the choices."""
    if padding not in PADDING_MODES:
        raise InputError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    return padding


def same_pads(kernel: tuple[int, ...]) -> list[int]:
    """``F.pad`` amounts (last axis first) for the split ``((k-1)//2, k//2)`` of reference 4.4."""
    pads: list[int] = []
    for k in reversed(kernel):
        pads += [(k - 1) // 2, k // 2]
    return pads


def pad_same(x: Tensor, kernel: tuple[int, ...], mode: str) -> Tensor:
    """Pad the trailing ``len(kernel)`` axes of ``x`` so a VALID conv keeps their size (reference 4.4).

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
    so 2D kernels map onto 3D ones by a temporal axis at dim 2 (reference 4.9).
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

    def forward(self, x: Tensor) -> Tensor:
        x = pad_same(x, tuple(self.weight.shape[2:]), self.padding)
        return _CONV[self.spatial_dims](x, self.weight, self.bias)


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
    """GroupNorm with Flax's eps (reference 4.1); ``groups`` must divide ``channels``."""
    if channels % groups:
        raise InputError(f"norm_groups={groups} must divide every layer width; {channels} channels is not divisible")
    return nn.GroupNorm(groups, channels, eps=GROUPNORM_EPS)


class ResBlock(nn.Module):
    """Pre-activation residual block of the encoder/decoder (reference 4.2): no attention, no dropout."""

    def __init__(
        self, in_channels: int, out_channels: int, *, spatial_dims: int, norm_groups: int, padding: str
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = Conv(in_channels, out_channels, 3, spatial_dims=spatial_dims, bias=False, padding=padding)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.conv2 = Conv(out_channels, out_channels, 3, spatial_dims=spatial_dims, bias=False, padding=padding)
        # 1x1 projection only when the width changes; the identity otherwise (reference 4.2).
        self.shortcut = (
            Conv(in_channels, out_channels, 1, spatial_dims=spatial_dims, bias=False, padding=padding)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + h


def avg_pool_same(x: Tensor, factors: tuple[int, ...]) -> Tensor:
    """Average-pool the trailing axes by ``factors`` (each 1 or 2) with TF 'SAME' semantics.

    TF 'SAME' pooling pads an odd axis at its end and excludes the pad from the average, so the last
    window holds one sample and returns it unchanged; replicating that sample and averaging the pair
    gives exactly the same value. A size-1 axis therefore stays 1 (reference 4.7, issue #20).
    """
    pads: list[int] = []
    for f, size in zip(reversed(factors), reversed(x.shape[-len(factors) :])):
        pads += [0, 1 if (f == 2 and size % 2) else 0]
    if any(pads):
        x = F.pad(x, pads, mode="replicate")
    return _POOL[len(factors)](x, kernel_size=factors, stride=factors)


def upsample_nearest(x: Tensor, factors: tuple[int, ...]) -> Tensor:
    """Nearest-neighbour upsampling of the trailing axes by integer ``factors`` (reference 4.3)."""
    return F.interpolate(x, scale_factor=tuple(float(f) for f in factors), mode="nearest")
