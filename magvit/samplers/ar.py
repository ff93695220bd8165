"""Autoregressive: the autoregressive-transformer baseline of paper Table 6, as the authors' ``lmgvt``.

The sequence (``generate_tokens_for_lm`` in ``videogvt/train_lib/maskgvt_train_lib.py``, ``lm_tokens`` in
``videogvt/train_lib/mask_utils.py``) is ``[BOS] [prompt] [class] [condition tokens] [SEP] [visual tokens]``:
the condition tokens ``z~`` (those at condition positions, in raster order) as a prefix, then a separator,
then the whole clip in raster order. The model (``MaskedTransformer(causal=True)``) reads it shifted right by
BOS, so each token is predicted from everything before it (teacher forcing). The task prompt is kept when
the vocabulary has prompts (the authors' LM is single-task and has none).

Decoding (``videogvt/train_lib/lm_sample_decode.py``): the sequence before the clip goes through the model
once into the key/value cache, then every visual token is sampled in raster order, one per step, and fed
back through the cache: N steps whatever ``steps`` says. Every visual position is sampled, condition
positions too, as the authors' (the prefix conditions them; it is not pasted in). Sampling is from
``softmax(logits / temperature)`` over the codebook (0: greedy); no classifier-free guidance.

Loss weights. The authors (``lm_tokens``: ``weights = ones``) weight every position of the sequence, the
prompt, class, condition tokens and separator too, with logits over the whole vocabulary. Ours are over
the codebook logits of the N visual positions only (the objective of every method): ``refine`` weights the
condition positions (whose tokens the prefix holds), ``mask`` the others, 1 each by default; ``recons``
has no position (no token sees itself).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

from magvit.errors import InputError
from magvit.masking import LossWeights, MaskedTokens
from magvit.samplers.base import DecodeState, _positive, check_token_shapes, part_weights
from magvit.samplers.prefix import condition_prefix

__all__ = ["ARDecodeState", "ARSampler", "lm_inputs"]


def lm_inputs(tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, weights: LossWeights = LossWeights()
              ) -> MaskedTokens:
    """Teacher-forcing inputs of the autoregressive baseline. All tensors flat ``[B, N]``.

    The inputs are the ground truth (the model shifts them right itself); the prefix is
    :func:`~magvit.samplers.prefix.condition_prefix`; every visual position is predicted (``masked`` all
    True), condition positions with the ``refine`` weight, the others with ``mask``.
    """
    check_token_shapes(tokens, cond_tokens, cond_mask, cond_mask)
    prefix, prefix_index = condition_prefix(cond_tokens, cond_mask)
    w = part_weights(cond_mask.float(), (~cond_mask).float(), torch.zeros_like(cond_mask, dtype=torch.float),
                     weights)
    return MaskedTokens(tokens, tokens, w, torch.ones_like(cond_mask), prefix, prefix_index)


@attrs.frozen
class ARDecodeState(DecodeState):
    """A :class:`~magvit.samplers.DecodeState` with the model's key/value cache (None before the first step)."""

    cache: Any = None


@attrs.frozen
class ARSampler:
    """Raster-order autoregressive training and decoding with a key/value cache (paper Table 6).

    Attributes:
        temperature: sampling temperature of each token (1.0; 0 is greedy).
    """

    temperature: float = attrs.field(default=1.0, validator=_positive)

    name: ClassVar[str] = "ar"
    causal: ClassVar[bool] = True
    prefix_condition: ClassVar[bool] = False
    aliases: ClassVar[tuple[str, ...]] = ()
    supports_guidance: ClassVar[bool] = False
    default_weights: ClassVar[LossWeights] = LossWeights()

    def training_inputs(self, tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                        weights: LossWeights | None = None) -> MaskedTokens:
        """Teacher forcing (:func:`lm_inputs`); ``masked`` is not used: every position is predicted."""
        check_token_shapes(tokens, cond_tokens, cond_mask, masked)
        return lm_inputs(tokens, cond_tokens, cond_mask, weights or self.default_weights)

    def maskable(self, cond_mask: Tensor) -> Tensor:
        return torch.ones_like(cond_mask)

    # -- decoding ---------------------------------------------------------------------------------------
    def init_state(self, cond_tokens: Tensor, cond_mask: Tensor, mask_id: int) -> ARDecodeState:
        condition_prefix(cond_tokens, cond_mask)  # refuse unequal condition lengths before the first step
        inputs = torch.full_like(cond_tokens, mask_id)
        return ARDecodeState(0, inputs, inputs, torch.ones_like(cond_mask), cond_tokens, cond_mask, mask_id)

    def num_steps(self, steps: int, num_tokens: int) -> int:
        """One step per visual token, whatever ``steps`` says."""
        return num_tokens

    def model_logits(self, model: Any, state: ARDecodeState, prompt: Tensor | None, label: Tensor
                     ) -> tuple[Tensor, ARDecodeState]:
        """The logits ``[B, 1, K]`` of the next visual token, through the key/value cache: the first step feeds
        the sequence before the clip, each later one the token sampled last."""
        if state.cache is None:
            prefix, prefix_index = condition_prefix(state.cond_tokens, state.cond_mask)
            cache = model.init_cache(state.tokens.shape[0], condition_length=prefix.shape[1])
            logits = model.start(cache, prompt, label, prefix if prefix.shape[1] else None,
                                 prefix_index if prefix.shape[1] else None)
            return logits[:, None], attrs.evolve(state, cache=cache)
        last = state.tokens[:, state.step - 1 : state.step]
        return model.step(last, state.cache), state

    def step(self, state: ARDecodeState, logits: Tensor, steps: int, generator: torch.Generator) -> ARDecodeState:
        """Sample the visual token at position ``state.step`` from ``logits`` ``[B, 1, K]``."""
        i = state.step
        last = logits[:, -1].float()
        if self.temperature == 0.0:
            token = last.argmax(dim=-1)
        else:
            probs = torch.softmax(last / self.temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        tokens = state.tokens.clone()
        tokens[:, i] = token
        if i == tokens.shape[1] - 1:
            return state.finished(tokens)
        unknown = state.unknown.clone()
        unknown[:, i] = False
        return attrs.evolve(state, step=i + 1, tokens=tokens, inputs=tokens, unknown=unknown)

    def model_kwargs(self, state: DecodeState) -> dict[str, Tensor]:
        prefix, prefix_index = condition_prefix(state.cond_tokens, state.cond_mask)
        return {"prefix": prefix, "prefix_index": prefix_index}

    def unconditional_inputs(self, state: DecodeState) -> Tensor:
        raise InputError("the 'ar' sampler does not support classifier-free guidance")
