"""CPU kernels: the hand-written fast paths, and the one switch that decides which modules use them.

PyTorch's fused kernels serve CUDA well; on the CPU, MAGVIT trains and generates faster, or in less memory,
through code kept in this package:

* :mod:`magvit.kernels.dropout` -- BERT's hidden and attention dropouts (the authors'
  ``videogvt/models/simplified_bert.py``) with masks from 16-bit random draws, and attention dropout written
  out, because SDPA's fused CPU kernels refuse dropout;
* :mod:`magvit.kernels.conv` -- the tokenizer's lean inference route: channels-last buffers that already hold
  their padding, temporal slabs, 1x1 convolutions as one matmul;
* :mod:`magvit.kernels.malloc` -- glibc heap settings, applied by the ``magvit`` commands (never by a model or
  a pipeline, since they hold for the whole process).

Which implementation a module uses is decided once, from :func:`current`:

* a module reads the settings when it is built and keeps the answer as an attribute (as timm's
  ``use_fused_attn()`` in ``timm/layers/config.py``): :class:`~magvit.kernels.dropout.Dropout` and the
  transformer's ``SelfAttention`` keep ``cpu_dropout``, a tokenizer keeps ``lean_inference``;
* the lean inference route is turned on explicitly, for the duration of a call, by :func:`lean_route`, which
  a tokenizer's ``encode`` and ``decode`` enter (autograd off); training calls ``forward`` and never sees it.

No ``forward`` looks at the device or at the autograd state to pick an implementation.

The switch. ``MAGVIT_CPU_KERNELS`` (read once, at the first module built): ``1`` turns the dropouts and the lean
route on, ``0`` off (plain PyTorch everywhere); unset, the lean inference route is on and the CPU dropouts are on unless
CUDA is available (where ``F.dropout`` and SDPA's dropout are fused kernels). In code, :func:`configure` sets
the settings for modules built afterwards and :func:`override` does so within a ``with`` block::

    with magvit.kernels.override(cpu_dropout=False):
        model = MaskedTransformer.from_preset("B", ...)   # torch's dropout kernels, on any device

Either position computes the same function: the dropouts draw different random streams of the same
distribution, the inference routes agree up to float summation order (``tests/kernels/``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

import attrs
import torch
from torch import nn

from magvit.errors import InputError

__all__ = ["ENV_SWITCH", "KernelSettings", "LeanRoute", "configure", "current", "from_environment", "lean_route",
           "override"]

#: the environment variable of the switch: ``1`` both settings on, ``0`` both off, unset: the defaults
ENV_SWITCH = "MAGVIT_CPU_KERNELS"


@attrs.frozen
class KernelSettings:
    """Which implementation modules built under these settings use.

    Attributes:
        cpu_dropout: :class:`~magvit.kernels.dropout.Dropout` draws its masks with
            :func:`~magvit.kernels.dropout.dropout_keep_mask` and the transformer's attention dropout in
            training runs :func:`~magvit.kernels.dropout.attention_with_dropout`; False: ``F.dropout`` and
            ``scaled_dot_product_attention(dropout_p=...)``.
        lean_inference: a tokenizer's ``encode``/``decode`` run its blocks on the lean route
            (:mod:`magvit.kernels.conv`); False: the training route under ``torch.no_grad()``.
    """

    cpu_dropout: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    lean_inference: bool = attrs.field(validator=attrs.validators.instance_of(bool))


def from_environment(env: Mapping[str, str], cuda_available: bool) -> KernelSettings:
    """The settings ``env`` asks for through :data:`ENV_SWITCH` (see the module docstring)."""
    value = env.get(ENV_SWITCH)
    if value is None:
        return KernelSettings(cpu_dropout=not cuda_available, lean_inference=True)
    if value.strip() not in ("0", "1"):
        raise InputError(f"{ENV_SWITCH} must be 1 (CPU kernels on) or 0 (off), got {value!r}")
    on = value.strip() == "1"
    return KernelSettings(cpu_dropout=on, lean_inference=on)


_settings: KernelSettings | None = None


def current() -> KernelSettings:
    """The settings that modules built now use (from the environment until :func:`configure` sets them)."""
    global _settings
    if _settings is None:
        _settings = from_environment(os.environ, torch.cuda.is_available())
    return _settings


def configure(**changes: bool) -> KernelSettings:
    """Change the settings for modules built from now on (``cpu_dropout=``, ``lean_inference=``); returns the
    previous settings. Modules already built keep their choice."""
    unknown = sorted(set(changes) - set(attrs.fields_dict(KernelSettings)))
    if unknown:
        raise InputError(f"unknown kernel setting(s) {', '.join(unknown)}; the settings are "
                         f"{', '.join(attrs.fields_dict(KernelSettings))}")
    for name, value in changes.items():
        if not isinstance(value, bool):
            raise InputError(f"kernel setting {name} must be True or False, got {value!r}")
    global _settings
    previous = current()
    _settings = attrs.evolve(previous, **changes)
    return previous


@contextlib.contextmanager
def override(**changes: bool) -> Iterator[KernelSettings]:
    """:func:`configure` within a ``with`` block: modules built inside use the changed settings."""
    global _settings
    previous = configure(**changes)
    try:
        yield current()
    finally:
        _settings = previous


class LeanRoute:
    """Mixin of a module with a lean inference route: ``forward`` takes it while ``lean`` is True, which only
    :func:`lean_route` sets. The route writes into preallocated buffers, so it runs without autograd."""

    lean: bool = False


@contextlib.contextmanager
def lean_route(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run ``module`` without autograd and, if ``enabled``, every :class:`LeanRoute` block in it on its lean
    route, within the ``with`` block (a tokenizer's ``encode``/``decode``; its ``lean_inference`` is
    ``enabled``). The blocks' previous state is restored on exit, so calls nest."""
    blocks = [m for m in module.modules() if isinstance(m, LeanRoute)] if enabled else []
    before = [m.lean for m in blocks]
    with torch.no_grad():
        for m in blocks:
            m.lean = True
        try:
            yield
        finally:
            for m, was in zip(blocks, before):
                m.lean = was
