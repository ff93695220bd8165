"""The shared trainer: one loop for both MAGVIT stages, single process or under ``torchrun`` (DDP).

Per step: draw ``grad_accum`` micro-batches; for each phase of the stage (reference 4.6: generator then
discriminator; reference 5.4: transformer) zero the grads, accumulate the micro-batch losses (DDP's
``no_sync`` on all but the last), clip the global gradient norm, step the optimiser and the warm-up +
cosine schedule, update the EMA. Then log, write samples and checkpoint.

Resumption: the checkpoint holds weights, optimisers, schedules, EMAs, the step, the RNG states and the
data position (epoch, batches consumed). The data stream of an epoch is a deterministic function of
(seed, epoch), so a resumed run skips the consumed batches and reaches the same losses as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from magvit.malloc import keep_freed_memory
from magvit.train import checkpoint as ckpt
from magvit.train.distributed import DistInfo, mean_across_ranks
from magvit.train.optim import make_optimizer, make_scheduler
from magvit.train.stage import PhaseSpec, Stage, StepContext


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
    """

    max_steps: int = 1000
    grad_accum: int = 1
    log_every: int = 10
    ckpt_every: int = 500
    sample_every: int = 0
    out_dir: str = "outputs/run"
    seed: int = 0
    progress: bool = True
    tensorboard: bool = True


@attrs.define
class DataPosition:
    epoch: int = 0
    index: int = 0


class ModelView:
    """What a stage's loss receives: calls go through the (DDP-)wrapped model, attribute reads (``vocab``,
    ``num_tokens``, ...) reach the underlying module, which DDP does not forward."""

    def __init__(self, wrapped: nn.Module, module: nn.Module) -> None:
        self._wrapped, self._module = wrapped, module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class _Phase:
    def __init__(self, spec: PhaseSpec, cfg: TrainerConfig, info: DistInfo) -> None:
        self.spec = spec
        self.module = spec.module.to(info.device)
        self.model: nn.Module = (
            DistributedDataParallel(self.module, device_ids=[info.device] if info.device.type == "cuda" else None)
            if info.distributed
            else self.module
        )
        self.view = ModelView(self.model, self.module)
        self.optimizer = make_optimizer(self.module, spec.optim)
        self.scheduler = make_scheduler(self.optimizer, spec.optim.warmup_steps, cfg.max_steps)
        self.ema = (
            AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(spec.ema_decay), use_buffers=True)
            if spec.ema_decay is not None
            else None
        )


