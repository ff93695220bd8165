"""The shared trainer: one loop for both MAGVIT stages, single process or under ``torchrun`` (DDP).

Per step: draw ``grad_accum`` micro-batches; for each phase of the stage (the tokenizer: generator then
discriminator; the transformer: one) zero the grads, accumulate the micro-batch losses (DDP's
``no_sync`` on all but the last) and clip the global gradient norm; then, if every loss and gradient norm
of every phase (on every rank) is finite, step each phase's optimiser and warm-up + cosine schedule and
update its EMA. Then log, write samples and checkpoint. A logged row holds the step's values (averaged
over micro-batches and ranks) and the means the stage kept over the whole log interval
(:meth:`~magvit.train.stage.Stage.pop_interval_sums`, e.g. each task's loss).

Divergence: a step with a non-finite loss or gradient is skipped for all phases (no optimiser, schedule
or EMA update, the step count does not advance), warned about once and counted (``nonfinite_skipped`` in
``metrics.csv``); ``max_nonfinite_steps`` skips in a row stop the run with an error. A checkpoint whose
weights are not finite is never written, so ``last.pt`` always holds the last good state.

Resumption: the checkpoint holds weights, optimisers, schedules, EMAs, the step, the RNG states and the
data position (epoch, batches consumed). The data stream of an epoch is a deterministic function of
(seed, epoch), so a resumed run skips the consumed batches and reaches the same losses as an
uninterrupted run. The checkpoint also holds the run's config: a resume whose settings would change
what the run computes is refused unless the changes are accepted (``--resume_override``), and then they
take effect (a changed learning rate is not overwritten by the checkpoint's) and are recorded. Rows of
``metrics.csv`` after the resumed step are dropped, since the resumed run logs those steps again.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
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

from magvit import checkpoint as ckpt
from magvit.data.atomic import atomic_path
from magvit.errors import MagvitError
from magvit.train.distributed import DistInfo, all_ranks_true, mean_across_ranks, pooled_means
from magvit.train.optim import make_optimizer, make_scheduler
from magvit.train.settings import TrainerConfig
from magvit.train.stage import PhaseSpec, Stage, StepContext
from magvit.visualize import save_video_grid


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
        # The configured hyperparameters: loading an optimiser and schedule state would replace them by the
        # checkpoint's, so that a changed learning rate on resume would silently not apply.
        self.configured = [{k: v for k, v in g.items() if k not in ("params", "lr")}
                           for g in self.optimizer.param_groups]
        self.base_lrs = list(self.scheduler.base_lrs)
        self.ema = (
            AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(spec.ema_decay), use_buffers=True)
            if spec.ema_decay is not None
            else None
        )

    def use_configured_hyperparameters(self) -> None:
        """After loading a checkpoint's optimiser and schedule: this run's lr, betas and weight decay, at the
        loaded schedule position (identical values when the settings did not change)."""
        for group, configured in zip(self.optimizer.param_groups, self.configured, strict=True):
            group.update(configured)
        sched = self.scheduler
        sched.base_lrs = list(self.base_lrs)
        lrs = [base * lam(sched.last_epoch) for lam, base in zip(sched.lr_lambdas, sched.base_lrs, strict=True)]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        sched._last_lr = lrs


class Trainer:
    """Runs a :class:`~magvit.train.stage.Stage` on a data stream.

    Args:
        stage: the tokenizer or transformer stage.
        data: ``epoch -> iterable of batches`` (:class:`~magvit.batch.ClipBatch` for the built-in stages; a
            batch's ``len`` is its number of clips, logged as ``clips_per_s``); must be deterministic in
            ``epoch`` for exact resumption.
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
        self.out = Path(cfg.out_dir)
        stage.to(info.device)  # frozen parts (e.g. the transformer stage's tokenizer)
        self.phases = [_Phase(spec, cfg, info) for spec in stage.phases()]
        self.step = 0
        self.position = DataPosition()
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + info.rank)
        torch.manual_seed(cfg.seed * 1000 + info.rank)
        self.history: list[dict[str, float]] = []
        self.nonfinite_skipped = 0  # steps skipped for a non-finite loss or gradient, over the whole run
        self.nonfinite_in_a_row = 0
        self.saved_step: int | None = None  # the step of the last good checkpoint in out_dir
        self._warned_nonfinite = False

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
            "nonfinite_skipped": self.nonfinite_skipped,
        }

    def _kept(self) -> str:
        """What out_dir holds after a failure (for error messages)."""
        if self.saved_step is None:
            return "no checkpoint of this run was written"
        return f"the last good checkpoint {self.checkpoint_path} (step {self.saved_step}) is kept"

    def save(self) -> None:
        """Write ``last.pt`` (rank 0), refusing weights that are not finite (every rank checks the same weights)."""
        self._check_finite_weights()
        if self.info.is_main:
            try:
                ckpt.save_atomic(self.state(), self.checkpoint_path)
            except OSError as exc:
                raise MagvitError(f"step {self.step}: could not write the checkpoint ({exc}); {self._kept()}") from None
        self.saved_step = self.step

    def _check_finite_weights(self) -> None:
        for p in self.phases:
            parts = [("weights", p.module)] + ([("EMA weights", p.ema.module)] if p.ema is not None else [])
            for what, module in parts:
                bad = ckpt.nonfinite_keys(module.state_dict())
                if bad:
                    raise MagvitError(
                        f"step {self.step}: the {p.spec.name} {what} are not finite (NaN or inf in {len(bad)} "
                        f"tensors, e.g. {bad[0]}), so no checkpoint was written; {self._kept()}. The run "
                        "diverged: lower the learning rate"
                    )

    def resume(self, path: str | Path | None = None, *, accept_changes: bool = False) -> bool:
        """Load ``path`` (default ``out_dir/last.pt``); returns False when there is nothing to resume.

        Args:
            accept_changes: continue even when this run's config differs from the checkpoint's in settings
                that change what the run computes (:func:`changed_settings`); the changes are printed and
                appended to ``out_dir/resume_overrides.log``. Without it such a resume is refused.
        """
        path = Path(path) if path is not None else self.checkpoint_path
        if not path.exists():
            return False
        state = ckpt.load(path, map_location=self.info.device)
        if state.get("stage") != self.stage.name:
            raise MagvitError(f"{path} is a {state.get('stage')} checkpoint, but this run trains the {self.stage.name}")
        changes = changed_settings(state.get("run_config") or {}, self.run_config)
        if changes and not accept_changes:
            raise MagvitError(
                f"{path} was written with other settings that change what the run computes: "
                f"{format_changes(changes)}; resume with the checkpoint's settings, or pass --resume_override "
                "to continue with the new ones"
            )
        try:
            self._load_state(state)
        except MagvitError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            # A checkpoint edited by hand or written by something else: its parts are not what `fit` saves.
            detail = f"missing entry {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise MagvitError(f"{path} is not a complete {self.stage.name} training checkpoint ({detail}); "
                              "resume only from a last.pt written by `magvit fit`") from None
        self.saved_step = self.step if path == self.checkpoint_path else None
        if self.info.is_main:
            if changes:
                self._record_changes(changes)
            drop_metrics_after(self.out / "metrics.csv", self.step)
        return True

    def _load_state(self, state: dict[str, Any]) -> None:
        """Weights, optimisers, schedules, EMAs, step, data position and RNG states of a checkpoint."""
        for p in self.phases:
            ckpt.load_module_state(p.module, state["models"][p.spec.name], f"{p.spec.name} weights")
            p.optimizer.load_state_dict(state["optimizers"][p.spec.name])
            p.scheduler.load_state_dict(state["schedulers"][p.spec.name])
            p.use_configured_hyperparameters()
            if p.ema is not None:
                ckpt.load_module_state(p.ema.module, state["ema"][p.spec.name], f"{p.spec.name} EMA weights")
                p.ema.n_averaged.copy_(state["ema_steps"][p.spec.name])
        self.step = int(state["step"])
        self.position = DataPosition(**state["data"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.generator.set_state(state["rng"]["generator"].cpu())
        self.stage.load_extra_state(state["extra"])
        self.nonfinite_skipped = int(state.get("nonfinite_skipped", 0))

    def _record_changes(self, changes: list[tuple[str, Any, Any]]) -> None:
        text = format_changes(changes)
        warnings.warn(f"resuming with changed settings: {text}", stacklevel=2)
        self.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        with (self.out / "resume_overrides.log").open("a", encoding="utf-8") as f:
            f.write(f"{stamp} resumed at step {self.step} with changed settings: {text}\n")

    # -- loop ---------------------------------------------------------------------------------
    def _gradients(self, phase: _Phase, micro: list[Any]) -> tuple[dict[str, float], str | None]:
        """Zero, accumulate and clip ``phase``'s gradients; returns its logs and what was not finite (or None)."""
        phase.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        bad_loss: float | None = None
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            sync = contextlib.nullcontext() if last or not self.info.distributed else phase.model.no_sync()
            with sync:
                loss, part = self.stage.loss(phase.spec.name, phase.view, batch, StepContext(self.step, self.generator, i))
                if bad_loss is None and not bool(torch.isfinite(loss.detach()).all()):
                    bad_loss = float(loss.detach().float().sum())
                (loss / len(micro)).backward()  # also when not finite: DDP reduces the gradients of every rank
            for k, v in part.items():
                logs[k] = logs.get(k, 0.0) + v / len(micro)
        name = phase.spec.name
        # The total norm is computed even without clipping: it is how a non-finite gradient is seen.
        norm = torch.nn.utils.get_total_norm([p.grad for p in phase.module.parameters() if p.grad is not None])
        if bad_loss is not None:
            return logs, f"{name} loss = {bad_loss}"
        if not bool(torch.isfinite(norm)):
            return logs, f"{name} gradient norm = {float(norm)}"
        if phase.spec.optim.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(phase.module.parameters(), phase.spec.optim.grad_clip, norm)
            logs[f"{name}/grad_norm"] = float(norm)
        return logs, None

    def _update(self, phase: _Phase) -> dict[str, float]:
        """Optimiser, schedule and EMA update of ``phase`` from its accumulated gradients."""
        phase.optimizer.step()
        phase.scheduler.step()
        if phase.ema is not None:
            phase.ema.update_parameters(phase.module)
        return {f"{phase.spec.name}/lr": phase.scheduler.get_last_lr()[0]}

    def _skip_step(self, problems: list[str]) -> None:
        """Count a skipped step; warn at the first; stop after ``max_nonfinite_steps`` in a row."""
        self.nonfinite_skipped += 1
        self.nonfinite_in_a_row += 1
        step = self.step + 1
        what = ", ".join(problems) or "on another rank"
        if self.info.is_main and not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(f"step {step}: non-finite loss or gradient ({what}); the step was skipped for every "
                          "phase (no optimiser, schedule or EMA update). Skipped steps are counted as "
                          "nonfinite_skipped in metrics.csv", stacklevel=2)
        if self.nonfinite_in_a_row >= self.cfg.max_nonfinite_steps:
            raise MagvitError(
                f"training stopped at step {step}: {self.nonfinite_in_a_row} steps in a row had a non-finite loss "
                f"or gradient ({what}), the run has diverged; {self._kept()}. Lower the learning rate, or raise "
                "trainer.max_nonfinite_steps"
            )

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
                parts, problems = [], []
                for phase in self.phases:
                    part, problem = self._gradients(phase, micro)
                    parts.append(part)
                    problems += [problem] if problem is not None else []
                if not all_ranks_true(not problems, self.info):
                    self._skip_step(problems)
                    continue
                logs: dict[str, float] = {}
                for phase, part in zip(self.phases, parts, strict=True):
                    logs.update(part)
                    logs.update(self._update(phase))
                self.nonfinite_in_a_row = 0
                self.step += 1
                clips += sum(len(b) for b in micro) * self.info.world_size
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    logs = mean_across_ranks(logs, self.info)
                    logs.update(pooled_means(self.stage.pop_interval_sums(), self.info))
                    elapsed = time.perf_counter() - t0
                    logs["clips_per_s"] = clips / max(elapsed, 1e-9)
                    logs["nonfinite_skipped"] = float(self.nonfinite_skipped)
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
            # Per-task losses stay in metrics.csv and TensorBoard: one per task would crowd the bar.
            loss_keys = [k for k in logs if k.endswith("loss") and not k.startswith("task/")]
            bar.set_postfix({k.split("/")[-1] if len(loss_keys) == 1 else k: f"{logs[k]:.4f}" for k in loss_keys}
                            | {"clips/s": f"{logs['clips_per_s']:.1f}"})

    def _write_samples(self, batch: Any) -> None:
        with torch.no_grad():
            videos = self.stage.samples(batch, torch.Generator().manual_seed(self.cfg.seed))
        for name, columns in videos.items():
            try:
                save_video_grid(columns, self.out / "samples" / f"step{self.step:07d}_{name}.gif")
            except Exception as exc:  # noqa: BLE001 - a failed preview must not stop training
                warnings.warn(f"could not write sample {name}: {exc}", stacklevel=2)


#: Settings (dotted ``run_config`` keys) that do not change what a run computes: logging, checkpoint cadence,
#: where it writes, the device, the divergence limit. Every other setting must match on resume.
FREE_SETTINGS = frozenset({
    "trainer.progress", "trainer.tensorboard", "trainer.log_every", "trainer.ckpt_every", "trainer.sample_every",
    "trainer.out_dir", "trainer.max_nonfinite_steps", "device", "resume", "resume_override",
})


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested config; empty dicts vanish (an empty options dict is no option)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith("__"):
            continue
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every setting outside :data:`FREE_SETTINGS` that differs between two run
    configs (a key one of them lacks counts as None: an unset option). Empty when ``old`` was not recorded."""
    if not old:
        return []
    a, b = _flatten(old), _flatten(new)
    keys = sorted((set(a) | set(b)) - FREE_SETTINGS)
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def format_changes(changes: list[tuple[str, Any, Any]]) -> str:
    def show(value: Any) -> str:
        return "unset" if value is None else value if isinstance(value, str) else json.dumps(value)

    return "; ".join(f"{key}: {show(old)} -> {show(new)}" for key, old, new in changes)


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep only the complete rows of ``metrics.csv`` up to ``step`` (atomic rewrite): a resumed run logs
    the later steps again, and a reader must not count them twice."""
    if not path.is_file():
        return
    lines = path.read_bytes().splitlines(keepends=True)
    if not lines or lines[0].rstrip(b"\r\n") != b"step,name,value":
        path.unlink()  # not even a complete header: the next log starts the file again
        return
    kept = [lines[0]] + [line for line in lines[1:] if _row_step(line) is not None and _row_step(line) <= step]
    if len(kept) < len(lines):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"".join(kept))


def _row_step(line: bytes) -> int | None:
    """The step of a complete ``step,name,value`` row (None for a row cut short by a kill)."""
    if not line.endswith(b"\n"):
        return None
    try:
        fields = next(csv.reader([line.decode("utf-8")]))
        return int(fields[0]) if len(fields) == 3 else None
    except (ValueError, UnicodeDecodeError, StopIteration, csv.Error):
        return None
