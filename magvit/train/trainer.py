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

Precision (``trainer.precision``, :class:`~magvit.precision.Precision`): each phase's forward pass and loss
run under autocast, the backward pass outside it; weights and optimiser states stay float32. Under
``16-mixed`` every phase has its own loss scaler: the loss is scaled before the backward pass and the
gradients unscaled before the norm. There a non-finite gradient norm with finite losses is the scale
overflowing, not a divergence: that phase stands still for the step (its scaler skips the optimiser step and
lowers the scale; no schedule or EMA update), the other phases update, the step advances and nothing is
counted. A non-finite loss is a divergence in every precision. The scalers' states are checkpointed.

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
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.experimental import implicit_replication
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from magvit import checkpoint as ckpt
from magvit.data.atomic import atomic_path
from magvit.errors import MagvitError
from magvit.precision import Precision
from magvit.train import sharding
from magvit.train.distributed import DistInfo, all_ranks_true, mean_across_ranks, pooled_means
from magvit.train.fit_config import setting_default
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
        # The EMA copy is taken from the plain module, and sharded like it, so that its update pairs shards.
        self.ema = (
            AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(spec.ema_decay), use_buffers=True)
            if spec.ema_decay is not None
            else None
        )
        self.sharded = info.distributed and cfg.strategy == "fsdp" and spec.shardable
        self.ddp: DistributedDataParallel | None = None
        if self.sharded:  # in place: the module's parameters become shards (DTensors)
            sharding.shard(self.module)
            if self.ema is not None:
                sharding.shard(self.ema.module)
        elif info.distributed:
            self.ddp = DistributedDataParallel(
                self.module, device_ids=[info.device] if info.device.type == "cuda" else None)
        wrapped: nn.Module = self.ddp if self.ddp is not None else self.module
        self.model: nn.Module = torch.compile(wrapped) if cfg.compile else wrapped
        self.view = ModelView(self.model, self.module)
        self.optimizer = make_optimizer(self.module, spec.optim)
        self.scheduler = make_scheduler(self.optimizer, spec.optim.warmup_steps, cfg.max_steps)
        # The configured hyperparameters: loading an optimiser and schedule state would replace them by the
        # checkpoint's, so that a changed learning rate on resume would silently not apply.
        self.configured = [{k: v for k, v in g.items() if k not in ("params", "lr")}
                           for g in self.optimizer.param_groups]
        self.base_lrs = list(self.scheduler.base_lrs)

    def gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager[None]:
        """Context of one micro-batch's backward: gradients are reduced across processes only when ``sync``
        (the last micro-batch of a step), accumulated locally before."""
        if self.sharded:
            self.module.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        return self.ddp.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext()

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
        self.precision = Precision(cfg.precision)
        # 16-mixed: one loss scaler per phase, so that an overflow skips only its own phase (module docstring)
        self.scalers = {p.spec.name: scaler for p in self.phases
                        if (scaler := self.precision.grad_scaler(info.device)) is not None}
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
        """The single-file checkpoint (``fsdp`` runs write it at their last step, from :attr:`sharded_path`)."""
        return self.out / "last.pt"

    @property
    def sharded_path(self) -> Path:
        """The sharded checkpoint of an ``fsdp`` run (:mod:`magvit.train.sharding`)."""
        return self.out / "last.dcp"

    @property
    def sharded(self) -> bool:
        return any(p.sharded for p in self.phases)

    def _rng(self) -> dict[str, torch.Tensor]:
        return {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}

    def _rng_of_ranks(self) -> list[dict[str, torch.Tensor]]:
        """Every rank's RNG states (a collective under torchrun): each rank draws its own masks and dropout."""
        if not self.info.distributed:
            return [self._rng()]
        out: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(out, self._rng())
        return out

    def _plain_state(self, rng_ranks: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Everything a checkpoint holds besides module weights and optimiser statistics."""
        return {
            "stage": self.stage.name,
            "model_config": self.stage.model_config(),
            "run_config": self.run_config,
            "step": self.step,
            "data": attrs.asdict(self.position),
            "schedulers": {p.spec.name: p.scheduler.state_dict() for p in self.phases},
            "ema_steps": {p.spec.name: p.ema.n_averaged for p in self.phases if p.ema is not None},
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
            "world_size": self.info.world_size,
            "extra": self.stage.extra_state(),
            "nonfinite_skipped": self.nonfinite_skipped,
            "grad_scalers": {name: scaler.state_dict() for name, scaler in self.scalers.items()},
        }

    def state(self, rng_ranks: list[dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
        """The single-file checkpoint (``rng_ranks``: every rank's RNG states, default this process's)."""
        return {
            **self._plain_state(rng_ranks or [self._rng()]),
            "models": {p.spec.name: p.module.state_dict() for p in self.phases},
            "ema": {p.spec.name: p.ema.module.state_dict() for p in self.phases if p.ema is not None},
            "optimizers": {p.spec.name: p.optimizer.state_dict() for p in self.phases},
        }

    def _sharded_tensors(self) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """This rank's shards of the weights, EMA weights and optimiser statistics, and the optimisers'
        parameter groups (plain data), in ``torch.distributed.checkpoint.state_dict``'s name-keyed layout."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        tensors: dict[str, Any] = {"models": {}, "ema": {}, "optimizers": {}}
        groups: dict[str, list[dict[str, Any]]] = {}
        for p in self.phases:
            name = p.spec.name
            tensors["models"][name] = get_model_state_dict(p.module)
            if p.ema is not None:
                tensors["ema"][name] = get_model_state_dict(p.ema.module)
            optim = get_optimizer_state_dict(p.module, p.optimizer)
            tensors["optimizers"][name] = {"state": optim["state"]}
            groups[name] = optim["param_groups"]
        return tensors, groups

    def _kept(self) -> str:
        """What out_dir holds after a failure (for error messages)."""
        if self.saved_step is None:
            return "no checkpoint of this run was written"
        return f"the last good checkpoint {self.checkpoint_path} (step {self.saved_step}) is kept"

    def save(self, final: bool = False) -> None:
        """Write the checkpoint, refusing weights that are not finite (checked on every rank's weights).

        ``ddp`` and single-process runs: ``last.pt`` (rank 0). ``fsdp`` runs: ``last.dcp/`` (every rank its
        shards), and at the ``final`` step also its consolidation ``last.pt``.
        """
        self._check_finite_weights()
        rng_ranks = self._rng_of_ranks()
        try:
            if self.sharded:
                tensors, groups = self._sharded_tensors()
                plain = {**self._plain_state(rng_ranks), "param_groups": groups,
                         "sharded": sharding.flatten_layout(tensors)}
                sharding.save_sharded(tensors, plain, self.sharded_path, self.info.rank)
                if final and self.info.is_main:
                    ckpt.save_atomic(sharding.consolidate(self.sharded_path), self.checkpoint_path)
            elif self.info.is_main:
                ckpt.save_atomic(self.state(rng_ranks), self.checkpoint_path)
        except OSError as exc:
            raise MagvitError(f"step {self.step}: could not write the checkpoint ({exc}); {self._kept()}") from None
        self.saved_step = self.step

    def _check_finite_weights(self) -> None:
        bad: tuple[str, str, list[str]] | None = None
        for p in self.phases:
            parts = [("weights", p.module)] + ([("EMA weights", p.ema.module)] if p.ema is not None else [])
            for what, module in parts:
                local = {k: v.to_local() if isinstance(v, DTensor) else v for k, v in module.state_dict().items()}
                keys = ckpt.nonfinite_keys(local)
                if keys and bad is None:
                    bad = (p.spec.name, what, keys)
        if all_ranks_true(bad is None, self.info):
            return
        detail = (f"the {bad[0]} {bad[1]} are not finite (NaN or inf in {len(bad[2])} tensors, e.g. {bad[2][0]})"
                  if bad is not None else "the weights of another rank are not finite")
        raise MagvitError(f"step {self.step}: {detail}, so no checkpoint was written; {self._kept()}. The run "
                          "diverged: lower the learning rate")

    def resume(self, path: str | Path | None = None, *, accept_changes: bool = False) -> bool:
        """Load ``path`` (default: ``out_dir/last.pt``, or ``out_dir/last.dcp`` for an ``fsdp`` run); returns
        False when there is nothing to resume.

        Args:
            accept_changes: continue even when this run's config differs from the checkpoint's in settings
                that change what the run computes (:func:`changed_settings`), or in its number of processes
                (each draws its own random numbers and reads its own share of the data); the changes are
                printed and appended to ``out_dir/resume_overrides.log``. Without it such a resume is refused.
        """
        folder: Path | None = None
        if path is None and self.sharded:
            path = folder = sharding.resume_folder(self.sharded_path)
            if folder is None:
                if self.checkpoint_path.exists():
                    raise MagvitError(f"{self.out} holds last.pt but no sharded checkpoint (last.dcp): it was "
                                      "written by a ddp or single-process run; resume it with --trainer.strategy ddp")
                return False
            state = sharding.load_plain(folder)
        else:
            path = Path(path) if path is not None else self.checkpoint_path
            if not path.exists():
                if sharding.resume_folder(self.sharded_path) is not None:
                    raise MagvitError(f"{self.out} holds the sharded checkpoint of an fsdp run (last.dcp) but no "
                                      "last.pt: resume with --trainer.strategy fsdp, or write last.pt with "
                                      f"`magvit consolidate {self.sharded_path}`")
                return False
            state = ckpt.load(path, map_location=self.info.device)
        if state.get("stage") != self.stage.name:
            raise MagvitError(f"{path} is a {state.get('stage')} checkpoint, but this run trains the {self.stage.name}")
        changes = changed_settings(state.get("run_config") or {}, self.run_config)
        if state.get("world_size", self.info.world_size) != self.info.world_size:
            changes.append(("processes", state["world_size"], self.info.world_size))
        if changes and not accept_changes:
            raise MagvitError(
                f"{path} was written with other settings that change what the run computes: "
                f"{format_changes(changes)}; resume with the checkpoint's settings, or pass --resume_override "
                "to continue with the new ones"
            )
        try:
            if folder is not None:
                self._load_shards(state, folder)
            self._load_state(state, weights=folder is None)
        except MagvitError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            # A checkpoint edited by hand or written by something else: its parts are not what `fit` saves.
            detail = f"missing entry {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise MagvitError(f"{path} is not a complete {self.stage.name} training checkpoint ({detail}); "
                              "resume only from a last.pt written by `magvit fit`") from None
        self.saved_step = self.step if path in (self.checkpoint_path, folder) else None
        if self.info.is_main:
            if changes:
                self._record_changes(changes)
            drop_metrics_after(self.out / "metrics.csv", self.step)
        return True

    def _load_shards(self, state: dict[str, Any], folder: Path) -> None:
        """Weights, EMA weights and optimiser statistics of a sharded checkpoint, into this run's shards."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        tensors, _ = self._sharded_tensors()
        sharding.load_tensors(tensors, folder)
        for p in self.phases:
            name = p.spec.name
            set_model_state_dict(p.module, tensors["models"][name])
            if p.ema is not None:
                set_model_state_dict(p.ema.module, tensors["ema"][name])
            optim = {"state": tensors["optimizers"][name]["state"], "param_groups": state["param_groups"][name]}
            set_optimizer_state_dict(p.module, p.optimizer, optim)

    def _load_state(self, state: dict[str, Any], weights: bool = True) -> None:
        """Schedules, EMA step counts, step, data position and RNG states of a checkpoint, and with ``weights``
        (a single-file checkpoint) its weights, EMA weights and optimisers."""
        for p in self.phases:
            if weights:
                ckpt.load_module_state(p.module, state["models"][p.spec.name], f"{p.spec.name} weights")
                p.optimizer.load_state_dict(state["optimizers"][p.spec.name])
            p.scheduler.load_state_dict(state["schedulers"][p.spec.name])
            p.use_configured_hyperparameters()
            if p.ema is not None:
                if weights:
                    ckpt.load_module_state(p.ema.module, state["ema"][p.spec.name], f"{p.spec.name} EMA weights")
                p.ema.n_averaged.copy_(state["ema_steps"][p.spec.name])
        self.step = int(state["step"])
        self.position = DataPosition(**state["data"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        rng = ranks[self.info.rank] if len(ranks) == self.info.world_size else ranks[0]
        torch.set_rng_state(rng["torch"].cpu())
        self.generator.set_state(rng["generator"].cpu())
        self.stage.load_extra_state(state["extra"])
        self.nonfinite_skipped = int(state.get("nonfinite_skipped", 0))
        for name, scaler in self.scalers.items():
            saved = (state.get("grad_scalers") or {}).get(name)
            if saved is not None:  # a checkpoint of a run without loss scaling: the scaler starts afresh
                scaler.load_state_dict(saved)

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
        scaler = self.scalers.get(phase.spec.name)
        logs: dict[str, float] = {}
        bad_loss: float | None = None
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            with phase.gradient_sync(last):
                with self.precision.autocast(self.info.device):  # forward and loss; the backward runs outside
                    loss, part = self.stage.loss(phase.spec.name, phase.view, batch,
                                                 StepContext(self.step, self.generator, i))
                if bad_loss is None and not bool(torch.isfinite(loss.detach()).all()):
                    bad_loss = float(loss.detach().float().sum())
                scaled = loss / len(micro) if scaler is None else scaler.scale(loss / len(micro))
                scaled.backward()  # also when not finite: DDP reduces the gradients of every rank
            for k, v in part.items():
                logs[k] = logs.get(k, 0.0) + v / len(micro)
        name = phase.spec.name
        if scaler is not None:  # the norm, its check and the clipping see the true gradients
            scaler.unscale_(phase.optimizer)
        # The total norm is computed even without clipping: it is how a non-finite gradient is seen.
        norm = torch.nn.utils.get_total_norm([p.grad for p in phase.module.parameters() if p.grad is not None])
        if isinstance(norm, DTensor):  # sharded gradients: the norm is already reduced over the shards
            norm = norm.full_tensor()
        if bad_loss is not None:
            return logs, f"{name} loss = {bad_loss}"
        if not bool(torch.isfinite(norm)):
            if scaler is not None:  # the scale overflowed: the scaler skips this phase's update (module docstring)
                return logs, None
            return logs, f"{name} gradient norm = {float(norm)}"
        if phase.spec.optim.grad_clip > 0:
            with implicit_replication():  # sharded gradients take the (plain) total norm as replicated
                torch.nn.utils.clip_grads_with_norm_(phase.module.parameters(), phase.spec.optim.grad_clip, norm)
            logs[f"{name}/grad_norm"] = float(norm)
        return logs, None

    def _update(self, phase: _Phase) -> dict[str, float]:
        """Optimiser, schedule and EMA update of ``phase`` from its accumulated gradients (none of them when its
        loss scaler found the gradients overflowed)."""
        name = phase.spec.name
        scaler = self.scalers.get(name)
        logs: dict[str, float] = {}
        stepped = True
        if scaler is None:
            phase.optimizer.step()
        else:
            scale = scaler.get_scale()
            scaler.step(phase.optimizer)  # no optimiser step when unscale_ found a non-finite gradient
            scaler.update()  # which then lowers the scale: that is how the skip shows
            logs[f"{name}/grad_scale"] = scaler.get_scale()
            stepped = scaler.get_scale() >= scale
        if stepped:
            phase.scheduler.step()
            if phase.ema is not None:
                phase.ema.update_parameters(phase.module)
        logs[f"{name}/lr"] = phase.scheduler.get_last_lr()[0]
        return logs

    def _skip_step(self, problems: list[str]) -> None:
        """Count a skipped step; warn at the first; stop after ``max_nonfinite_steps`` in a row."""
        for scaler in self.scalers.values():  # end each scaler's step with its scale and growth count unchanged
            scaler.update(new_scale=scaler.get_scale())
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
                    self.save(final=self.step == cfg.max_steps)
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
    "model.init_args.activation_checkpointing",  # recomputes activations: the same values and gradients
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
    configs. A setting one of them lacks counts as its default (:func:`~magvit.train.fit_config.setting_default`:
    a config written before the setting existed ran with it), or as None (an unset option) when it has none.
    Empty when ``old`` was not recorded."""
    if not old:
        return []
    a, b = _flatten(old), _flatten(new)

    def value(flat: dict[str, Any], key: str) -> Any:
        if key in flat:
            return flat[key]
        try:
            return setting_default(new, key)
        except KeyError:
            return None

    keys = sorted((set(a) | set(b)) - FREE_SETTINGS)
    return [(k, value(a, k), value(b, k)) for k in keys if value(a, k) != value(b, k)]


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
