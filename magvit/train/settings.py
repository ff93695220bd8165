"""The settings records of ``magvit fit`` and their range checks, as ``attrs`` validators.

A setting out of range fails when its record is built -- from the command line or from Python -- with a
:class:`SettingError` naming the setting, the rule and the value, before anything runs or is written.

This module imports no torch: ``magvit fit --help`` builds its parser from these records alone. The records
are also importable from the modules that use them (``magvit.train.trainer.TrainerConfig``,
``magvit.train.data.DataConfig``, ``magvit.train.optim.OptimConfig``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

import attrs

from magvit.errors import InputError

Validator = Callable[[Any, Any, Any], None]


class SettingError(InputError):
    """A setting outside its range.

    Attributes:
        owner: the class that holds the setting (e.g. ``TrainerConfig``).
        setting: the attribute name (e.g. ``"grad_accum"``).
        rule: what the value must be (e.g. ``"must be >= 1"``).
        value: the refused value.
    """

    def __init__(self, owner: type, setting: str, rule: str, value: Any) -> None:
        self.owner, self.setting, self.rule, self.value = owner, setting, rule, value
        super().__init__(self.message(f"{owner.__name__}.{setting}"))

    def message(self, name: str) -> str:
        """The message with the setting called ``name`` (the command line names it by its flag)."""
        return f"{name} {self.rule}, got {self.value!r}"


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def at_least(low: float) -> Validator:
    """A number ``>= low`` (integers stay integers: the type annotation is checked by the parser)."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not (_number(value) and value >= low):
            raise SettingError(type(instance), attribute.name, f"must be >= {low}", value)

    return check


def positive_finite(instance: Any, attribute: Any, value: Any) -> None:
    """A finite number ``> 0`` (a learning rate)."""
    if not (_number(value) and math.isfinite(value) and value > 0):
        raise SettingError(type(instance), attribute.name, "must be a finite number > 0", value)


def non_negative_finite(instance: Any, attribute: Any, value: Any) -> None:
    """A finite number ``>= 0`` (a weight decay, a clipping norm where 0 means off)."""
    if not (_number(value) and math.isfinite(value) and value >= 0):
        raise SettingError(type(instance), attribute.name, "must be a finite number >= 0", value)


def unit_interval_pair(instance: Any, attribute: Any, value: Any) -> None:
    """Two numbers in ``[0, 1)`` (Adam's betas)."""
    try:
        ok = len(value) == 2 and all(_number(b) and 0 <= b < 1 for b in value)
    except TypeError:
        ok = False
    if not ok:
        raise SettingError(type(instance), attribute.name, "must be two numbers in [0, 1)", value)


