"""What the shared trainer needs from a training stage (tokenizer or transformer).

A stage declares its *phases* -- one optimiser each (the tokenizer has a generator and a discriminator
phase, reference 4.6-4.8; the transformer has one, reference 5.4) -- and computes each phase's loss on a
batch. The trainer owns everything else: DDP wrapping, optimisers and schedules, accumulation, clipping,
EMA, logging, checkpoints and resumption.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs
import torch
from torch import Tensor, nn

from magvit.train.optim import OptimConfig


@attrs.frozen
class PhaseSpec:
    """One optimised module.

    Attributes:
        name: phase name, also the checkpoint key ("generator", "discriminator", "transformer").
        module: the trainable module; the trainer wraps it in DDP under torchrun.
        optim: optimiser and schedule settings.
        ema_decay: keep an EMA copy of ``module`` with this decay (None: no EMA).
    """

    name: str
    module: nn.Module
    optim: OptimConfig
    ema_decay: float | None = None


@attrs.frozen
class StepContext:
    """Per-step information passed to :meth:`Stage.loss`."""

    step: int
    generator: torch.Generator
    micro_batch: int = 0


@runtime_checkable
class Stage(Protocol):
    name: str

    def phases(self) -> list[PhaseSpec]:
        """The phases, in the order they run within one step."""
        ...

    def loss(self, phase: str, model: nn.Module, batch: Any, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        """Loss of ``phase`` on ``batch``; ``model`` is the phase's (possibly DDP-wrapped) module."""
        ...

    def model_config(self) -> dict[str, Any]:
        """Plain-data description from which :func:`magvit.train.build_models` rebuilds the models."""
        ...

    def extra_state(self) -> dict[str, Any]:
        """Stage state beyond module weights (e.g. LeCam EMAs) for the checkpoint."""
        ...

    def load_extra_state(self, state: dict[str, Any]) -> None:
        ...

    def samples(self, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """A few videos ``[B, 3, T, H, W]`` to write as periodic samples (name -> video)."""
        ...
