"""2D -> 3D weight inflation (MAGVIT paper Sec. 3.1 "3D inflation"; the authors' ``inflate_2d_to_3d`` in
``videogvt/train_lib/vqgan_train_lib.py``).

A 3D-VQ (or 3D discriminator) starts from a 2D model's state dict. Our 2D and 3D modules share parameter
names, and a 3D kernel ``[out, in, kt, kh, kw]`` corresponds to a 2D kernel ``[out, in, kh, kw]``:

* same shape (norms, biases, codebook, 1x1 convs' equivalents, dense layers): copied;
* ``central`` (the paper's): zero 3D kernel with the 2D kernel in the temporal centre slice ``kt // 2``;
* ``average``: the 2D kernel divided by ``kt`` in every temporal slice;
* anything else (missing in the 2D state, other shapes) keeps its initialisation and is *reported* by
  name in the returned :class:`InflationReport` and in a warning; 2D entries the 3D model does not use
  are reported too.

When does the inflated 3D-VQ reproduce the 2D-VQ exactly? On a temporally constant clip:

* ``central`` with odd ``kt``: each 3D conv reads only frame t, so it *is* the per-frame 2D conv whatever
  the temporal padding; temporal average pools and nearest upsampling keep a constant clip constant,
  and GroupNorm statistics over (T, H, W) of a constant clip equal the per-frame ones. Exact.
* ``average``: each 3D conv sums the same frame ``kt`` times, which equals the 2D conv only if the
  temporal padding also repeats the frame: ``reflect`` or ``replicate`` padding (exact), but not
  ``zeros`` padding (the first and last frames see zero frames).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import attrs
import torch
from torch import Tensor, nn

from magvit.errors import InputError

INFLATION_MODES: tuple[str, ...] = ("central", "average")
#: why a 3D entry is unmapped when the 2D state has no entry of its name (any other reason is a shape mismatch)
NOT_IN_2D = "not in the 2D state dict"


@attrs.frozen
class InflationReport:
    """Which 3D entries were copied, inflated or left unmapped.

    Attributes:
        copied: names copied as is (equal shapes).
        inflated: names of 2D kernels inflated along time.
        unmapped: ``(name, reason)`` of 3D entries left at their initialisation.
        unused: names in the 2D state that the 3D model has no entry for.
    """

    copied: tuple[str, ...]
    inflated: tuple[str, ...]
    unmapped: tuple[tuple[str, str], ...]
    unused: tuple[str, ...]

    @property
    def mismatched(self) -> tuple[tuple[str, str], ...]:
        """The unmapped entries that the 2D state has, in a shape that does not map to the 3D one."""
        return tuple((name, why) for name, why in self.unmapped if why != NOT_IN_2D)

    @property
    def complete(self) -> bool:
        """True when every 3D entry came from the 2D state and every 2D entry was used."""
        return not self.unmapped and not self.unused


def inflate_kernel(kernel_2d: Tensor, kt: int, mode: str) -> Tensor:
    """``[out, in, kh, kw]`` -> ``[out, in, kt, kh, kw]`` by ``mode`` (as ``inflate_2d_to_3d``)."""
    if mode == "central":
        kernel = kernel_2d.new_zeros(kernel_2d.shape[:2] + (kt,) + kernel_2d.shape[2:])
        kernel[:, :, kt // 2] = kernel_2d
        return kernel
    if mode == "average":
        return kernel_2d.unsqueeze(2).expand(-1, -1, kt, -1, -1) / kt
    raise InputError(f"inflation mode must be one of {INFLATION_MODES}, got {mode!r}")


def _is_inflatable(shape_2d: torch.Size, shape_3d: torch.Size) -> bool:
    return len(shape_3d) == 5 and len(shape_2d) == 4 and shape_2d == shape_3d[:2] + shape_3d[3:]


def inflate_2d_to_3d(state_2d: Mapping[str, Tensor], model_3d: nn.Module, mode: str = "central") -> InflationReport:
    """Load ``state_2d`` into ``model_3d`` by inflation, in place; return what happened.

    Unmapped entries are never skipped silently: they are listed in the report and warned about.
    """
    if mode not in INFLATION_MODES:
        raise InputError(f"inflation mode must be one of {INFLATION_MODES}, got {mode!r}")
    target = model_3d.state_dict()
    copied: list[str] = []
    inflated: list[str] = []
    unmapped: list[tuple[str, str]] = []
    new_state: dict[str, Tensor] = {}
    for name, value_3d in target.items():
        if name not in state_2d:
            unmapped.append((name, NOT_IN_2D))
            continue
        value_2d = state_2d[name]
        if value_2d.shape == value_3d.shape:
            new_state[name] = value_2d
            copied.append(name)
        elif _is_inflatable(value_2d.shape, value_3d.shape):
            new_state[name] = inflate_kernel(value_2d.to(value_3d.dtype), value_3d.shape[2], mode)
            inflated.append(name)
        else:
            unmapped.append((name, f"2D shape {tuple(value_2d.shape)} does not map to 3D shape {tuple(value_3d.shape)}"))
    unused = tuple(name for name in state_2d if name not in target)
    with torch.no_grad():
        for name, value in new_state.items():
            target[name].copy_(value)
    report = InflationReport(tuple(copied), tuple(inflated), tuple(unmapped), unused)
    if unmapped or unused:
        details = "; ".join(f"{n}: {why}" for n, why in unmapped[:10])
        warnings.warn(
            f"2D->3D inflation left {len(unmapped)} 3D entries at their initialisation ({details}) and did not use "
            f"{len(unused)} 2D entries {list(unused[:10])}",
            stacklevel=2,
        )
    return report
