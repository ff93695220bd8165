"""What the samplers share: the decoding state, token sampling and the re-masking scores.

A sampler (:class:`magvit.protocols.Sampler`) is one conditioning-and-decoding method of the paper (Tables 5
and 6). Like diffusers' ``AmusedScheduler``, which holds both ``add_noise`` and ``step``, one object holds
both sides of a method: :meth:`training_inputs` says how a training sequence is masked and conditioned,
:meth:`init_state` and :meth:`step` say how a sequence is decoded. The loop around the steps (the model
call, classifier-free guidance, the callback) is :func:`magvit.decoding.decode`, the same for every sampler.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

from magvit.config import build_part
from magvit.errors import InputError
from magvit.masking import MIN_RATIO, LossWeights, MaskedTokens
from magvit.protocols import MaskScheduler

__all__ = ["DecodeState", "ParallelSampler", "check_token_shapes", "choice_scores",
           "part_weights", "resolve_schedule", "sample_tokens", "transformer_options"]

# Algorithm 1 settings of the authors' configs (config.sampling in videogvt/configs/maskgvt_ucf101_config.py).
DEFAULT_STEPS = 12
DEFAULT_CHOICE_TEMPERATURE = 4.5


@attrs.frozen
class DecodeState:
    """The state of a decoding after ``step`` steps (what the decoding loop's ``callback`` receives).

    Attributes:
        step: the number of steps taken (0 before the first).
        tokens: long ``[B, N]``, every position filled: sampled where it was unknown, committed elsewhere
            (before the first step: the initial inputs).
        inputs: long ``[B, N]``, the model input of the next step.
        unknown: bool ``[B, N]``, the positions still to be decided (all False when ``done``).
        cond_tokens: long ``[B, N]``, the condition tokens ``z~`` (zeros without a visual condition).
        cond_mask: bool ``[B, N]``, True on condition tokens.
        mask_id: the model's ``[MASK]`` token id.
        done: True after the last step; ``tokens`` is then the output.
    """

    step: int
    tokens: Tensor
    inputs: Tensor
    unknown: Tensor
    cond_tokens: Tensor
    cond_mask: Tensor
    mask_id: int
    done: bool = False

    def finished(self, tokens: Tensor) -> DecodeState:
        """The final state: ``tokens`` is the output, nothing is unknown."""
        return attrs.evolve(self, step=self.step + 1, tokens=tokens, inputs=tokens,
                            unknown=torch.zeros_like(self.unknown), done=True)


def resolve_schedule(schedule: str | Mapping[str, Any] | MaskScheduler) -> MaskScheduler:
    """A mask schedule from its registry name, a ``{"name": ..., "config": {...}}`` spec, or the object itself."""
    if not _schedule_like(schedule):
        raise InputError(f"schedule must be a mask schedule name, a spec or a MaskScheduler, got {schedule!r}")
    return build_part("mask scheduler", schedule) if isinstance(schedule, (str, Mapping)) else schedule


def _schedule_like(value: Any) -> bool:
    """A registry name, a ``{"name", "config"}`` spec, or an object with ``ratio``."""
    return isinstance(value, (str, Mapping)) or callable(getattr(value, "ratio", None))


def _check_schedule(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    # The name is looked up when decoding starts (init_state): the registry builds every sampler once while
    # it loads, and a lookup from here would ask it for itself.
    if not _schedule_like(value):
        raise InputError(f"{type(instance).__name__}.{attribute.name} must be a mask schedule name, a "
                         f'{{"name", "config"}} spec or a MaskScheduler, got {value!r}')


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InputError(f"{type(instance).__name__}.{attribute.name} must be a number >= 0, got {value!r}")


def transformer_options(sampler: Any) -> dict[str, bool]:
    """The :class:`~magvit.transformer.MaskedTransformer` arguments of the architecture ``sampler`` trains and
    decodes with (``causal`` for ``ar``, ``prefix_condition`` for ``prefix``)."""
    return {"causal": bool(sampler.causal), "prefix_condition": bool(sampler.prefix_condition)}


def check_token_shapes(tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor) -> None:
    """The condition tokens, condition mask and training mask must have the shape of ``tokens``."""
    shape = tuple(tokens.shape)
    for name, value in (("cond_tokens", cond_tokens), ("cond_mask", cond_mask), ("masked", masked)):
        if tuple(value.shape) != shape:
            raise InputError(f"{name} must have the token shape {shape}, got {tuple(value.shape)}")


def part_weights(refine: Tensor, masked_plain: Tensor, recons: Tensor, weights: LossWeights) -> Tensor:
    """Per-token loss weights from the three parts of paper Eq. 3 (float ``[B, N]`` indicators)."""
    return refine * weights.refine + masked_plain * weights.mask + recons * weights.recons


def sample_tokens(logits: Tensor, temperature: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One code per position from ``softmax(logits / T)``, and ``log_softmax(logits)`` (the confidences)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    probs = log_probs.exp() if temperature == 1.0 else torch.softmax(logits.float() / temperature, dim=-1)
    b, n, k = probs.shape
    sampled = torch.multinomial(probs.view(b * n, k), 1, generator=generator).view(b, n)
    return sampled, log_probs


def _gumbel(shape: torch.Size, generator: torch.Generator, device: Any) -> Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(min=torch.finfo(torch.float32).tiny)
    return -torch.log(-torch.log(u))


def choice_scores(log_probs: Tensor, tokens: Tensor, unknown: Tensor, choice_temperature: float, progress: float,
                  generator: torch.Generator) -> Tensor:
    """Re-masking scores (``mask_by_random_topk`` in the authors' ``videogvt/train_lib/parallel_decode.py``):
    the log-probability of the sampled token plus Gumbel noise annealed linearly as
    ``choice_temperature * (1 - progress)``; ``+inf`` where a token is committed, so it is never re-masked."""
    confidence = log_probs.gather(-1, tokens[..., None]).squeeze(-1)
    confidence = torch.where(unknown, confidence, torch.full_like(confidence, math.inf))
    noise = _gumbel(confidence.shape, generator, confidence.device)
    return confidence + choice_temperature * (1.0 - progress) * noise


@attrs.frozen
class ParallelSampler(abc.ABC):
    """The shared part of the non-autoregressive samplers (MaskGIT-style parallel decoding, MaskGIT Sec. 3.2).

    Attributes:
        choice_temperature: Gumbel temperature of the re-masking choice, annealed as ``t (1 - progress)`` (4.5).
        temperature: sampling temperature of the tokens (1.0).
        schedule: the mask schedule of the decoding steps: a registry name (``"cosine"``), a
            ``{"name", "config"}`` spec, or a :class:`~magvit.protocols.MaskScheduler`.
    """

    choice_temperature: float = attrs.field(default=DEFAULT_CHOICE_TEMPERATURE, validator=_positive)
    temperature: float = attrs.field(default=1.0, validator=_positive)
    schedule: Any = attrs.field(default="cosine", validator=_check_schedule)

    name: ClassVar[str]
    #: the model this sampler decodes with: bidirectional (False) or causal (True)
    causal: ClassVar[bool] = False
    #: whether the model takes the condition tokens as a prefix (``MaskedTransformer(prefix_condition=True)``)
    prefix_condition: ClassVar[bool] = False
    #: other names the registry resolves to this sampler (e.g. the paper's name of a method)
    aliases: ClassVar[tuple[str, ...]] = ()
    #: whether :meth:`unconditional_inputs` exists, i.e. classifier-free guidance is possible
    supports_guidance: ClassVar[bool] = True
    #: the loss weights of the method when a config sets none (the authors' ``weight_mode``)
    default_weights: ClassVar[LossWeights] = LossWeights()

    @abc.abstractmethod
    def training_inputs(self, tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor, mask_id: int,
                        weights: LossWeights | None = None) -> MaskedTokens:
        """The model inputs, targets and loss weights of one training batch (flat ``[B, N]`` tensors)."""

    def maskable(self, cond_mask: Tensor) -> Tensor:
        """Bool ``[B, N]``: the positions the training mask is drawn over (every position by default); the
        masked count is drawn over these only."""
        return torch.ones_like(cond_mask)

    def init_state(self, cond_tokens: Tensor, cond_mask: Tensor, mask_id: int) -> DecodeState:
        """The state before the first step: condition tokens ``z~`` where given, ``[MASK]`` elsewhere."""
        self.scheduler()  # an unknown schedule name fails here, before the first model call
        inputs = torch.where(cond_mask, cond_tokens, torch.full_like(cond_tokens, mask_id))
        return DecodeState(0, inputs, inputs, self.initially_unknown(cond_mask), cond_tokens, cond_mask, mask_id)

    def scheduler(self) -> MaskScheduler:
        """The mask schedule object of :attr:`schedule`."""
        try:
            return resolve_schedule(self.schedule)
        except KeyError as exc:
            raise InputError(f"{self.name} sampler: {exc.args[0]}") from None

    @abc.abstractmethod
    def initially_unknown(self, cond_mask: Tensor) -> Tensor:
        """Bool ``[B, N]``: the positions the decoding decides."""

    def model_kwargs(self, state: DecodeState) -> dict[str, Tensor]:
        """Extra model inputs of a step beyond the visual inputs, prompt and class (none by default)."""
        return {}

    def unconditional_inputs(self, state: DecodeState) -> Tensor:
        """The visual inputs of the unconditional pass of classifier-free guidance: the unknown positions as
        [MASK] (the authors' ``uncond_masked_inputs`` in ``videogvt/train_lib/mask_utils.py``)."""
        return torch.where(state.unknown, torch.full_like(state.inputs, state.mask_id), state.inputs)

    def step(self, state: DecodeState, logits: Tensor, steps: int, generator: torch.Generator) -> DecodeState:
        """Sample every unknown position from ``logits`` (codebook logits ``[B, N, K]``), then choose which
        to decide for good; after ``steps`` steps (or when nothing is left to decide) the state is done."""
        sampled, log_probs = sample_tokens(logits, self.temperature, generator)
        tokens = torch.where(state.unknown, sampled, state.inputs)  # committed tokens stay fixed
        if state.step == steps - 1 or self._nothing_left(state):
            return state.finished(tokens)
        progress = (state.step + 1) / steps
        gamma = float(self.scheduler().ratio(progress).clamp(MIN_RATIO, 1.0))
        score = choice_scores(log_probs, tokens, state.unknown, self.choice_temperature, progress, generator)
        remask = self.remask(state, score, gamma)
        return attrs.evolve(state, step=state.step + 1, tokens=tokens, inputs=self.next_inputs(state, tokens, remask),
                            unknown=remask)

    def _nothing_left(self, state: DecodeState) -> bool:
        """Whether decoding may stop before its last step (MaskGIT stops when nothing is unknown)."""
        return False

    @abc.abstractmethod
    def remask(self, state: DecodeState, score: Tensor, gamma: float) -> Tensor:
        """Bool ``[B, N]``: the positions masked again for the next step, from the re-masking ``score``."""

    def next_inputs(self, state: DecodeState, tokens: Tensor, remask: Tensor) -> Tensor:
        """The model input of the next step: re-masked positions as [MASK], the others as decided."""
        return torch.where(remask, torch.full_like(tokens, state.mask_id), tokens)

