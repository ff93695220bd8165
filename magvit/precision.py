"""Numeric precision of training and generation: float32, or mixed precision with bfloat16 or float16.

:class:`Precision` is built from a name of :data:`~magvit.train.settings.PRECISIONS`:

* ``"32"``: float32 throughout;
* ``"bf16-mixed"``: the forward pass and the loss under ``torch.autocast`` in bfloat16 (float32's range, so no
  loss scaling);
* ``"16-mixed"``: autocast in float16, whose range is narrow: the trainer scales each phase's loss by a
  ``torch.amp.GradScaler`` so small gradients do not flush to zero.

Weights, their gradients and optimiser states stay float32 in every mode; only autocast's op list runs in the
low dtype (matmuls and convolutions). What must stay float32 is an explicit island: losses are taken on
float32 logits and reconstructions (:mod:`magvit.objective`, :mod:`magvit.tokenizers.losses`), guidance and
sampling use float32 logits (:mod:`magvit.decoding`), and the normalisation layers below.

Normalisation statistics. torch's autocast op reference lists ``layer_norm`` and ``group_norm`` among the CUDA
ops that autocast to float32, but its CPU list has neither: on the CPU they return their input's dtype, so in a
post-LN transformer the whole residual stream (each block's LayerNorm output) would be rounded to bfloat16.
:class:`Float32LayerNorm` and :class:`Float32GroupNorm` take a bfloat16 or float16 input to float32 first,
which gives every device CUDA's behaviour; a float32 or float64 input is left as it is, so they are the plain
modules there (same parameters and state-dict keys, bit-identical outputs).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.errors import InputError
from magvit.train.settings import PRECISIONS

__all__ = ["PRECISIONS", "Float32GroupNorm", "Float32LayerNorm", "Precision", "autocast_off"]

_DTYPES = {"32": torch.float32, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _known(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not (isinstance(value, str) and value in PRECISIONS):
        raise InputError(f"precision must be one of {', '.join(repr(p) for p in PRECISIONS)}, got {value!r}")


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


@attrs.frozen
class Precision:
    """A numeric precision by name (``"32"``, ``"bf16-mixed"``, ``"16-mixed"``); anything else is an
    :class:`~magvit.errors.InputError` naming the allowed values.

    Attributes:
        name: the precision's name, as ``--trainer.precision`` and ``--precision`` take it.
    """

    name: str = attrs.field(default="32", validator=_known)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype autocast computes in (float32 for ``"32"``)."""
        return _DTYPES[self.name]

    @property
    def mixed(self) -> bool:
        """Whether autocast is on."""
        return self.name != "32"

    def autocast(self, device: torch.device | str) -> AbstractContextManager[object]:
        """``torch.autocast`` in :attr:`dtype` on ``device``'s type; a no-op context for ``"32"``."""
        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(device_type=_device_type(device), dtype=self.dtype)

    def grad_scaler(self, device: torch.device | str) -> torch.amp.GradScaler | None:
        """A fresh loss scaler for one optimiser on ``device`` for ``"16-mixed"``; None otherwise (float32 and
        bfloat16 have the range that float16 gradients lack)."""
        if self.name != "16-mixed":
            return None
        return torch.amp.GradScaler(_device_type(device))


def autocast_off(device: torch.device | str) -> AbstractContextManager[object]:
    """Autocast disabled on ``device``'s type, for a float32 island inside an autocast region (nothing to
    disable on a device type without autocast, e.g. ``meta``)."""
    kind = _device_type(device)
    if torch.amp.is_autocast_available(kind):
        return torch.autocast(device_type=kind, enabled=False)
    return contextlib.nullcontext()


def _norm_inputs(x: Tensor, weight: Tensor | None, bias: Tensor | None
                 ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``x``, ``weight`` and ``bias`` in one dtype of at least float32: a bfloat16 or float16 input is taken to
    its weights' float32; float32 and float64 ones stay as they are."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    if weight is not None:
        dtype = torch.promote_types(dtype, weight.dtype)
    return x.to(dtype), None if weight is None else weight.to(dtype), None if bias is None else bias.to(dtype)


class Float32LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` with float32 statistics and output under autocast on every device (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        # float32 statistics and output, which in the post-LN transformer is the residual stream itself
        # (magvit.transformer), otherwise rounded to bfloat16 after every block
        x, weight, bias = _norm_inputs(x, self.weight, self.bias)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class Float32GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with float32 statistics and output under autocast on every device (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        # float32 statistics and output, as CUDA's autocast runs group_norm: the swish that follows works on
        # unrounded values, and the next convolution's input is rounded once, by autocast
        x, weight, bias = _norm_inputs(x, self.weight, self.bias)
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)
