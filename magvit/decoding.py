"""The decoding loop: one loop for every sampler (:mod:`magvit.samplers`).

:func:`decode`: the sampler sets up the state, then each step calls the model (with classifier-free guidance
when asked) and hands its codebook logits to ``sampler.step``, until the sampler says it is done. ``commit``
is paper Algorithm 1. Two optional sampler hooks widen the seam for the autoregressive baseline (``ar``):
``num_steps(steps, num_tokens)`` (how many steps; default ``steps``) and ``model_logits(model, state,
prompt, label) -> (logits, state)`` (how a step's logits are obtained, e.g. through a key/value cache;
default one model call on ``state.inputs``).

Every decoder takes a ``torch.Generator``: the same seed gives the same tokens. The per-step work outside
the model is a handful of vectorised ops on ``[B, N]`` and one softmax over ``[B, N, K]`` codebook logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from magvit.errors import InputError
from magvit.protocols import Sampler, StepwiseSampler
from magvit.samplers.base import DEFAULT_STEPS, DecodeState

__all__ = ["Callback", "decode"]

Callback = Callable[[DecodeState], None]


# -- shared helpers -------------------------------------------------------------------------------------


def _ids(value: Tensor | int | None, batch: int, device: Any, name: str) -> Tensor | None:
    """A prompt / class id given as an int or a long ``[B]`` tensor, as ``[B]``."""
    if value is None:
        return None
    value = torch.as_tensor(value, device=device)
    if value.dtype != torch.long:
        raise InputError(f"{name} must be an int or a long tensor [B], got {value.dtype}")
    if value.dim() == 0:
        return value.expand(batch)
    if tuple(value.shape) != (batch,):
        raise InputError(f"{name} must have shape ({batch},), got {tuple(value.shape)}")
    return value


def _condition(
    model: Any, cond_tokens: Tensor | None, cond_mask: Tensor | None, batch: int | None
) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Flat ``z~ [B, N]`` and ``cond_mask [B, N]`` (zeros / False without a condition) and the output shape."""
    n = model.num_tokens
    if cond_tokens is None:
        if cond_mask is not None and bool(cond_mask.any()):
            raise InputError("cond_mask marks condition tokens but cond_tokens is None")
        if batch is None:
            raise InputError("batch_size is required when there are no condition tokens")
        device = model.word.weight.device
        return (torch.zeros(batch, n, dtype=torch.long, device=device),
                torch.zeros(batch, n, dtype=torch.bool, device=device), (batch, n))
    if cond_tokens.dtype != torch.long or cond_tokens.dim() < 2 or cond_tokens[0].numel() != n:
        raise InputError(f"cond_tokens must be long [B, N] or a grid [B, t, h, w] with N={n} tokens, got "
                         f"{cond_tokens.dtype} {tuple(cond_tokens.shape)}")
    shape = tuple(cond_tokens.shape)
    flat = cond_tokens.reshape(shape[0], n)
    if int(flat.min()) < 0 or int(flat.max()) >= model.codebook_size:
        raise InputError(f"cond_tokens must be codes in [0, {model.codebook_size})")
    if cond_mask is None:
        raise InputError("cond_mask (bool, True on condition tokens) is required with cond_tokens")
    if cond_mask.dtype != torch.bool or tuple(cond_mask.shape) != shape:
        raise InputError(f"cond_mask must be bool with the shape of cond_tokens {shape}, got {cond_mask.dtype} "
                         f"{tuple(cond_mask.shape)}")
    return flat, cond_mask.reshape(shape[0], n), shape


def _logits(model: Any, sampler: Sampler, state: DecodeState, prompt: Tensor | None, label: Tensor,
            guidance_scale: float, uncond_prompt: Tensor | None, uncond_label: Tensor) -> Tensor:
    """Codebook logits of one step; with guidance ``c + s (c - u)`` from one batched pass (classifier-free
    guidance as in the authors' ``videogvt/train_lib/maskgvt_train_lib.py``)."""
    kwargs = sampler.model_kwargs(state)
    if guidance_scale == 0.0:
        return model(state.inputs, prompt, label, **kwargs).float()
    both = model(
        torch.cat([state.inputs, sampler.unconditional_inputs(state)]),
        None if prompt is None else torch.cat([prompt, uncond_prompt]),
        torch.cat([label, uncond_label]),
    )
    cond, uncond = both.float().chunk(2)  # float32 before the difference (see decode)
    return cond + guidance_scale * (cond - uncond)


