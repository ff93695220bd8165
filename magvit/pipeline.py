"""MagvitPipeline: condition -> tokens -> COMMIT decoding -> pixels, for any registered task.

One tokenizer, one multi-task transformer, the configured tasks (paper Sec. 3; reference 1 and 3).
``save``/``from_checkpoint`` use the trainer's checkpoint format (:mod:`magvit.train.checkpoint`), so a
transformer-stage checkpoint written by ``magvit fit`` loads here directly, and a saved pipeline is a
self-contained file: tokenizer and transformer configs and weights, and the task list with its arguments.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from magvit import registry
from magvit.decoding import commit_decode, maskgit_decode
from magvit.errors import InputError, MagvitError
from magvit.malloc import release_freed_memory
from magvit.masking import task_token_mask
from magvit.protocols import Condition, Task
from magvit.tasks import build_tasks
from magvit.tasks.base import check_video
from magvit.train import checkpoint as ckpt
from magvit.transformer import MaskedTransformer

DECODERS = {"commit": commit_decode, "maskgit": maskgit_decode}


def task_spec(task: Task) -> dict[str, Any]:
    """``{"name": ..., "args": {...}}``: enough to rebuild ``task`` through the registry."""
    args = attrs.asdict(task) if attrs.has(type(task)) else {}
    return {"name": task.name, "args": args}


def tasks_from_specs(specs: Sequence[dict[str, Any]]) -> list[Task]:
    return [registry.get_task(s["name"], **s.get("args", {})) for s in specs]


def tokenizer_spec(name: str, tokenizer: nn.Module) -> dict[str, Any]:
    return {"name": name, "config": dict(tokenizer.config)}


def build_tokenizer(spec: dict[str, Any], state: dict[str, Tensor] | None = None) -> nn.Module:
    """Rebuild a tokenizer from its registry name and config, optionally loading weights."""
    tokenizer = registry.get_tokenizer(spec["name"], **spec["config"])
    if state is not None:
        ckpt.load_module_state(tokenizer, state, "tokenizer weights")
    return tokenizer.eval().requires_grad_(False)


def load_tokenizer(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The frozen tokenizer of a tokenizer-stage checkpoint: its EMA weights (reference 4.8), and its spec."""
    state = ckpt.load(path, map_location)
    if state.get("stage") != "tokenizer":
        raise MagvitError(f"{path} is a {state.get('stage')!r} checkpoint; expected one written by the tokenizer stage")
    spec = state["model_config"]["tokenizer"]
    weights = state["ema"].get("generator") or state["models"]["generator"]
    return build_tokenizer(spec, weights), spec


