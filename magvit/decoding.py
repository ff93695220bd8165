"""Decoding: MAGVIT's Algorithm 1 (COMMIT), MaskGIT decoding and the autoregressive baseline.

* :func:`commit_decode` -- paper Algorithm 1 exactly as the authors' ``videogvt/train_lib/parallel_decode.py``:
  the cosine count is taken against all N tokens with ``<=`` at the cut-off, ``z~`` is re-inserted at
  masked condition positions at every step, and the output is the last step's filled sequence.
* :func:`maskgit_decode` -- MaskGIT (Chang et al. 2022, Sec. 3.2): counts against the tokens unknown at
  the start with ``<``, condition tokens fixed as given (the latent-masking baseline of paper Table 5).
* :func:`autoregressive_decode` -- raster-order, one token per step with a key/value cache (paper Table 6).

Every decoder takes a ``torch.Generator``: the same seed gives the same tokens. The per-step work outside
the model is a handful of vectorised ops on ``[B, N]`` and one softmax over ``[B, N, K]`` codebook logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor

from magvit.errors import InputError
from magvit.masking import MIN_RATIO
from magvit.protocols import MaskScheduler

__all__ = ["DecodeStep", "autoregressive_decode", "commit_decode", "maskgit_decode"]

# Algorithm 1 settings of the authors' configs (config.sampling in videogvt/configs/maskgvt_ucf101_config.py).
DEFAULT_STEPS = 12
DEFAULT_CHOICE_TEMPERATURE = 4.5


@attrs.frozen
class DecodeStep:
    """What one non-autoregressive step produced (passed to the ``callback`` of a decoder).

    Attributes:
        step: 0-based step index.
        tokens: long ``[B, N]``, every position filled (sampled where unknown, committed elsewhere).
        inputs: long ``[B, N]``, the model input of the next step.
        unknown: bool ``[B, N]``, positions still to be decided after this step (all False at the end).
    """

    step: int
    tokens: Tensor
    inputs: Tensor
    unknown: Tensor


Callback = Callable[[DecodeStep], None]


# -- shared helpers -------------------------------------------------------------------------------------


def _scheduler(schedule: str | MaskScheduler) -> MaskScheduler:
    if isinstance(schedule, str):
        from magvit.registry import get_mask_scheduler

        return get_mask_scheduler(schedule)
    return schedule


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


def _logits(
    model: Any, inputs: Tensor, prompt: Tensor | None, label: Tensor, guidance: float,
    uncond_inputs: Tensor | None, uncond_prompt: Tensor | None, uncond_label: Tensor,
) -> Tensor:
    """Codebook logits; with guidance ``c + s (c - u)`` from one batched pass (classifier-free guidance as
    in the authors' ``videogvt/train_lib/maskgvt_train_lib.py``)."""
    if guidance == 0.0:
        return model(inputs, prompt, label)
    both = model(
        torch.cat([inputs, uncond_inputs]),
        None if prompt is None else torch.cat([prompt, uncond_prompt]),
        torch.cat([label, uncond_label]),
    )
    cond, uncond = both.chunk(2)
    return cond + guidance * (cond - uncond)


def _sample(logits: Tensor, temperature: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Sample one code per position from ``softmax(logits / T)``; return it and ``log_softmax(logits)``."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    probs = log_probs.exp() if temperature == 1.0 else torch.softmax(logits.float() / temperature, dim=-1)
    b, n, k = probs.shape
    sampled = torch.multinomial(probs.view(b * n, k), 1, generator=generator).view(b, n)
    return sampled, log_probs


def _gumbel(shape: torch.Size, generator: torch.Generator, device: Any) -> Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(min=torch.finfo(torch.float32).tiny)
    return -torch.log(-torch.log(u))


def _choice_scores(log_probs: Tensor, cur: Tensor, unknown: Tensor, choice_temperature: float, progress: float,
                   generator: torch.Generator) -> Tensor:
    """Re-masking scores (``parallel_decode.py``): log-probability of the sampled token plus Gumbel noise annealed
    linearly as ``choice_temperature * (1 - progress)``; ``+inf`` where a token is already committed, so it
    is never re-masked."""
    confidence = log_probs.gather(-1, cur[..., None]).squeeze(-1)
    confidence = torch.where(unknown, confidence, torch.full_like(confidence, math.inf))
    noise = _gumbel(confidence.shape, generator, confidence.device)
    return confidence + choice_temperature * (1.0 - progress) * noise


def _check_common(model: Any, steps: int) -> None:
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if getattr(model, "causal", False):
        raise InputError("non-autoregressive decoding needs a bidirectional model (causal=False)")


# -- Algorithm 1 ----------------------------------------------------------------------------------------


@torch.no_grad()
def commit_decode(
    model: Any,
    prompt: Tensor | int | None,
    label: Tensor | int,
    cond_tokens: Tensor | None = None,
    cond_mask: Tensor | None = None,
    *,
    generator: torch.Generator,
    batch_size: int | None = None,
    steps: int = DEFAULT_STEPS,
    choice_temperature: float = DEFAULT_CHOICE_TEMPERATURE,
    temperature: float = 1.0,
    schedule: str | MaskScheduler = "cosine",
    guidance_scale: float = 0.0,
    uncond_prompt: Tensor | int | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Paper Algorithm 1 (COMMIT decoding), as the authors' ``videogvt/train_lib/parallel_decode.py``.

    Args:
        model: a bidirectional :class:`~magvit.transformer.MaskedTransformer` (put in eval mode by the caller).
        prompt: prompt id (``model.vocab.prompt_id(task.prompt)``), int or long ``[B]``; None if single-task.
        label: class id (``model.vocab.class_id(label or None)``), int or long ``[B]``.
        cond_tokens: ``z~``, long ``[B, N]`` or ``[B, t, h, w]``; None for tasks without a visual condition.
        cond_mask: bool, same shape: True on condition tokens (``task_token_mask``).
        generator: source of all randomness.
        batch_size: B when ``cond_tokens`` is None.
        steps: K decoding steps (12).
        choice_temperature: Gumbel temperature of the re-masking choice, annealed as ``t (1 - progress)``.
        temperature: sampling temperature of the tokens (1.0).
        schedule: mask scheduler name or object (``"cosine"``).
        guidance_scale: classifier-free guidance ``s`` (0 = off); the uncond pass has all masked
            positions [MASK], the "uncond" class and ``uncond_prompt`` (default: the same prompt).
        callback: called with a :class:`DecodeStep` after every step.

    Returns:
        long tokens with the shape of ``cond_tokens`` (``[B, N]`` without a condition).
    """
    _check_common(model, steps)
    z_cond, cond, shape = _condition(model, cond_tokens, cond_mask, batch_size)
    b, n = z_cond.shape
    device = z_cond.device
    prompt_ids = _ids(prompt, b, device, "prompt")
    label_ids = _ids(label, b, device, "label")
    uncond_prompt_ids = _ids(uncond_prompt, b, device, "uncond_prompt") if uncond_prompt is not None else prompt_ids
    uncond_label = torch.full((b,), model.vocab.uncond_id, dtype=torch.long, device=device)
    scheduler = _scheduler(schedule)
    mask_id = model.vocab.mask_id
    mask_tokens = torch.full_like(z_cond, mask_id)

    # Initial state: all N positions masked; z~ given at condition positions, [MASK] elsewhere.
    inputs = torch.where(cond, z_cond, mask_tokens)
    unknown = torch.ones_like(cond)
    cur = inputs
    for step in range(steps):
        uncond_inputs = torch.where(unknown, mask_tokens, inputs) if guidance_scale else None
        logits = _logits(model, inputs, prompt_ids, label_ids, guidance_scale, uncond_inputs,
                         uncond_prompt_ids, uncond_label)
        sampled, log_probs = _sample(logits, temperature, generator)
        cur = torch.where(unknown, sampled, inputs)  # committed tokens stay fixed
        if step == steps - 1:  # the output is the filled sequence of the last step
            if callback is not None:
                callback(DecodeStep(step, cur, cur, torch.zeros_like(unknown)))
            break
        progress = (step + 1) / steps
        gamma = float(scheduler.ratio(progress).clamp(MIN_RATIO, 1.0))
        # Counted against all N tokens and clipped to [1, unknown - 1], as the authors' parallel_decode.py.
        count = torch.clamp(torch.full((b,), math.floor(n * gamma), device=device), min=1)
        count = torch.minimum(count, unknown.sum(dim=1) - 1)
        score = _choice_scores(log_probs, cur, unknown, choice_temperature, progress, generator)
        cutoff = score.sort(dim=1).values.gather(1, (count - 1).clamp(min=0)[:, None])
        remask = (score <= cutoff) & (count > 0)[:, None]
        # COMMIT: masked condition positions get z~ again, other masked positions [MASK].
        inputs = torch.where(remask & cond, z_cond, torch.where(remask, mask_tokens, cur))
        unknown = remask
        if callback is not None:
            callback(DecodeStep(step, cur, inputs, unknown))
    return cur.reshape(shape)


# -- MaskGIT --------------------------------------------------------------------------------------------


@torch.no_grad()
def maskgit_decode(
    model: Any,
    prompt: Tensor | int | None,
    label: Tensor | int,
    cond_tokens: Tensor | None = None,
    cond_mask: Tensor | None = None,
    *,
    generator: torch.Generator,
    batch_size: int | None = None,
    steps: int = DEFAULT_STEPS,
    choice_temperature: float = DEFAULT_CHOICE_TEMPERATURE,
    temperature: float = 1.0,
    schedule: str | MaskScheduler = "cosine",
    callback: Callback | None = None,
) -> Tensor:
    """MaskGIT decoding with condition tokens fixed as given (latent-masking baseline, paper Table 5).

    Differences from :func:`commit_decode` (as MaskGIT's ``maskgit/libml/parallel_decode.py``): condition
    tokens are known from the start and never re-masked; the count is ``floor(unknown_at_start * gamma)``
    clipped to ``[1, unknown - 1]``, and the cut-off is strict (``score < n-th smallest``, 0-based index n).
    """
    _check_common(model, steps)
    z_cond, cond, shape = _condition(model, cond_tokens, cond_mask, batch_size)
    b, _ = z_cond.shape
    device = z_cond.device
    prompt_ids = _ids(prompt, b, device, "prompt")
    label_ids = _ids(label, b, device, "label")
    scheduler = _scheduler(schedule)
    mask_tokens = torch.full_like(z_cond, model.vocab.mask_id)

    inputs = torch.where(cond, z_cond, mask_tokens)
    unknown = ~cond
    unknown_at_start = unknown.sum(dim=1)
    cur = inputs
    for step in range(steps):
        sampled, log_probs = _sample(model(inputs, prompt_ids, label_ids), temperature, generator)
        cur = torch.where(unknown, sampled, inputs)
        progress = (step + 1) / steps
        if step == steps - 1 or not bool(unknown.any()):
            if callback is not None:
                callback(DecodeStep(step, cur, cur, torch.zeros_like(unknown)))
            break
        gamma = float(scheduler.ratio(progress).clamp(MIN_RATIO, 1.0))
        count = torch.floor(unknown_at_start * gamma).long()
        count = torch.clamp(torch.minimum(unknown.sum(dim=1) - 1, count), min=1)
        score = _choice_scores(log_probs, cur, unknown, choice_temperature, progress, generator)
        cutoff = score.sort(dim=1).values.gather(1, count[:, None])
        remask = score < cutoff
        inputs = torch.where(remask, mask_tokens, cur)
        unknown = remask
        if callback is not None:
            callback(DecodeStep(step, cur, inputs, unknown))
    return cur.reshape(shape)


# -- autoregressive -------------------------------------------------------------------------------------


@torch.no_grad()
def autoregressive_decode(
    model: Any,
    prompt: Tensor | int | None,
    label: Tensor | int,
    cond_tokens: Tensor | None = None,
    cond_mask: Tensor | None = None,
    *,
    generator: torch.Generator,
    batch_size: int | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Raster-order autoregressive decoding with a key/value cache (paper Table 6 baseline).

    One token per step; at condition positions (``cond_mask``) the condition token is fed instead of a
    sample, so frame prediction conditions on the first frames' tokens. ``temperature=0`` is greedy.
    """
    if not getattr(model, "causal", False):
        raise InputError("autoregressive decoding needs a causal model (MaskedTransformer(..., causal=True))")
    z_cond, cond, shape = _condition(model, cond_tokens, cond_mask, batch_size)
    b, n = z_cond.shape
    device = z_cond.device
    prompt_ids = _ids(prompt, b, device, "prompt")
    label_ids = _ids(label, b, device, "label")
    head = label_ids[:, None] if prompt_ids is None else torch.stack([prompt_ids, label_ids], dim=1)
    cache = model.init_cache(b, device=device)
    logits = model.step(head, cache)[:, -1]
    out = torch.empty_like(z_cond)
    for i in range(n):
        if temperature == 0.0:
            token = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        token = torch.where(cond[:, i], z_cond[:, i], token)
        out[:, i] = token
        if i < n - 1:
            logits = model.step(token[:, None], cache)[:, -1]
    return out.reshape(shape)