@torch.no_grad()
def decode(
    model: Any,
    sampler: Sampler,
    prompt: Tensor | int | None,
    label: Tensor | int,
    cond_tokens: Tensor | None = None,
    cond_mask: Tensor | None = None,
    *,
    generator: torch.Generator,
    batch_size: int | None = None,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = 0.0,
    uncond_prompt: Tensor | int | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Decode a token sequence with ``sampler`` (e.g. ``get_sampler("commit")``: paper Algorithm 1).

    Args:
        model: a :class:`~magvit.transformer.MaskedTransformer` of the sampler's kind (causal for ``ar``),
            put in eval mode by the caller.
        sampler: the decoding method (:mod:`magvit.samplers`).
        prompt: prompt id (``model.vocab.prompt_id(task.prompt)``), int or long ``[B]``; None if single-task.
        label: class id (``model.vocab.class_id(label or None)``), int or long ``[B]``.
        cond_tokens: ``z~``, long ``[B, N]`` or ``[B, t, h, w]``; None for tasks without a visual condition.
        cond_mask: bool, same shape: True on condition tokens (``task_token_mask``).
        generator: source of all randomness.
        batch_size: B when ``cond_tokens`` is None.
        steps: K decoding steps (12); the sampler may fix its own count (``ar``: one step per token).
        guidance_scale: classifier-free guidance ``s`` (0 = off); the unconditional pass has the sampler's
            :meth:`~magvit.protocols.Sampler.unconditional_inputs`, the "uncond" class and ``uncond_prompt``
            (default: the same prompt).
        callback: called with the :class:`~magvit.samplers.DecodeState` after every step.

    Returns:
        long tokens with the shape of ``cond_tokens`` (``[B, N]`` without a condition).

    The model may run under autocast (``MagvitPipeline.generate(precision=...)``); its logits are taken to
    float32 before guidance and sampling: in bfloat16 (8 significant bits) the guided difference ``c - u``,
    the softmax and the Gumbel-perturbed confidences that rank tokens for re-masking would round, and nearby
    confidences tie.
    """
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if bool(getattr(model, "causal", False)) != sampler.causal:
        kind = "a causal model (MaskedTransformer(..., causal=True))" if sampler.causal else \
            "a bidirectional model (causal=False)"
        raise InputError(f"the {sampler.name!r} sampler decodes with {kind}")
    if guidance_scale and not sampler.supports_guidance:
        raise InputError(f"the {sampler.name!r} sampler does not support classifier-free guidance; use "
                         "guidance_scale 0")
    z_cond, cond, shape = _condition(model, cond_tokens, cond_mask, batch_size)
    b = z_cond.shape[0]
    device = z_cond.device
    prompt_ids = _ids(prompt, b, device, "prompt")
    label_ids = _ids(label, b, device, "label")
    uncond_prompt_ids = _ids(uncond_prompt, b, device, "uncond_prompt") if uncond_prompt is not None else prompt_ids
    uncond_label = torch.full((b,), model.vocab.uncond_id, dtype=torch.long, device=device)
    state = sampler.init_state(z_cond, cond, model.vocab.mask_id)
    stepwise = isinstance(sampler, StepwiseSampler)
    for _ in range(sampler.num_steps(steps, z_cond.shape[1]) if stepwise else steps):
        if stepwise:
            logits, state = sampler.model_logits(model, state, prompt_ids, label_ids)
            logits = logits.float()
        else:
            logits = _logits(model, sampler, state, prompt_ids, label_ids, guidance_scale, uncond_prompt_ids,
                             uncond_label)
        state = sampler.step(state, logits, steps, generator)
        if callback is not None:
            callback(state)
        if state.done:
            break
    return state.tokens.reshape(shape)
