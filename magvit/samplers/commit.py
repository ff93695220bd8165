"""COMMIT: MAGVIT's conditional masked modelling (paper Sec. 3.2, Eq. 2) and its decoding (Algorithm 1).

Training (the authors' ``generate_masked_tokens`` in ``videogvt/train_lib/maskgvt_train_lib.py``): a masked
position that is a condition token gets the condition token ``z~`` (the "refine" part of the loss), another
masked position gets [MASK] ("mask"), an unmasked one the ground truth ("recons"); the targets are the
ground truth everywhere.

Decoding, Algorithm 1 as the authors' ``videogvt/train_lib/parallel_decode.py``: every position starts
unknown, with ``z~`` at condition positions; the number of positions masked again after step ``k`` of ``K``
is ``floor(N gamma((k+1)/K))`` counted against all N tokens, clipped to ``[1, unknown - 1]``, with ``<=`` at
the cut-off; a masked condition position gets ``z~`` again at every step; the output is the last step's
filled sequence.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
from torch import Tensor

from magvit.masking import LossWeights, MaskedTokens
from magvit.samplers.base import DecodeState, ParallelSampler, check_token_shapes, part_weights

__all__ = ["CommitSampler", "commit_masking"]


def commit_masking(tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                   weights: LossWeights = LossWeights()) -> MaskedTokens:
    """COMMIT inputs (paper Eq. 2). All tensors flat ``[B, N]``.

    masked & condition -> ``cond_tokens``; masked & not condition -> ``mask_id``; unmasked -> ``tokens``.
    """
    check_token_shapes(tokens, cond_tokens, cond_mask, masked)
    refine = masked & cond_mask
    plain = masked & ~cond_mask
    inputs = torch.where(refine, cond_tokens, torch.where(plain, torch.full_like(tokens, mask_id), tokens))
    w = part_weights(refine.float(), plain.float(), (~masked).float(), weights)
    return MaskedTokens(inputs, tokens, w, masked)


@attrs.frozen
class CommitSampler(ParallelSampler):
    """COMMIT training and Algorithm 1 decoding (the default method; loss weights all 1, the authors'
    ``weight_mode='mask+refine+recons'``)."""

    name: ClassVar[str] = "commit"

    def training_inputs(self, tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                        weights: LossWeights | None = None) -> MaskedTokens:
        return commit_masking(tokens, cond_tokens, cond_mask, masked, mask_id, weights or self.default_weights)

    def initially_unknown(self, cond_mask: Tensor) -> Tensor:
        return torch.ones_like(cond_mask)  # condition tokens are refined too

    def remask(self, state: DecodeState, score: Tensor, gamma: float) -> Tensor:
        b, n = score.shape
        count = torch.clamp(torch.full((b,), math.floor(n * gamma), device=score.device), min=1)
        count = torch.minimum(count, state.unknown.sum(dim=1) - 1)
        cutoff = score.sort(dim=1).values.gather(1, (count - 1).clamp(min=0)[:, None])
        return (score <= cutoff) & (count > 0)[:, None]

    def next_inputs(self, state: DecodeState, tokens: Tensor, remask: Tensor) -> Tensor:
        # COMMIT: a masked condition position gets z~ again, another masked position [MASK].
        mask_tokens = torch.full_like(tokens, state.mask_id)
        return torch.where(remask & state.cond_mask, state.cond_tokens, torch.where(remask, mask_tokens, tokens))