def one_of(allowed: tuple[str, ...]) -> Validator:
    """One of the names in ``allowed``."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value not in allowed:
            raise SettingError(type(instance), attribute.name, f"must be one of {', '.join(allowed)}", value)

    return check


def is_bool(instance: Any, attribute: Any, value: Any) -> None:
    """True or false (not a truthy string or number)."""
    if not isinstance(value, bool):
        raise SettingError(type(instance), attribute.name, "must be true or false", value)


#: ``TrainerConfig.strategy`` values.
STRATEGIES = ("ddp", "fsdp")

#: ``TrainerConfig.precision`` values (:class:`magvit.precision.Precision`): float32 throughout, or float32
#: weights with bfloat16 or float16 autocast (float16 with loss scaling).
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


def in_unit_interval(owner: type, name: str, value: Any) -> None:
    """A decay in ``[0, 1)`` (an EMA decay), checked in a plain constructor."""
    if not (_number(value) and 0 <= value < 1):
        raise SettingError(owner, name, "must be in [0, 1)", value)


def with_activation_checkpointing(owner: type, options_name: str, options: dict[str, Any] | None,
                                  activation_checkpointing: Any) -> dict[str, Any]:
    """A stage's model ``options`` (``transformer_options``, ``tokenizer_options``) with its
    ``activation_checkpointing`` flag applied: True turns the model's option on, False leaves the options as
    they are; True with the option set to false in ``options`` is a contradiction and refused."""
    if not isinstance(activation_checkpointing, bool):
        raise SettingError(owner, "activation_checkpointing", "must be true or false", activation_checkpointing)
    merged = dict(options or {})
    if activation_checkpointing:
        if merged.get("activation_checkpointing", True) is not True:
            raise SettingError(owner, "activation_checkpointing",
                               f"contradicts {options_name}.activation_checkpointing "
                               f"({merged['activation_checkpointing']!r}); set one of them", True)
        merged["activation_checkpointing"] = True
    return merged


# -- the records -----------------------------------------------------------------------------------------


@attrs.frozen
class TrainerConfig:
    """Loop settings (optimiser settings live in each stage's :class:`PhaseSpec`).

    Attributes:
        max_steps: optimiser steps in the whole run (the cosine schedule decays to 0 at this step).
        grad_accum: micro-batches per optimiser step.
        log_every / ckpt_every / sample_every: intervals in steps (0 disables samples).
        out_dir: run folder: ``last.pt``, ``metrics.csv``, ``tb/``, ``samples/``.
        seed: seeds data order, masking and dropout (per rank offset for dropout and masking).
        progress: show a progress bar (rank 0 only).
        tensorboard: write TensorBoard logs when the package is installed.
        max_nonfinite_steps: stop after this many steps in a row with a non-finite loss or gradient (each
            is skipped); the last good checkpoint is kept.
        strategy: how ``torchrun`` processes share the model: ``ddp`` (a full replica per process, gradients
            all-reduced) or ``fsdp`` (PyTorch's FSDP2: parameters, gradients and optimiser state sharded per
            transformer block and tokenizer level; checkpoints are sharded, ``last.dcp/``). Single-process
            runs train the plain module either way.
        compile: run each trained module through ``torch.compile`` (the same losses within floating-point
            tolerance; the first steps pay the compilation).
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (:data:`PRECISIONS`): each phase's forward pass
            and loss run under autocast in that dtype (16-mixed with a loss scaler per phase); the weights and
            optimiser states stay float32.
    """

    max_steps: int = attrs.field(default=1000, validator=at_least(1))
    grad_accum: int = attrs.field(default=1, validator=at_least(1))
    log_every: int = attrs.field(default=10, validator=at_least(1))
    ckpt_every: int = attrs.field(default=500, validator=at_least(1))
    sample_every: int = attrs.field(default=0, validator=at_least(0))
    out_dir: str = "outputs/run"
    seed: int = 0
    progress: bool = True
    tensorboard: bool = True
    max_nonfinite_steps: int = attrs.field(default=10, validator=at_least(1))
    strategy: str = attrs.field(default="ddp", validator=one_of(STRATEGIES))
    compile: bool = attrs.field(default=False, validator=is_bool)
    precision: str = attrs.field(default="32", validator=one_of(PRECISIONS))

    def __attrs_post_init__(self) -> None:
        # A loss scaler decides from the gradients it holds; under fsdp each process holds only its shards, so
        # the processes could disagree about an overflow and skip different parts of one update.
        if self.strategy == "fsdp" and self.precision == "16-mixed":
            raise SettingError(TrainerConfig, "precision", "must not be 16-mixed with strategy fsdp (its loss "
                               "scaler would see one process's gradient shards only); use bf16-mixed",
                               self.precision)


@attrs.frozen
class DataConfig:
    """Where the training clips come from.

    Attributes:
        train: a shard folder (with ``meta.json``, as written by ``magvit data shards/synthetic``), a shard
            brace pattern, or a list of shard paths. Not read when the stage trains from token shards.
        batch_size: clips per micro-batch per process.
        num_workers: reader processes per training process (0 reads in the training process).
        shuffle_buffer: samples held for shuffling.
        resampled: draw shards with replacement (an endless stream cut into ``batches_per_epoch`` blocks);
            ``None`` means on under torchrun, where every rank must see the same number of batches.
        batches_per_epoch: batches per epoch in resampled mode (default 1000).
        seed: seed of the data order.
    """

    train: str = "data/synthetic/train"
    batch_size: int = attrs.field(default=8, validator=at_least(1))
    num_workers: int = attrs.field(default=0, validator=at_least(0))
    shuffle_buffer: int = attrs.field(default=1000, validator=at_least(1))
    resampled: bool | None = None
    batches_per_epoch: int | None = attrs.field(default=None, validator=attrs.validators.optional(at_least(1)))
    seed: int = 0


@attrs.frozen
class OptimConfig:
    """One optimiser. Defaults are the transformer's (``maskgvt_ucf101_config.py``); the tokenizer uses
    ``betas=(0.0, 0.99), weight_decay=0.0`` (``vqgan2d_ucf101_config.py``)."""

    lr: float = attrs.field(default=1e-4, validator=positive_finite)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.96), validator=unit_interval_pair)
    weight_decay: float = attrs.field(default=0.045, validator=non_negative_finite)
    warmup_steps: int = attrs.field(default=5000, validator=at_least(0))
    grad_clip: float = attrs.field(default=1.0, validator=non_negative_finite)  # 0: no clipping
