"""Held-out token metrics: how well a model predicts the generated region's tokens from the condition alone.

For every task and held-out clip, the model gets the input of the first decoding step of its own sampler
(:meth:`~magvit.protocols.Sampler.init_state`: the condition tokens where the sampler puts them, every other
position ``[MASK]``; the prefix of the prefix-condition model) and is scored on the real clip's tokens at the
positions outside the condition (the tokens no condition pixel touches, paper Sec. 3.2):

* ``token_nll``: mean negative log-likelihood in nats per token (no label smoothing);
* ``token_accuracy``: argmax accuracy;
* ``token_accuracy_trivial``: how often the condition token ``z~`` at that position already equals the real
  one (the token-level "copy the condition" answer; None without a visual condition).

These are the masked-token NLL / accuracy the MaskGIT-style objective trains (paper Eq. 3) measured at the one
mask the decoder always starts from, so they do not depend on decoding randomness and can separate models whose
sampled generations score alike. The same positions and targets are scored for every parallel sampler over the
same tokenizer; a causal (``ar``) model factorises the clip in raster order instead and gets None, and the
numbers of models over different tokenizers (other codebooks) are not comparable. State is sums
(:class:`TokenLikelihood`), so distributed reduction is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor
from torchmetrics import Metric

from magvit.protocols import Task

__all__ = ["TOKEN_FIELDS", "TokenLikelihood", "TokenScores", "evaluate_token_likelihood", "first_step_logits"]


@attrs.frozen
class TokenScores:
    """One task's held-out token metrics (see the module docstring); None where nothing was scored."""

    token_nll: float | None
    token_accuracy: float | None
    token_accuracy_trivial: float | None
    num_tokens: int


#: The score fields of :class:`TokenScores` (every field but ``num_tokens``).
TOKEN_FIELDS = ("token_nll", "token_accuracy", "token_accuracy_trivial")


class TokenLikelihood(Metric):
    """Sums of the NLL and hits over scored tokens (torchmetrics, ``dist_reduce_fx="sum"``)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("nll", "hits", "trivial_hits", "count", "trivial_count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, targets: Tensor, scored: Tensor, cond_tokens: Tensor | None = None) -> None:
        """``logits`` ``[B, N, K]``, ``targets`` long ``[B, N]``, ``scored`` bool ``[B, N]`` (the positions
        to score), ``cond_tokens`` long ``[B, N]`` (None: no trivial answer)."""
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
        self.nll += nll[scored].sum()
        self.hits += (logits.argmax(dim=-1) == targets)[scored].sum()
        self.count += scored.sum()
        if cond_tokens is not None:
            self.trivial_hits += (cond_tokens == targets)[scored].sum()
            self.trivial_count += scored.sum()

    def compute(self) -> TokenScores:
        count, trivial = int(self.count), int(self.trivial_count)
        return TokenScores(
            token_nll=float(self.nll / count) if count else None,
            token_accuracy=float(self.hits / count) if count else None,
            token_accuracy_trivial=float(self.trivial_hits / trivial) if trivial else None,
            num_tokens=count,
        )


def first_step_logits(model: Any, sampler: Any, prompt: Tensor | None, label: Tensor, cond_tokens: Tensor,
                      cond_mask: Tensor) -> Tensor:
    """Codebook logits ``[B, N, K]`` of the first decoding step of a parallel ``sampler`` (flat ``[B, N]``
    condition tokens and mask), as :func:`magvit.decoding.decode` computes them without guidance."""
    state = sampler.init_state(cond_tokens, cond_mask, model.vocab.mask_id)
    return model(state.inputs, prompt, label, **sampler.model_kwargs(state)).float()


@torch.no_grad()
def evaluate_token_likelihood(pipeline: Any, batches: Iterable[Any], tasks: Sequence[str | Task] | None = None,
                              *, max_clips: int | None = None) -> dict[str, TokenScores]:
    """:class:`TokenScores` per task of ``pipeline`` (a :class:`~magvit.pipeline.MagvitPipeline`) over
    ``batches`` of held-out clips (:class:`~magvit.batch.ClipBatch` with video), with the model's own sampler.

    Every score is None for a causal (autoregressive) model; see the module docstring.
    """
    names = [t if isinstance(t, str) else t.name for t in (tasks or list(pipeline.tasks))]
    task_objs = [pipeline.task(n) for n in names]
    sampler = pipeline.decoding_sampler(None)
    if sampler.causal:
        return {n: TokenScores(None, None, None, 0) for n in names}
    metrics = {n: TokenLikelihood() for n in names}
    model, tokenizer, vocab = pipeline.transformer, pipeline.tokenizer, pipeline.transformer.vocab
    device, seen = pipeline.device, 0
    for batch in batches:
        video = batch.video.to(device)
        if max_clips is not None:
            video = video[: max_clips - seen]
        b = video.shape[0]
        if b == 0:
            break
        targets = tokenizer.encode(video).reshape(b, -1)
        for name, task in zip(names, task_objs):
            labels = batch.label[:b].to(device) if task.uses_class else None
            if task.needs_video:
                _, cond_tokens, cond_mask = pipeline.condition_tokens(task, video)
                cond_tokens, cond_mask = cond_tokens.reshape(b, -1), cond_mask.reshape(b, -1)
            else:
                cond_tokens = torch.zeros_like(targets)
                cond_mask = torch.zeros_like(targets, dtype=torch.bool)
            prompt = (torch.full((b,), vocab.prompt_id(task.prompt), dtype=torch.long, device=device)
                      if vocab.prompts else None)
            logits = first_step_logits(model, sampler, prompt, vocab.class_ids(labels, b, device), cond_tokens,
                                       cond_mask)
            metrics[name].update(logits, targets, ~cond_mask, cond_tokens if task.needs_video else None)
        seen += b
        if max_clips is not None and seen >= max_clips:
            break
    return {n: m.compute() for n, m in metrics.items()}
