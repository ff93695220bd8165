"""Stage two: multi-task masked token modelling of the transformer over a frozen tokenizer.

As the authors' ``videogvt/trainers/maskgvt_trainer.py``: one task per step from a fixed shuffled cycle,
the real and the condition video tokenised together by the frozen EMA tokenizer, COMMIT inputs, weighted
label-smoothed CE. Optimiser (``videogvt/configs/maskgvt_ucf101_config.py``): AdamW lr 1e-4, betas
(0.9, 0.96), weight decay 0.045 on kernels, clip 1.0, 5000 warm-up steps then cosine.

Each step draws one task, so the loss of one task is logged (``task/<name>/loss``) as its mean over the
steps of the log interval that drew it (:meth:`TransformerStage.pop_interval_sums`); a task no step of the
interval drew is absent from that row.

Token shards (``token_shards``): the stage reads pre-tokenised shards (``magvit data tokenize``) instead
of clips; their batches carry the cached ground-truth and condition tokens of every cached task, which the
objective uses as they are (:meth:`~magvit.objective.MultiTaskObjective.tokens_for`): the loss is the same
as on the fly, without the two encoder passes. Tasks whose condition is random (``Task.deterministic``
False) are not cached: for their steps the stored clip is tokenised on the fly. The shards must have been made by the same tokenizer checkpoint (sha256),
for the same clip size, token rule and task arguments; anything else is refused at construction.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from magvit.batch import ClipBatch
from magvit.checkpoint import file_sha256
from magvit.config import part_config, part_spec, read_spec
from magvit.errors import MagvitError
from magvit.masking import warn_condition_coverage
from magvit.objective import MultiTaskObjective, ObjectiveConfig
from magvit.pipeline import MagvitPipeline, load_tokenizer, sampler_spec
from magvit.samplers.base import transformer_options as method_options
from magvit.tasks import build_tasks, transformer_prompts
from magvit.train.data import make_token_data
from magvit.train.optim import OptimConfig
from magvit.train.settings import in_unit_interval, with_activation_checkpointing
from magvit.train.stage import PhaseSpec, Stage, StepContext, check_clip_shape, check_num_classes
from magvit.train.token_cache import TokenMeta, read_token_meta
from magvit.transformer import MaskedTransformer


class _TaskLossSums:
    """Per-task loss sums and counts of the steps the trainer kept since the last :meth:`pop`.

    A step's losses wait until the step is known to be kept: a skipped step is computed again with the same
    step number (:class:`~magvit.train.stage.StepContext`), so its first micro-batch drops the earlier try,
    while a new step number (or :meth:`pop`, called after a kept step) keeps them. Counting micro-batches
    gives the mean of the per-step means, as each step has the same number of micro-batches and one task.
    """

    def __init__(self, tasks: list[str]) -> None:
        self.kept = {name: [0.0, 0] for name in tasks}
        self.step: int | None = None
        self.pending: list[tuple[str, float]] = []

    def add(self, task: str, loss: float, ctx: StepContext) -> None:
        if ctx.micro_batch == 0:
            if ctx.step != self.step:
                self._keep_pending()
            self.step, self.pending = ctx.step, []
        self.pending.append((task, loss))

    def _keep_pending(self) -> None:
        for task, loss in self.pending:
            self.kept[task][0] += loss
            self.kept[task][1] += 1
        self.pending = []

    def pop(self) -> dict[str, tuple[float, float]]:
        self._keep_pending()
        out = {f"task/{name}/loss": (total, float(count)) for name, (total, count) in self.kept.items()}
        self.kept = {name: [0.0, 0] for name in self.kept}
        return out


class TransformerStage(Stage):
    """The MAGVIT transformer stage.

    Args:
        tokenizer_checkpoint: tokenizer-stage checkpoint (``magvit fit`` with a tokenizer config); its EMA
            weights are the frozen tokenizer.
        preset: transformer size, ``tiny``, ``B`` or ``L``.
        num_classes: number of class labels of the data (0 for unlabelled data; class tasks need > 0).
        tasks: task names (``"all"``: every registered task) -- one model for all of them.
        task_options: per-task constructor arguments, e.g. ``{"fp": {"cond_frames": 5}}``.
        task_weights: sampling weight per task (default 1 each, as released).
        prompt_sharing: ``"paper"`` (a prompt per task), ``"code"`` (the authors' sharing) or ``"none"`` (no
            task prompt, as the authors' single-task models; the model then takes any task's condition).
        frames, resolution: clip size (must match the data and the tokenizer).
        objective: masking method, schedule, token rule, label smoothing, loss weights; the method also sets
            the architecture (causal for ``ar``, prefix condition for ``prefix``) and the sampler of
            :meth:`pipeline` and :meth:`samples`.
        optim: optimiser settings.
        ema_decay: keep an EMA of the transformer (None: off, as in the authors' code).
        transformer_options: overrides of the preset (e.g. ``{"dropout": 0.0}``).
        activation_checkpointing: recompute each transformer block's activations in the backward pass
            instead of keeping them (less memory, about one more forward pass per step, the same loss and
            gradients); sets ``transformer_options.activation_checkpointing``
            (:class:`~magvit.transformer.MaskedTransformer`), which is recorded in the checkpoint's config.
        seed: seeds the task cycle and the weight initialisation.
        token_shards: a token-shard folder (``magvit data tokenize``); when set, ``magvit fit`` trains from
            it and ``data.train`` is not read (``data``'s batch size, workers and shuffling still apply).
    """

    name = "transformer"

    def __init__(
        self,
        tokenizer_checkpoint: str,
        preset: str = "tiny",
        num_classes: int = 0,
        tasks: list[str] | str = "all",
        task_options: dict[str, dict[str, Any]] | None = None,
        task_weights: list[float] | None = None,
        prompt_sharing: str = "paper",
        frames: int = 16,
        resolution: int = 64,
        objective: ObjectiveConfig = ObjectiveConfig(),
        optim: OptimConfig = OptimConfig(),
        ema_decay: float | None = None,
        transformer_options: dict[str, Any] | None = None,
        seed: int = 0,
        token_shards: str | None = None,
        activation_checkpointing: bool = False,
    ) -> None:
        if ema_decay is not None:
            in_unit_interval(TransformerStage, "ema_decay", ema_decay)
        transformer_options = with_activation_checkpointing(TransformerStage, "transformer_options",
                                                            transformer_options, activation_checkpointing)
        self.tokenizer, self.tokenizer_spec = load_tokenizer(tokenizer_checkpoint)
        self.tokenizer_hash = file_sha256(tokenizer_checkpoint)
        self.tasks = build_tasks(tasks, prompt_sharing=prompt_sharing, options=task_options)
        class_tasks = [t.name for t in self.tasks if t.uses_class]
        if class_tasks and num_classes < 1:
            raise MagvitError(
                f"tasks {class_tasks} are class-conditional but num_classes is {num_classes}; set "
                "model.init_args.num_classes to the number of classes in the data, or drop those tasks"
            )
        grid = self.tokenizer.token_shape(frames, resolution, resolution)
        self.transformer = MaskedTransformer.from_preset(
            preset, codebook_size=self.tokenizer.codebook_size, num_classes=num_classes,
            prompts=transformer_prompts(self.tasks, prompt_sharing), num_tokens=math.prod(grid),
            **{"init_seed": seed, **method_options(objective.sampler()), **(transformer_options or {})},
        )
        self.objective = MultiTaskObjective(self.tokenizer, self.tasks, task_weights=task_weights, config=objective, seed=seed)
        self.frames, self.resolution = frames, resolution
        self.optim, self.ema_decay = optim, ema_decay
        self.objective_config = objective
        self.token_shards = token_shards
        self.token_meta: TokenMeta | None = None
        self._task_sums = _TaskLossSums([t.name for t in self.tasks])
        if token_shards is not None:
            self.token_meta = read_token_meta(token_shards)
            self._check_token_meta(self.token_meta, tokenizer_checkpoint)
        # After the refusals: a configuration that cannot run gets its error alone.
        warn_condition_coverage(self.tasks, self.tokenizer.downsample, (frames, resolution, resolution),
                                objective.token_rule)

    # -- token shards -------------------------------------------------------------------------
    @property
    def cached_tasks(self) -> list[str]:
        """Configured tasks whose tokens come from the token shards (the deterministic ones)."""
        return [t.name for t in self.tasks if t.deterministic] if self.token_meta is not None else []

    def _check_token_meta(self, meta: TokenMeta, checkpoint: str) -> None:
        """Refuse token shards that do not hold what this configuration would compute on the fly."""
        where = f"token shards {self.token_shards}"
        redo = (f"re-tokenise with `magvit data tokenize --tokenizer_checkpoint {checkpoint} --src CLIPS --out NEW` "
                "and the same tasks/task_options")
        if meta.tokenizer_sha256 != self.tokenizer_hash:
            raise MagvitError(f"{where}: tokenizer differs: they were made with a checkpoint of sha256 "
                              f"{meta.tokenizer_sha256[:12]}... ({meta.tokenizer_checkpoint}), this run uses "
                              f"{checkpoint} (sha256 {self.tokenizer_hash[:12]}...); {redo}")
        clip = (self.frames, self.resolution, self.resolution)
        if tuple(meta.clip_shape[:3]) != clip:
            raise MagvitError(f"{where}: clip size differs: {tuple(meta.clip_shape[:3])} (T, H, W) in the shards, "
                              f"{clip} in the config (frames, resolution); set those to match or {redo}")
        grid = tuple(self.tokenizer.token_shape(*clip))
        if tuple(meta.token_grid) != grid or meta.codebook_size != self.tokenizer.codebook_size:
            raise MagvitError(f"{where}: token grid differs: {tuple(meta.token_grid)} x {meta.codebook_size} codes in "
                              f"the shards, {grid} x {self.tokenizer.codebook_size} for this config; {redo}")
        if self.transformer.vocab.num_classes:
            check_num_classes(meta.num_classes, self.transformer.vocab.num_classes, where)
        if meta.token_rule != self.objective_config.token_rule:
            raise MagvitError(f"{where}: token_rule differs: {meta.token_rule!r} in the shards, "
                              f"{self.objective_config.token_rule!r} in objective.token_rule; {redo}")
        stored = dict(read_spec("task", s) for s in meta.tasks)
        for task in self.tasks:
            if not task.deterministic:
                if not meta.has_video:
                    raise MagvitError(f"{where}: task {task.name!r} has a random condition and is tokenised on the "
                                      "fly, but the shards hold no clips; re-tokenise with store_video (or "
                                      f"with {task.name!r} in the task list); {redo}")
                continue
            if task.name not in stored:
                raise MagvitError(f"{where}: task {task.name!r} is not cached (they hold {', '.join(stored) or 'none'}); "
                                  f"drop it from model.init_args.tasks or {redo}")
            # The prompt only picks the transformer's prompt token; it does not change any stored token.
            ours = {k: v for k, v in part_config(task).items() if k != "prompt"}
            theirs = {k: v for k, v in stored[task.name].items() if k != "prompt"}
            for key in sorted(set(ours) | set(theirs)):
                if ours.get(key) != theirs.get(key):
                    raise MagvitError(f"{where}: task {task.name!r} argument {key} differs: {theirs.get(key)!r} in "
                                      f"the shards, {ours.get(key)!r} in the config (task_options); {redo}")

    def check_data(self, clip_shape: tuple[int, int, int], num_classes: int, source: str) -> None:
        check_clip_shape(clip_shape, self.frames, self.resolution, source)
        if self.transformer.vocab.num_classes:  # labels are model inputs: each needs its embedding
            check_num_classes(num_classes, self.transformer.vocab.num_classes, source)

    def data(self, cfg: Any, info: Any) -> Any:
        """The token-shard stream when ``token_shards`` is set (:func:`magvit.train.data.make_data` asks)."""
        if self.token_shards is None:
            return None
        video = any(not t.deterministic for t in self.tasks)
        return make_token_data(cfg, info, self.token_shards, tasks=self.cached_tasks, video=video)

    def to(self, device: torch.device) -> TransformerStage:
        self.tokenizer.to(device)
        return self

    def phases(self) -> list[PhaseSpec]:
        return [PhaseSpec("transformer", self.transformer, self.optim, self.ema_decay)]

    def loss(self, phase: str, model: Any, batch: ClipBatch, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        # Clips or token shards alike: the objective uses the tokens the batch carries for the step's task and
        # tokenises the rest (a random condition is never cached).
        device = next(self.transformer.parameters()).device
        out = self.objective(model, batch, ctx.step, ctx.generator, device=device)
        loss = float(out.loss.detach())
        self._task_sums.add(out.task, loss, ctx)
        return out.loss, {"transformer/loss": loss, "transformer/masked_acc": float(out.accuracy)}

    def pop_interval_sums(self) -> dict[str, tuple[float, float]]:
        """``task/<name>/loss``: the sum and count of each task's losses since the last log, every task named."""
        return self._task_sums.pop()

    def model_config(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer_spec,
            "tokenizer_sha256": self.tokenizer_hash,
            "transformer": dict(self.transformer.config),
            "tasks": [part_spec(t) for t in self.tasks],
            "frames": self.frames,
            "resolution": self.resolution,
            "token_rule": self.objective_config.token_rule,
            "sampler": sampler_spec(self.objective_config.sampler()),
        }

    def extra_state(self) -> dict[str, Any]:
        # The frozen tokenizer travels with every checkpoint, so one file generates (MagvitPipeline).
        return {"tokenizer": self.tokenizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the tokenizer is frozen and was loaded from its own checkpoint."""

    def pipeline(self) -> MagvitPipeline:
        return MagvitPipeline(
            self.tokenizer, self.transformer, self.tasks, frames=self.frames, resolution=self.resolution,
            token_rule=self.objective_config.token_rule, tokenizer_name=self.tokenizer_spec["name"],
            sampler=self.objective_config.sampler(),
        )

    def samples(self, batch: ClipBatch, generator: torch.Generator) -> dict[str, list[Tensor]]:
        """condition | generation | ground truth of two clips, for up to three tasks."""
        pipe = self.pipeline()
        was_training = self.transformer.training
        self.transformer.eval()
        try:
            device = next(self.transformer.parameters()).device
            if batch.video is not None:
                video = batch.video[:2].to(device)
            else:  # token batches without clips: show the tokenizer's reconstruction as the ground truth
                video = self.tokenizer.decode(batch.tokens[:2].to(device)).clamp(0, 1)
            out = {}
            for task in self.tasks[:3]:
                gen = pipe.generate(task, video if task.needs_video else None, batch.label[:2], generator=generator)
                cond = task.condition(video).video if task.needs_video else torch.zeros_like(video)
                out[task.name] = [cond, gen, video]
            return out
        finally:
            self.transformer.train(was_training)
