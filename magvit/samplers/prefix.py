"""Prefix condition: the prefix-condition baseline of paper Table 5.

The condition tokens ``z~`` (those at condition positions) are prepended to the sequence as a prefix (the
model is built with ``prefix_condition=True``, :class:`~magvit.transformer.MaskedTransformer`) and the clip
itself is masked and decoded as in plain MaskGIT, from all positions unknown. Every example of a batch must
have the same number of condition tokens (true for one task per batch with a deterministic region).

Loss weights: the authors' default ``weight_mode='mask+refine+recons'`` with ``condition_mode='prefix'``
weights every visual position (``videogvt/train_lib/mask_utils.py:random_mask``): mask 1, recons 1 (no
position is a refined condition token).
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor

from magvit.errors import InputError
from magvit.masking import LossWeights, MaskedTokens
from magvit.samplers.base import DecodeState, check_token_shapes, part_weights
from magvit.samplers.maskgit import MaskGITDecoding

__all__ = ["PREFIX_WEIGHTS", "PrefixSampler", "condition_prefix", "prefix_condition"]


def condition_prefix(cond_tokens: Tensor, cond_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The prefix ``[B, P]`` (the condition tokens in raster order) and the visual position of each."""
    counts = cond_mask.sum(dim=1)
    if counts.numel() and bool((counts != counts[0]).any()):
        raise InputError("prefix condition needs the same number of condition tokens in every example of a batch")
    b = cond_tokens.shape[0]
    p = int(counts[0]) if counts.numel() else 0
    index = torch.arange(cond_tokens.shape[1], device=cond_tokens.device).expand_as(cond_tokens)
    return cond_tokens[cond_mask].view(b, p), index[cond_mask].view(b, p)


PREFIX_WEIGHTS = LossWeights(refine=0.0, mask=1.0, recons=1.0)


def prefix_condition(tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                     weights: LossWeights = PREFIX_WEIGHTS) -> MaskedTokens:
    """Prefix-condition training inputs (paper Table 5 baseline). All tensors flat ``[B, N]``.

    The prefix is :func:`condition_prefix`; masked -> ``mask_id``, the rest -> ``tokens``.
    """
    check_token_shapes(tokens, cond_tokens, cond_mask, masked)
    prefix, prefix_index = condition_prefix(cond_tokens, cond_mask)
    inputs = torch.where(masked, torch.full_like(tokens, mask_id), tokens)
    w = part_weights(torch.zeros_like(masked, dtype=torch.float), masked.float(), (~masked).float(), weights)
    return MaskedTokens(inputs, tokens, w, masked, prefix, prefix_index)


@attrs.frozen
class PrefixSampler(MaskGITDecoding):
    """Prefix condition in training and decoding; MaskGIT decoding of the whole clip."""

    name: ClassVar[str] = "prefix"
    prefix_condition: ClassVar[bool] = True
    default_weights: ClassVar[LossWeights] = PREFIX_WEIGHTS
    # The unconditional pass would need a prefix of another length in the same batch.
    supports_guidance: ClassVar[bool] = False

    def training_inputs(self, tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                        weights: LossWeights | None = None) -> MaskedTokens:
        return prefix_condition(tokens, cond_tokens, cond_mask, masked, mask_id, weights or self.default_weights)

    def init_state(self, cond_tokens: Tensor, cond_mask: Tensor, mask_id: int) -> DecodeState:
        self.scheduler()
        condition_prefix(cond_tokens, cond_mask)  # refuse unequal condition lengths before the first step
        inputs = torch.full_like(cond_tokens, mask_id)
        return DecodeState(0, inputs, inputs, self.initially_unknown(cond_mask), cond_tokens, cond_mask, mask_id)

    def initially_unknown(self, cond_mask: Tensor) -> Tensor:
        return torch.ones_like(cond_mask)

    def model_kwargs(self, state: DecodeState) -> dict[str, Tensor]:
        prefix, prefix_index = condition_prefix(state.cond_tokens, state.cond_mask)
        return {"prefix": prefix, "prefix_index": prefix_index}
