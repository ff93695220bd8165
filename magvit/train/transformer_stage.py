"""Stage two: multi-task masked token modelling of the transformer over a frozen tokenizer.

Reference 1.5 and 2: one task per step from a fixed shuffled cycle, the real and the condition video
tokenised together by the frozen EMA tokenizer, COMMIT inputs, weighted label-smoothed CE. Optimiser
(reference 5.4): AdamW lr 1e-4, betas (0.9, 0.96), weight decay 0.045 on kernels, clip 1.0, 5000 warm-up
steps then cosine.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from magvit.errors import MagvitError
from magvit.objective import MultiTaskObjective, ObjectiveConfig
from magvit.pipeline import MagvitPipeline, load_tokenizer, task_spec
from magvit.tasks import build_tasks
from magvit.train.optim import OptimConfig
from magvit.train.stage import PhaseSpec, Stage, StepContext
from magvit.transformer import MaskedTransformer


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TransformerStage(Stage):
    """The MAGVIT transformer stage.

    Args:
        tokenizer_checkpoint: tokenizer-stage checkpoint (``magvit fit`` with a tokenizer config); its EMA
            weights are the frozen tokenizer.
        preset: transformer size, ``tiny``, ``B`` or ``L`` (reference 5.1).
        num_classes: number of class labels of the data (0 for unlabelled data; class tasks need > 0).
        tasks: task names (``"all"``: every registered task) -- one model for all of them.
        task_options: per-task constructor arguments, e.g. ``{"fp": {"cond_frames": 5}}``.
        task_weights: sampling weight per task (reference 1.5; default 1 each).
        prompt_sharing: ``"paper"`` (a prompt per task) or ``"code"`` (the authors' sharing).
        frames, resolution: clip size (must match the data and the tokenizer).
        objective: masking method, schedule, token rule, label smoothing, loss weights (reference 2).
        optim: optimiser settings (reference 5.4).
        ema_decay: keep an EMA of the transformer (None: off, as in the reference).
        transformer_options: overrides of the preset (e.g. ``{"dropout": 0.0}``).
        seed: seeds the task cycle and the weight initialisation.
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
    ) -> None:
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
            prompts=[t.prompt for t in self.tasks], num_tokens=math.prod(grid),
            **{"init_seed": seed, **(transformer_options or {})},
        )
        self.objective = MultiTaskObjective(self.tokenizer, self.tasks, task_weights=task_weights, config=objective, seed=seed)
        self.frames, self.resolution = frames, resolution
        self.optim, self.ema_decay = optim, ema_decay
        self.objective_config = objective

    def to(self, device: torch.device) -> TransformerStage:
        self.tokenizer.to(device)
        return self

    def phases(self) -> list[PhaseSpec]:
        return [PhaseSpec("transformer", self.transformer, self.optim, self.ema_decay)]

    def loss(self, phase: str, model: Any, batch: Any, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        device = next(self.transformer.parameters()).device
        labels = batch.label.to(device) if self.transformer.vocab.num_classes else None
        out = self.objective(model, batch.video.to(device), labels, ctx.step, ctx.generator)
        return out.loss, {"transformer/loss": float(out.loss), "transformer/masked_acc": float(out.accuracy),
                          f"task/{out.task}/loss": float(out.loss)}

    def model_config(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer_spec,
            "tokenizer_sha256": self.tokenizer_hash,
            "transformer": dict(self.transformer.config),
            "tasks": [task_spec(t) for t in self.tasks],
            "frames": self.frames,
            "resolution": self.resolution,
            "token_rule": self.objective_config.token_rule,
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
        )

    def samples(self, batch: Any, generator: torch.Generator) -> dict[str, list[Tensor]]:
        """condition | generation | ground truth of two clips, for up to three tasks."""
        pipe = self.pipeline()
        was_training = self.transformer.training
        self.transformer.eval()
        try:
            video = batch.video[:2].to(next(self.transformer.parameters()).device)
            out = {}
            for task in self.tasks[:3]:
                gen = pipe.generate(task, video if task.needs_video else None, batch.label[:2], generator=generator)
                cond = task.condition(video).video if task.needs_video else torch.zeros_like(video)
                out[task.name] = [cond, gen, video]
            return out
        finally:
            self.transformer.train(was_training)
