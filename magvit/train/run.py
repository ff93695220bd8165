"""One training run of a stage: what ``magvit fit`` and ``magvit demo --train`` call (:func:`fit`).

Before anything is written: the stage is checked against the data (:func:`magvit.train.data.make_data`), the
run folder is locked for this run (a second writer is refused), and on resume the checkpoint's settings are
compared with these (:meth:`magvit.train.trainer.Trainer.resume`). Under ``torchrun`` every rank calls
:func:`fit` with the same config; rank 0 writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

from magvit.errors import MagvitError
from magvit.train import distributed
from magvit.train.data import make_data
from magvit.train.fit_config import FitConfig
from magvit.train.trainer import Trainer

__all__ = ["FitResult", "fit"]


@attrs.frozen
class FitResult:
    """What a run did.

    Attributes:
        step: the step the run ended at.
        checkpoint: the run's checkpoint, ``trainer.out_dir/last.pt``.
        trained: False when a resumed run was already at ``max_steps`` (or beyond) and did nothing.
        is_main: whether this process is rank 0, the one that writes.
    """

    step: int
    checkpoint: Path
    trained: bool
    is_main: bool


def _existing_checkpoint(trainer: Trainer) -> Path | None:
    """A checkpoint already in the run folder, single-file or sharded."""
    for path in (trainer.checkpoint_path, trainer.sharded_path):
        if path.exists():
            return path
    return None


def fit(config: FitConfig) -> FitResult:
    """Train ``config.model`` until ``config.trainer.max_steps`` with the shared trainer.

    Raises:
        MagvitError: the data do not fit the stage, the run folder is held by another run, a checkpoint is
            already there without ``resume`` (or a resumed one has other settings without
            ``resume_override``), or training diverged.
    """
    info = distributed.setup(config.device)
    lock = None
    try:
        data = make_data(config.data, info, config.model)
        lock = distributed.lock_folder(config.trainer.out_dir, "run folder", info)
        trainer = Trainer(config.model, data, config.trainer, info, config.run_config)
        if config.resume and trainer.resume(accept_changes=config.resume_override):
            print(f"resuming from {trainer.checkpoint_path} at step {trainer.step}", file=sys.stderr)
            if trainer.step >= config.trainer.max_steps:
                return FitResult(trainer.step, trainer.checkpoint_path, trained=False, is_main=info.is_main)
        elif not config.resume and (existing := _existing_checkpoint(trainer)) is not None:
            raise MagvitError(
                f"{existing} already exists: pass --resume to continue that run, or set "
                "--trainer.out_dir to a new folder"
            )
        trainer.fit()
        return FitResult(trainer.step, trainer.checkpoint_path, trained=True, is_main=info.is_main)
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown()
