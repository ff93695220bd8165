"""MaskGIT latent masking and MaskGIT decoding: the latent-masking baseline of paper Table 5 and the MaskGIT
decoding of Table 6 (Chang et al. 2022, Sec. 3.2).

Training: the condition tokens ``z~`` are always given at condition positions and the mask acts only on the
other positions (masked -> [MASK], unmasked -> ground truth); by default the loss is on the [MASK] positions
only, as MaskGIT's.

Decoding, as MaskGIT's ``maskgit/libml/parallel_decode.py``: the condition tokens are known from the start and
never masked again; the number of positions masked again after step ``k`` of ``K`` is
``floor(U gamma((k+1)/K))`` with ``U`` the positions unknown at the start, clipped to ``[1, unknown - 1]``,
with a strict cut-off (``score <`` the ``count``-th smallest, 0-based); decoding stops early when nothing is
unknown.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor

from magvit.masking import LossWeights, MaskedTokens
from magvit.samplers.base import DecodeState, ParallelSampler, check_token_shapes, part_weights

__all__ = ["MaskGITSampler", "latent_masking"]


def latent_masking(tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                   weights: LossWeights = LossWeights(refine=0.0, mask=1.0, recons=0.0)) -> MaskedTokens:
    """MaskGIT latent masking (paper Table 5 baseline). All tensors flat ``[B, N]``.

    condition -> ``cond_tokens``; masked & not condition -> ``mask_id``; the rest -> ``tokens``. The
    ``refine`` weight applies to the condition positions, ``recons`` to the unmasked others.
    """
    check_token_shapes(tokens, cond_tokens, cond_mask, masked)
    plain = masked & ~cond_mask
    recons = ~masked & ~cond_mask
    inputs = torch.where(cond_mask, cond_tokens, torch.where(plain, torch.full_like(tokens, mask_id), tokens))
    w = part_weights(cond_mask.float(), plain.float(), recons.float(), weights)
    return MaskedTokens(inputs, tokens, w, plain)


@attrs.frozen
class MaskGITSampler(ParallelSampler):
    """Latent masking in training, MaskGIT decoding with the condition tokens fixed."""

    name: ClassVar[str] = "maskgit"
    default_weights: ClassVar[LossWeights] = LossWeights(refine=0.0, mask=1.0, recons=0.0)

    def training_inputs(self, tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                        weights: LossWeights | None = None) -> MaskedTokens:
        return latent_masking(tokens, cond_tokens, cond_mask, masked, mask_id, weights or self.default_weights)

    def initially_unknown(self, cond_mask: Tensor) -> Tensor:
        return ~cond_mask

    def unconditional_inputs(self, state: DecodeState) -> Tensor:
        # The condition tokens are inputs of every step here, so the unconditional pass drops them too.
        return torch.where(state.unknown | state.cond_mask, torch.full_like(state.inputs, state.mask_id),
                           state.inputs)

    def _nothing_left(self, state: DecodeState) -> bool:
        return not bool(state.unknown.any())

    def remask(self, state: DecodeState, score: Tensor, gamma: float) -> Tensor:
        unknown_at_start = self.initially_unknown(state.cond_mask).sum(dim=1)
        count = torch.floor(unknown_at_start * gamma).long()
        count = torch.clamp(torch.minimum(state.unknown.sum(dim=1) - 1, count), min=1)
        cutoff = score.sort(dim=1).values.gather(1, count[:, None])
        return score < cutoff
