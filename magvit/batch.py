"""The training batch: clips as pixels, as tokens, or both.

Both training streams yield a :class:`ClipBatch`. The clip-shard loader (:func:`magvit.data.make_loader`)
fills ``video``; the token-shard loader (:func:`magvit.train.token_cache.make_token_loader`) fills
``tokens`` and the cached condition tokens of each deterministic task, and ``video`` as well when the
shards store the clips. Training takes the tokens a batch carries for the step's task and tokenises only
what is missing (:meth:`magvit.objective.MultiTaskObjective.tokens_for`), as muse-maskgit's
``MaskGit.forward(images_or_ids)`` takes pixels or codes.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from torch import Tensor

from magvit.errors import InputError
from magvit.protocols import Task

__all__ = ["ClipBatch", "TokenBatch"]


@attrs.frozen
class TokenBatch:
    """One task's tokens of a batch, flat ``[B, N]``.

    Attributes:
        tokens: long ground-truth tokens.
        cond_tokens: long tokens of the task's padded condition video; None for a task without a visual
            condition (cg).
        cond_mask: bool, True on condition tokens (all False without a visual condition).
    """

    tokens: Tensor
    cond_tokens: Tensor | None
    cond_mask: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenBatch:
        cond = None if self.cond_tokens is None else self.cond_tokens.to(device, non_blocking=non_blocking)
        return TokenBatch(self.tokens.to(device, non_blocking=non_blocking), cond,
                          self.cond_mask.to(device, non_blocking=non_blocking))


def _per_task(value: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Task name -> tensor as a dict of the batch's own (the caller's mapping is copied, not shared)."""
    return dict(value)


@attrs.frozen(kw_only=True)
class ClipBatch:
    """A batch of clips: their pixels, their tokens or both, their labels, and cached task conditions.

    Attributes:
        label: long ``[B]`` class indices.
        keys: each sample's key (unique within a dataset).
        video: float ``[B, 3, T, H, W]`` in [0, 1]; None for token shards stored without clips.
        tokens: long ``[B, t, h, w]`` ground-truth tokens of the frozen tokenizer; None for clip shards.
        task_tokens: task name -> that task's ground-truth tokens, for the rare tasks whose encoder call
            rounded some code differently from ``tokens`` (:mod:`magvit.train.tokenize` explains why).
        cond_tokens: task name -> long ``[B, t, h, w]`` tokens of its padded condition video (the cached
            tasks with a visual condition).
        cond_mask: task name -> bool ``[B, t, h, w]``, True on condition tokens (the same tasks).

    Raises:
        InputError: neither video nor tokens, task tokens without ground-truth tokens, or condition tokens
            and masks for different tasks.
    """

    label: Tensor
    keys: tuple[str, ...] = attrs.field(converter=tuple)
    video: Tensor | None = None
    tokens: Tensor | None = None
    task_tokens: dict[str, Tensor] = attrs.field(factory=dict, converter=_per_task)
    cond_tokens: dict[str, Tensor] = attrs.field(factory=dict, converter=_per_task)
    cond_mask: dict[str, Tensor] = attrs.field(factory=dict, converter=_per_task)

    def __attrs_post_init__(self) -> None:
        if self.video is None and self.tokens is None:
            raise InputError("a ClipBatch holds video, tokens or both; got neither")
        if self.tokens is None and (self.task_tokens or self.cond_tokens):
            raise InputError("a ClipBatch with per-task tokens needs its ground-truth tokens (tokens=...)")
        if set(self.cond_tokens) != set(self.cond_mask):
            raise InputError(f"a ClipBatch needs a condition mask for each task's condition tokens and no other; "
                             f"got tokens for {sorted(self.cond_tokens)} and masks for {sorted(self.cond_mask)}")

    def __len__(self) -> int:
        return len(self.label)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        """Every tensor of the batch on ``device``."""
        def move(x: Tensor) -> Tensor:
            return x.to(device, non_blocking=non_blocking)

        def each(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return {k: move(v) for k, v in tensors.items()}

        return ClipBatch(
            label=move(self.label), keys=self.keys, video=None if self.video is None else move(self.video),
            tokens=None if self.tokens is None else move(self.tokens), task_tokens=each(self.task_tokens),
            cond_tokens=each(self.cond_tokens), cond_mask=each(self.cond_mask),
        )

    def tokens_for(self, task: Task) -> TokenBatch | None:
        """``task``'s tokens as this batch carries them, flat ``[B, N]``; None when some are missing (the
        ground truth, or the condition tokens of a task with a visual condition): those come from ``video``."""
        if self.tokens is None:
            return None
        b = len(self)
        tokens = self.task_tokens.get(task.name, self.tokens).reshape(b, -1)
        if not task.needs_video:
            return TokenBatch(tokens, None, torch.zeros_like(tokens, dtype=torch.bool))
        if task.name not in self.cond_tokens:
            return None
        return TokenBatch(tokens, self.cond_tokens[task.name].reshape(b, -1), self.cond_mask[task.name].reshape(b, -1))