class Trainer:
    """Runs a :class:`~magvit.train.stage.Stage` on a data stream.

    Args:
        stage: the tokenizer or transformer stage.
        data: ``epoch -> iterable of batches``; must be deterministic in ``epoch`` for exact resumption.
        cfg: loop settings.
        info: distributed info from :func:`magvit.train.distributed.setup`.
        run_config: the full config (plain data) saved in every checkpoint.
    """

    def __init__(
        self,
        stage: Stage,
        data: Callable[[int], Iterable[Any]],
        cfg: TrainerConfig,
        info: DistInfo = DistInfo(),
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.stage, self.data, self.cfg, self.info = stage, data, cfg, info
        self.run_config = run_config or {}
        if info.device.type == "cpu":
            keep_freed_memory()  # reuse each step's large temporaries instead of re-faulting them (malloc.py)
        self.out = Path(cfg.out_dir)
        stage.to(info.device)  # frozen parts (e.g. the transformer stage's tokenizer)
        self.phases = [_Phase(spec, cfg, info) for spec in stage.phases()]
        self.step = 0
        self.position = DataPosition()
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + info.rank)
        torch.manual_seed(cfg.seed * 1000 + info.rank)
        self.history: list[dict[str, float]] = []

    # -- data ---------------------------------------------------------------------------------
    def _batches(self) -> Iterator[Any]:
        """Endless stream of batches starting at the saved data position."""
        while True:
            it = iter(self.data(self.position.epoch))
            for _ in range(self.position.index):  # skip what the interrupted run consumed
                next(it)
            empty = True
            for batch in it:
                empty = False
                self.position.index += 1
                yield batch
            if empty and self.position.index == 0:
                raise RuntimeError("the training data yielded no batch: check the shards and the batch size")
            self.position = DataPosition(self.position.epoch + 1, 0)

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "last.pt"

    def state(self) -> dict[str, Any]:
        return {
            "stage": self.stage.name,
            "model_config": self.stage.model_config(),
            "run_config": self.run_config,
            "step": self.step,
            "data": attrs.asdict(self.position),
            "models": {p.spec.name: p.module.state_dict() for p in self.phases},
            "ema": {p.spec.name: p.ema.module.state_dict() for p in self.phases if p.ema is not None},
            "optimizers": {p.spec.name: p.optimizer.state_dict() for p in self.phases},
            "schedulers": {p.spec.name: p.scheduler.state_dict() for p in self.phases},
            "ema_steps": {p.spec.name: p.ema.n_averaged for p in self.phases if p.ema is not None},
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            "extra": self.stage.extra_state(),
        }

    def save(self) -> None:
        if self.info.is_main:
            ckpt.save_atomic(self.state(), self.checkpoint_path)

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` (default ``out_dir/last.pt``); returns False when there is nothing to resume."""
        path = Path(path) if path is not None else self.checkpoint_path
        if not path.exists():
            return False
        state = ckpt.load(path, map_location=self.info.device)
        if state["stage"] != self.stage.name:
            from magvit.errors import MagvitError

            raise MagvitError(f"{path} is a {state['stage']} checkpoint, but this run trains the {self.stage.name}")
        for p in self.phases:
            ckpt.load_module_state(p.module, state["models"][p.spec.name], f"{p.spec.name} weights")
            p.optimizer.load_state_dict(state["optimizers"][p.spec.name])
            p.scheduler.load_state_dict(state["schedulers"][p.spec.name])
            if p.ema is not None:
                p.ema.module.load_state_dict(state["ema"][p.spec.name])
                p.ema.n_averaged.copy_(state["ema_steps"][p.spec.name])
        self.step = int(state["step"])
        self.position = DataPosition(**state["data"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.generator.set_state(state["rng"]["generator"].cpu())
        self.stage.load_extra_state(state["extra"])
        return True

    # -- loop ---------------------------------------------------------------------------------
    def _phase_step(self, phase: _Phase, micro: list[Any]) -> dict[str, float]:
        phase.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            sync = contextlib.nullcontext() if last or not self.info.distributed else phase.model.no_sync()
            with sync:
                loss, part = self.stage.loss(phase.spec.name, phase.view, batch, StepContext(self.step, self.generator, i))
                (loss / len(micro)).backward()
            for k, v in part.items():
                logs[k] = logs.get(k, 0.0) + v / len(micro)
        if phase.spec.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(phase.module.parameters(), phase.spec.optim.grad_clip)
            logs[f"{phase.spec.name}/grad_norm"] = float(norm)
        phase.optimizer.step()
        phase.scheduler.step()
        if phase.ema is not None:
            phase.ema.update_parameters(phase.module)
        logs[f"{phase.spec.name}/lr"] = phase.scheduler.get_last_lr()[0]
        return logs

    def fit(self) -> list[dict[str, float]]:
        """Train until ``max_steps``; returns the logged rows of this process."""
        cfg = self.cfg
        for p in self.phases:
            p.module.train()
        batches = self._batches()
        bar = self._progress()
        writer = self._tensorboard()
        t0, clips = time.perf_counter(), 0
        try:
            while self.step < cfg.max_steps:
                micro = [next(batches) for _ in range(cfg.grad_accum)]
                logs: dict[str, float] = {}
                for phase in self.phases:
                    logs.update(self._phase_step(phase, micro))
                self.step += 1
                clips += sum(_batch_size(b) for b in micro) * self.info.world_size
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    logs = mean_across_ranks(logs, self.info)
                    elapsed = time.perf_counter() - t0
                    logs["clips_per_s"] = clips / max(elapsed, 1e-9)
                    t0, clips = time.perf_counter(), 0
                    self._log(logs, writer, bar)
                if bar is not None:
                    bar.update(1)
                if cfg.sample_every and self.step % cfg.sample_every == 0 and self.info.is_main:
                    self._write_samples(micro[0])
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.max_steps:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return self.history

    # -- logging ------------------------------------------------------------------------------
    def _progress(self):
        if not (self.cfg.progress and self.info.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.cfg.max_steps, initial=self.step, desc=f"fit {self.stage.name}", dynamic_ncols=True)

    def _tensorboard(self):
        if not (self.cfg.tensorboard and self.info.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional; CSV logs are always written
            return None
        return SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1)

    def _log(self, logs: dict[str, float], writer, bar) -> None:
        row = {"step": float(self.step), **logs}
        self.history.append(row)
        if not self.info.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "name", "value"])
            for k, v in logs.items():
                w.writerow([self.step, k, f"{v:.6g}"])
        if writer is not None:
            for k, v in logs.items():
                writer.add_scalar(k, v, self.step)
        if bar is not None:
            loss_keys = [k for k in logs if k.endswith("loss")]
            bar.set_postfix({k.split("/")[-1] if len(loss_keys) == 1 else k: f"{logs[k]:.4f}" for k in loss_keys}
                            | {"clips/s": f"{logs['clips_per_s']:.1f}"})

    def _write_samples(self, batch: Any) -> None:
        from magvit.visualize import save_video_grid

        with torch.no_grad():
            videos = self.stage.samples(batch, torch.Generator().manual_seed(self.cfg.seed))
        for name, columns in videos.items():
            try:
                save_video_grid(columns, self.out / "samples" / f"step{self.step:07d}_{name}.gif")
            except Exception as exc:  # noqa: BLE001 - a failed preview must not stop training
                warnings.warn(f"could not write sample {name}: {exc}", stacklevel=2)


def _batch_size(batch: Any) -> int:
    """Clips in a batch: a video batch's first dimension, else ``len(batch)`` (token batches)."""
    video = batch if isinstance(batch, torch.Tensor) else getattr(batch, "video", None)
    return int(video.shape[0]) if video is not None else len(batch)
