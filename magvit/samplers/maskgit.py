"""MaskGIT latent masking and MaskGIT decoding: the latent-masking baseline of paper Table 5 and the MaskGIT
decoding of Table 6 (Chang et al. 2022, Sec. 3.2).

Training (``random_mask`` in the authors' ``videogvt/train_lib/mask_utils.py``): the condition positions are
unmaskable and the mask is drawn over the other positions only (:meth:`MaskGITSampler.maskable`; the masked
count is ``floor(gamma * maskable)``, at least 1); masked -> [MASK], unmasked -> ground truth. What the
unmaskable condition positions hold is the ``unmaskable`` option, the authors' two ``condition_mode`` values:

* ``"condition"``: the condition tokens ``z~`` (``condition_mode='cond->cond'``, the default: the input the
  decoding sees);
* ``"ground_truth"``: the ground-truth tokens (``condition_mode='input->input'``); decoding can only give
  ``z~`` there, the train/test mismatch (leakage) the paper blames latent masking for (Sec. 3.2).

Loss weights: the authors' default ``weight_mode='mask+refine+recons'`` weights every maskable position
(``weights = maskable``): refine 0 (condition positions), mask 1, recons 1. MaskGIT's own loss (the authors'
``weight_mode='mask+refine'``) is ``objective.weights.recons 0``.

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

from magvit.errors import InputError
from magvit.masking import LossWeights, MaskedTokens
from magvit.samplers.base import DecodeState, ParallelSampler, check_token_shapes, part_weights

__all__ = ["LATENT_WEIGHTS", "MaskGITDecoding", "MaskGITSampler", "UNMASKABLE", "latent_masking"]

#: what the unmaskable condition positions hold: z~ (``cond->cond``) or the ground truth (``input->input``)
UNMASKABLE = ("condition", "ground_truth")
#: the authors' default ``weight_mode='mask+refine+recons'`` with unmaskable condition positions
LATENT_WEIGHTS = LossWeights(refine=0.0, mask=1.0, recons=1.0)


def latent_masking(tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                   weights: LossWeights = LATENT_WEIGHTS, unmaskable: str = "condition") -> MaskedTokens:
    """MaskGIT latent masking (paper Table 5 baseline). All tensors flat ``[B, N]``.

    condition -> ``cond_tokens`` (``unmaskable="condition"``) or ``tokens`` (``"ground_truth"``); masked &
    not condition -> ``mask_id``; the rest -> ``tokens``. The ``refine`` weight applies to the condition
    positions, ``recons`` to the unmasked others.
    """
    check_token_shapes(tokens, cond_tokens, cond_mask, masked)
    if unmaskable not in UNMASKABLE:
        raise InputError(f"unmaskable must be one of {list(UNMASKABLE)}, got {unmaskable!r}")
    plain = masked & ~cond_mask
    recons = ~masked & ~cond_mask
    given = cond_tokens if unmaskable == "condition" else tokens
    inputs = torch.where(cond_mask, given, torch.where(plain, torch.full_like(tokens, mask_id), tokens))
    w = part_weights(cond_mask.float(), plain.float(), recons.float(), weights)
    return MaskedTokens(inputs, tokens, w, plain)


def _unmaskable(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value not in UNMASKABLE:
        raise InputError(f"{type(instance).__name__}.{attribute.name} must be one of {list(UNMASKABLE)}, got {value!r}")


@attrs.frozen
class MaskGITDecoding(ParallelSampler):
    """MaskGIT decoding (the condition tokens fixed); the training side is a subclass's."""

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


@attrs.frozen
class MaskGITSampler(MaskGITDecoding):
    """Latent masking in training, MaskGIT decoding with the condition tokens fixed (the paper's "latent"
    method, Table 5).

    Attributes:
        unmaskable: what the condition positions hold in training: ``"condition"`` (``z~``, the authors'
            ``cond->cond``) or ``"ground_truth"`` (the authors' ``input->input``). Decoding is the same.
    """

    unmaskable: str = attrs.field(default="condition", validator=_unmaskable)

    name: ClassVar[str] = "maskgit"
    aliases: ClassVar[tuple[str, ...]] = ("latent",)
    default_weights: ClassVar[LossWeights] = LATENT_WEIGHTS

    def training_inputs(self, tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                        weights: LossWeights | None = None) -> MaskedTokens:
        return latent_masking(tokens, cond_tokens, cond_mask, masked, mask_id, weights or self.default_weights,
                              self.unmaskable)

    def maskable(self, cond_mask: Tensor) -> Tensor:
        return ~cond_mask  # the authors' NEVER_MASK score on condition positions