class MagvitPipeline:
    """Generate videos for any configured task.

    Args:
        tokenizer: a :class:`~magvit.protocols.Tokenizer` (frozen).
        transformer: the multi-task :class:`~magvit.transformer.MaskedTransformer`.
        tasks: the configured tasks (their prompts must be in the transformer's vocabulary).
        frames, resolution: clip size for tasks without an input video (class-conditional generation).
        token_rule: condition-token rule, ``"supervoxel"`` (paper) or ``"analytic"`` (authors' code).
        tokenizer_name: registry name of the tokenizer, for :meth:`save`.
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        transformer: MaskedTransformer,
        tasks: Sequence[Task],
        *,
        frames: int = 16,
        resolution: int = 64,
        token_rule: str = "supervoxel",
        tokenizer_name: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.transformer = transformer.eval()
        self.tasks = {t.name: t for t in tasks}
        self.frames, self.resolution, self.token_rule = frames, resolution, token_rule
        self.tokenizer_name = tokenizer_name or getattr(tokenizer, "name", None)
        grid = tokenizer.token_shape(frames, resolution, resolution)
        if math.prod(grid) != transformer.num_tokens:
            raise InputError(
                f"the tokenizer maps {frames}x{resolution}x{resolution} clips to {grid} = {math.prod(grid)} tokens, "
                f"but the transformer takes {transformer.num_tokens}"
            )
        missing = [t.name for t in tasks if t.prompt not in transformer.vocab.prompts and transformer.vocab.prompts]
        if missing:
            raise InputError(f"tasks {missing} have prompts the transformer was not built with {transformer.vocab.prompts}")

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        tasks: Sequence[str] | str | None = None,
        num_classes: int = 0,
        resolution: int = 64,
        frames: int = 16,
        tokenizer: str = "vq3d",
        prompt_sharing: str = "paper",
    ) -> MagvitPipeline:
        """A randomly initialised pipeline: the ``name`` preset of tokenizer and transformer (``"tiny"`` for tests)."""
        task_list = build_tasks("all" if tasks is None else tasks, prompt_sharing=prompt_sharing)
        tok = registry.get_tokenizer(tokenizer, preset=name, resolution=resolution)
        grid = tok.token_shape(frames, resolution, resolution)
        model = MaskedTransformer.from_preset(
            name, codebook_size=tok.codebook_size, num_classes=num_classes, prompts=[t.prompt for t in task_list],
            num_tokens=math.prod(grid),
        )
        return cls(tok, model, task_list, frames=frames, resolution=resolution, tokenizer_name=tokenizer)

    # -- generation ---------------------------------------------------------------------------
    def task(self, task: str | Task) -> Task:
        name = task if isinstance(task, str) else task.name
        if name not in self.tasks:
            raise InputError(f"task {name!r} is not configured in this pipeline; configured: {', '.join(self.tasks)}")
        return self.tasks[name]

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def _labels(self, task: Task, label: Tensor | int | Sequence[int] | None, batch: int | None) -> Tensor | None:
        if not task.uses_class:
            return None
        if label is None:
            raise InputError(f"task {task.name!r} is class-conditional: pass label=<class index>")
        labels = torch.as_tensor(label, dtype=torch.long).reshape(-1)
        if batch is not None and labels.numel() == 1:
            labels = labels.expand(batch)
        c = self.transformer.vocab.num_classes
        if labels.numel() and (labels.min() < 0 or labels.max() >= c):
            raise InputError(f"class label out of range: got {labels.tolist()}, expected integers in [0, {c})")
        if batch is not None and labels.numel() != batch:
            raise InputError(f"got {labels.numel()} labels for a batch of {batch} videos")
        return labels.to(self.device)

    def condition_tokens(self, task: Task, video: Tensor, generator: torch.Generator | None = None
                         ) -> tuple[Condition, Tensor, Tensor]:
        """The task's condition of ``video``, its tokens ``[B, t, h, w]`` and the condition-token mask."""
        cond = task.condition(video, generator)
        tokens = self.tokenizer.encode(cond.video)
        mask = task_token_mask(task, cond.mask, self.tokenizer.downsample, self.token_rule)
        return cond, tokens, mask

    @torch.no_grad()
    def generate(
        self,
        task: str | Task,
        video: Tensor | None = None,
        label: Tensor | int | Sequence[int] | None = None,
        steps: int = 12,
        generator: torch.Generator | None = None,
        *,
        decoder: str = "commit",
        paste_condition: bool = False,
        **decode_kwargs: Any,
    ) -> Tensor:
        """Generate ``[B, 3, T, H, W]`` videos in [0, 1] for ``task``.

        Args:
            task: task name or instance (one of the configured tasks).
            video: the clip to condition on, float ``[B, 3, T, H, W]`` in [0, 1]; not needed by ``cg``.
            label: class index (int or ``[B]``) for class-conditional tasks.
            steps: decoding steps (12, paper Algorithm 1).
            generator: seeds the decoding; the same seed gives the same video.
            decoder: ``"commit"`` (paper) or ``"maskgit"`` (the Table 5 latent-masking baseline).
            paste_condition: paste the interior-condition pixels back (off in the paper's evaluation, ref. 3).
            decode_kwargs: passed to the decoder (``choice_temperature``, ``guidance_scale``, ...).
        """
        t = self.task(task)
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(0)
        if decoder not in DECODERS:
            raise InputError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        vocab = self.transformer.vocab
        prompt = vocab.prompt_id(t.prompt) if vocab.prompts else None
        if t.needs_video:
            if video is None:
                raise InputError(f"task {t.name!r} needs an input video [B, 3, T, H, W]")
            check_video(video, t.name)
            self._check_size(video)
            video = video.to(self.device, torch.float32)
            labels = self._labels(t, label, video.shape[0])
            cond, cond_tokens, cond_mask = self.condition_tokens(t, video, generator)
            batch = video.shape[0]
        else:
            labels = self._labels(t, label, None if video is None else video.shape[0])
            batch = labels.numel() if labels is not None else (video.shape[0] if video is not None else 1)
            cond = cond_tokens = cond_mask = None
        class_ids = vocab.class_ids(labels, batch, self.device)
        if "uncond_prompt" not in decode_kwargs and decode_kwargs.get("guidance_scale") and "cg" in self.tasks:
            decode_kwargs["uncond_prompt"] = vocab.prompt_id(self.tasks["cg"].prompt)  # reference 3
        tokens = DECODERS[decoder](
            self.transformer, prompt, class_ids, cond_tokens, cond_mask,
            generator=generator, batch_size=batch, steps=steps, **decode_kwargs,
        )
        grid = self.tokenizer.token_shape(self.frames, self.resolution, self.resolution) if video is None \
            else self.tokenizer.token_shape(*video.shape[2:])
        if tokens.device.type == "cpu":
            # The decoder's full-resolution activations are the peak of a generation; give the heap pages
            # the decoding loop freed back first (magvit/malloc.py, issue 7).
            release_freed_memory()
        out = self.tokenizer.decode(tokens.reshape(batch, *grid)).clamp(0, 1)
        if paste_condition and cond is not None:
            out = torch.where(cond.mask, video, out)
        return out

    def _check_size(self, video: Tensor) -> None:
        _, _, t, h, w = video.shape
        grid = self.tokenizer.token_shape(t, h, w)  # raises on sizes the tokenizer cannot take
        if math.prod(grid) != self.transformer.num_tokens:
            raise InputError(
                f"a {t}x{h}x{w} video gives {math.prod(grid)} tokens; this model takes "
                f"{self.frames}x{self.resolution}x{self.resolution} clips ({self.transformer.num_tokens} tokens)"
            )

    # -- persistence --------------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        if self.tokenizer_name is None:
            raise MagvitError("cannot save: the pipeline does not know the tokenizer's registry name (tokenizer_name=...)")
        return {
            "tokenizer": tokenizer_spec(self.tokenizer_name, self.tokenizer),
            "transformer": dict(self.transformer.config),
            "tasks": [task_spec(t) for t in self.tasks.values()],
            "frames": self.frames,
            "resolution": self.resolution,
            "token_rule": self.token_rule,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a self-contained checkpoint (atomic; the transformer-stage format)."""
        return ckpt.save_atomic(
            {
                "stage": "transformer",
                "model_config": self.model_config(),
                "step": 0,
                "models": {"transformer": self.transformer.state_dict()},
                "ema": {},
                "extra": {"tokenizer": self.tokenizer.state_dict()},
            },
            path,
        )

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str = "cpu", use_ema: bool = True) -> MagvitPipeline:
        """Load a pipeline saved by :meth:`save` or a transformer-stage checkpoint of ``magvit fit``."""
        state = ckpt.load(path, map_location)
        if state.get("stage") != "transformer":
            raise MagvitError(
                f"{path} is a {state.get('stage')!r} checkpoint; generation needs a transformer-stage checkpoint "
                "(magvit fit with a transformer config) or a saved pipeline"
            )
        cfg = state["model_config"]
        tokenizer = build_tokenizer(cfg["tokenizer"], state["extra"]["tokenizer"])
        transformer = MaskedTransformer(**cfg["transformer"])
        weights = state["ema"].get("transformer") if use_ema and state.get("ema") else None
        ckpt.load_module_state(transformer, weights or state["models"]["transformer"], "transformer weights")
        return cls(
            tokenizer, transformer, tasks_from_specs(cfg["tasks"]), frames=cfg["frames"], resolution=cfg["resolution"],
            token_rule=cfg.get("token_rule", "supervoxel"), tokenizer_name=cfg["tokenizer"]["name"],
        )
