"""What the shared trainer needs from a training stage (tokenizer or transformer).

A stage declares its *phases* -- one optimiser each (the tokenizer has a generator and a discriminator
phase, as the authors' ``videogvt/trainers/vqgan_trainer.py``; the transformer has one) -- and computes
each phase's loss on a batch. The trainer owns everything else: DDP wrapping, optimisers and schedules,
accumulation, clipping, EMA, logging, checkpoints and resumption.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import attrs

from magvit.errors import MagvitError
from magvit.train.settings import OptimConfig

if TYPE_CHECKING:  # annotations only: `magvit fit --help` builds its parser from Stage without torch
    import torch
    from torch import Tensor, nn


@attrs.frozen
class PhaseSpec:
    """One optimised module.

    Attributes:
        name: phase name, also the checkpoint key ("generator", "discriminator", "transformer").
        module: the trainable module; the trainer wraps it in DDP under torchrun.
        optim: optimiser and schedule settings.
        ema_decay: keep an EMA copy of ``module`` with this decay (None: no EMA).
        shardable: whether ``--trainer.strategy fsdp`` shards it; False keeps it data-parallel (DDP) under
            fsdp too, for a module its loss differentiates twice through (FSDP reshards a unit once its
            first backward has run, so a second backward through it finds its weights freed).
    """

    name: str
    module: nn.Module
    optim: OptimConfig
    ema_decay: float | None = None
    shardable: bool = True


@attrs.frozen
class StepContext:
    """Per-step information passed to :meth:`Stage.loss`.

    A step that the trainer skips (a non-finite loss or gradient) is computed again with the same ``step``,
    from ``micro_batch`` 0.
    """

    step: int
    generator: torch.Generator
    micro_batch: int = 0


class Stage(ABC):
    """Base class of a training stage; ``magvit fit`` takes any subclass as its ``model`` class_path."""

    name: str

    @abstractmethod
    def phases(self) -> list[PhaseSpec]:
        """The phases, in the order they run within one step.

        Every phase's loss and gradients of a step are computed before any phase's optimiser steps (from
        the weights at the start of the step), so that a step with a non-finite loss or gradient in any
        phase is skipped for all of them.
        """

    @abstractmethod
    def loss(self, phase: str, model: Any, batch: Any, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        """Loss of ``phase`` on ``batch``; calling ``model`` runs the phase's (possibly DDP-wrapped) module.

        ``batch`` is a :class:`~magvit.batch.ClipBatch` from the clip or token shards (or whatever the stage's
        own ``data(cfg, info)`` stream yields; the trainer counts its clips with ``len(batch)``).
        """

    @abstractmethod
    def model_config(self) -> dict[str, Any]:
        """Plain-data description from which the models are rebuilt (saved in every checkpoint)."""

    def check_data(self, clip_shape: tuple[int, int, int], num_classes: int, source: str) -> None:
        """Refuse training data this stage cannot use, at start (before anything is written).

        Args:
            clip_shape: ``(T, H, W)`` of the data's clips (from its ``meta.json``).
            num_classes: number of classes of the data (labels are ``0 .. num_classes - 1``).
            source: how the message names the data (its folder).
        """

    def to(self, device: torch.device) -> Stage:
        """Move frozen parts (not in any phase) to ``device``; phase modules are moved by the trainer."""
        return self

    def extra_state(self) -> dict[str, Any]:
        """Stage state beyond module weights (e.g. LeCam EMAs) for the checkpoint."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    def pop_interval_sums(self) -> dict[str, tuple[float, float]]:
        """``{log name: (sum, count)}`` accumulated since the previous call, and start again from zero.

        The trainer calls it on every rank at each log step and logs ``sum / count`` with both summed over
        ranks, for values a single step does not show (e.g. the loss of each task, when each step draws one
        task). Every rank must return the same names; a name with count 0 is not logged.
        """
        return {}

    def samples(self, batch: Any, generator: torch.Generator) -> dict[str, list[Tensor]]:
        """Periodic samples: name -> grid columns, videos ``[B, 3, T, H, W]`` (e.g. condition | output | truth)."""
        return {}


def check_clip_shape(clip_shape: tuple[int, int, int], frames: int, resolution: int, source: str) -> None:
    """The data's clips must be ``frames x resolution x resolution``: the model is built for that size."""
    if tuple(clip_shape) != (frames, resolution, resolution):
        t, h, w = clip_shape
        raise MagvitError(
            f"the clips of {source} are {t}x{h}x{w} (frames x height x width) but the model is configured for "
            f"{frames}x{resolution}x{resolution}; set model.init_args.frames and model.init_args.resolution to "
            "match the data, or write the data at the model's size"
        )


def check_num_classes(data_classes: int, model_classes: int, source: str) -> None:
    """A model that takes class labels needs an embedding for every label of the data."""
    if model_classes < data_classes:
        raise MagvitError(
            f"{source} has {data_classes} classes but model.init_args.num_classes is {model_classes}; set it to "
            f"at least {data_classes} (labels 0..{data_classes - 1} occur in the data)"
        )
