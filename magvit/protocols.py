"""The extension points of magvit and the records they exchange.

* :class:`Task` -- a conditioning task (paper Sec. 3.2): a pixel region kept from the real video and a
  padding function for the rest. A task never sees a tokenizer; which tokens are condition tokens is
  derived by :func:`magvit.masking.condition_token_mask` from the pixel mask and the supervoxel size.
* :class:`Tokenizer` -- video <-> discrete tokens (paper Sec. 3.1).
* :class:`MaskScheduler` -- the mask-ratio schedule gamma(progress) shared by training and decoding
  (paper Sec. 3.2, Algorithm 1; MaskGIT Sec. 3.3).
* :class:`Sampler` -- a conditioning-and-decoding method (paper Tables 5 and 6): how a training sequence is
  masked and conditioned, and one decoding step.

An optional capability is a protocol of its own, checked with ``isinstance``: :class:`AnalyticTokenMask`.

Conventions (the same throughout magvit): videos are float ``[B, C, T, H, W]`` in ``[0, 1]``; token grids are long
``[B, t, h, w]``; flat token sequences are their row-major reshape ``[B, t*h*w]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, get_type_hints, runtime_checkable

import attrs
import torch
from torch import Tensor


@attrs.frozen
class Condition:
    """What a task extracts from a video.

    Attributes:
        video: the padded condition video (paper's v-tilde), float ``[B, 3, T, H, W]``, same shape as the input.
        mask: bool ``[B, 1, T, H, W]``, True on interior-condition pixels (real pixels kept from the video).
            All False for tasks without a visual condition (class-conditional generation).
    """

    video: Tensor
    mask: Tensor

    def __attrs_post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            raise ValueError(f"Condition.mask must be bool, got {self.mask.dtype}")
        b, _, t, h, w = self.video.shape
        if tuple(self.mask.shape) != (b, 1, t, h, w):
            raise ValueError(
                f"Condition.mask must have shape {(b, 1, t, h, w)} to match the video, got {tuple(self.mask.shape)}"
            )


@runtime_checkable
class Task(Protocol):
    """A conditioning task.

    Attributes:
        name: registry key, e.g. ``"fp"``.
        prompt: key of the task-prompt token; tasks may share one (the authors' code shares a single
            prompt between all in/outpainting tasks, and between fp and cfp).
        uses_class: whether the class token carries the real label (otherwise the "uncond" class token).
        needs_video: False only for tasks with no visual condition (class-conditional generation).
        deterministic: True when :meth:`condition` is a deterministic function of the video. Token caches
            (pre-tokenised shards) only hold deterministic tasks; random ones are tokenised on the fly.

    Optional attributes, read with :func:`task_title` and :func:`task_description` (a task without them
    is still a Task; they are not annotated here, so ``isinstance`` and :func:`task_problem` do not
    require them):

        title: the task's name for people, e.g. ``"frame prediction"`` (default: ``name``).
        description: one line saying what is given and what is generated, e.g. ``"the first frame is
            given, the rest is generated"`` (default: the first line of the class docstring).
    """

    name: str
    prompt: str
    uses_class: bool
    needs_video: bool
    deterministic: bool

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        """Return the padded condition video and the interior-condition pixel mask for ``video``."""
        ...


def task_problem(task: object) -> str | None:
    """Why ``task`` does not satisfy :class:`Task`, or ``None`` when it does.

    Stricter than ``isinstance(task, Task)``, which only checks that the attributes exist: the library
    reads them as prompt keys and flags, so each attribute must have its annotated type and ``condition``
    must be callable.
    """
    problem = _protocol_problem(task, Task, ["condition"])
    if problem is None and not callable(task.condition):
        problem = f"a Task's condition must be a method, got {task.condition!r}"
    return problem


def _protocol_problem(obj: object, protocol: type, methods: list[str]) -> str | None:
    """Why ``obj`` lacks an attribute or method of ``protocol``, or has an attribute of another type."""
    fields = get_type_hints(protocol)
    missing = [attr for attr in [*fields, *methods] if not hasattr(obj, attr)]
    if missing:
        return f"{type(obj).__name__!r} object is not a {protocol.__name__}: it has no {', '.join(missing)}"
    for attr, kind in fields.items():
        value = getattr(obj, attr)
        if not isinstance(value, kind):
            return (f"a {protocol.__name__}'s {attr} must be a {kind.__name__}, got {value!r} "
                    f"({type(value).__name__})")
    return None


def task_title(task: object) -> str:
    """The task's optional ``title`` (see :class:`Task`), else its ``name``."""
    title = getattr(task, "title", None)
    return title if isinstance(title, str) and title.strip() else str(task.name)


def task_description(task: object) -> str:
    """The task's optional one-line ``description`` (see :class:`Task`), else the first line of its class
    docstring, else ``""``."""
    description = getattr(task, "description", None)
    if isinstance(description, str) and description.strip():
        return " ".join(description.split())
    lines = (inspect.getdoc(type(task)) or "").splitlines()  # getdoc drops the leading blank lines
    return lines[0].strip() if lines else ""


@runtime_checkable
class Tokenizer(Protocol):
    """Video <-> tokens.

    Attributes:
        codebook_size: number of discrete codes; token ids lie in ``[0, codebook_size)``.
        downsample: the supervoxel size ``(ft, fh, fw)``: one token covers ``ft x fh x fw`` pixels.
        config: the constructor arguments that build it again through the registry (recorded by
            :func:`magvit.config.register_to_config`, or the fields of an attrs class).
        training: whether it is in training mode.

    A tokenizer is a ``torch.nn.Module``: the pipeline and the training stages freeze it, move it, and
    save and load its weights with the module methods below.
    """

    codebook_size: int
    downsample: tuple[int, int, int]
    config: Mapping[str, Any]
    training: bool

    def encode(self, video: Tensor) -> Tensor:
        """Float video ``[B, 3, T, H, W]`` in [0, 1] -> long tokens ``[B, t, h, w]``."""
        ...

    def decode(self, tokens: Tensor) -> Tensor:
        """Long tokens ``[B, t, h, w]`` -> float video ``[B, 3, T, H, W]``."""
        ...

    def token_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The token grid ``(t, h, w)`` of a ``frames x height x width`` video."""
        ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def requires_grad_(self, requires_grad: bool = True) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[Tensor]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...


@runtime_checkable
class AnalyticTokenMask(Protocol):
    """An optional capability of a :class:`Task`: its condition region evaluated on the token grid, as the
    authors' code does (``latent_mask`` in ``videogvt/train_lib/cond_utils.py``) instead of derived from the
    pixel mask. Only ``token_rule="analytic"`` needs it (:func:`magvit.masking.task_token_mask`)."""

    def analytic_token_mask(self, frames: int, token_shape: tuple[int, int, int]) -> Tensor:
        """Bool ``[t, h, w]``: the condition tokens of a clip of ``frames`` frames with grid ``token_shape``."""
        ...


@runtime_checkable
class MaskScheduler(Protocol):
    """The mask schedule gamma: progress in [0, 1] -> fraction of tokens masked.

    Training samples progress uniformly; decoding step ``k`` of ``K`` uses progress ``k / K``.
    A schedule must be decreasing with ``ratio(0) ~ 1`` and ``ratio(1) ~ 0`` (MaskGIT Sec. 3.3).
    """

    name: str

    def ratio(self, progress: Tensor | float) -> Tensor:
        """Mask ratio gamma for ``progress`` (a float or a float tensor), as a float64 tensor."""
        ...


@runtime_checkable
class Sampler(Protocol):
    """A conditioning-and-decoding method: both sides of it in one object, as diffusers' ``AmusedScheduler``
    holds ``add_noise`` and ``step`` (built-ins in :mod:`magvit.samplers`).

    Attributes:
        name: registry key, e.g. ``"commit"``.
        causal: whether it decodes with a causal (autoregressive) model rather than a bidirectional one.
        supports_guidance: whether classifier-free guidance can be used (``unconditional_inputs`` works).
        default_weights: the refine / mask / recons loss weights of the method when a config sets none
            (a :class:`magvit.masking.LossWeights`).

    The decoding loop (:func:`magvit.decoding.decode`) calls :meth:`init_state` once, then for each step
    calls the model on ``state.inputs`` (plus :meth:`model_kwargs`) and :meth:`step` with its codebook logits,
    until the state is ``done``.

    A sampler that calls the model itself (one position per step through a key/value cache, as ``ar``) also
    implements :class:`StepwiseSampler`.
    """

    name: str
    causal: bool
    supports_guidance: bool
    #: whether the model needs the condition-segment embedding of the prefix-condition baseline
    prefix_condition: bool
    #: other registry names of the method (e.g. ``("latent",)`` for ``maskgit``, the paper's name)
    aliases: tuple

    def maskable(self, cond_mask: Tensor) -> Tensor:
        """Bool ``[B, N]``: the positions the training mask is drawn over (e.g. all but the condition tokens
        for latent masking)."""
        ...

    def training_inputs(self, tokens: Tensor, cond_tokens: Tensor, cond_mask: Tensor, masked: Tensor,
                        mask_id: int, weights: object = None) -> object:
        """The :class:`magvit.masking.MaskedTokens` (inputs, targets, loss weights) of a training batch; all
        tensors flat ``[B, N]``, ``masked`` the positions drawn by the mask schedule."""
        ...

    def init_state(self, cond_tokens: Tensor, cond_mask: Tensor, mask_id: int) -> object:
        """The :class:`magvit.samplers.DecodeState` before the first decoding step."""
        ...

    def step(self, state: object, logits: Tensor, steps: int, generator: torch.Generator) -> object:
        """The state after one step, given the model's codebook logits ``[B, N, K]`` for ``state.inputs``."""
        ...

    def model_kwargs(self, state: object) -> dict[str, Tensor]:
        """Model inputs of a step beyond the visual inputs, prompt and class (e.g. a condition prefix)."""
        ...

    def unconditional_inputs(self, state: object) -> Tensor:
        """Visual inputs of the unconditional pass of classifier-free guidance."""
        ...


@runtime_checkable
class StepwiseSampler(Protocol):
    """Optional capability of a :class:`Sampler`: it fixes its own number of steps and obtains each step's
    logits itself (``ar``: one token per step through the key/value cache); the decoding loop still owns the
    steps, the callback and the stop."""

    def num_steps(self, steps: int, num_tokens: int) -> int:
        """The number of decoding steps for ``num_tokens`` visual tokens (``steps`` is what was asked)."""
        ...

    def model_logits(self, model: object, state: object, prompt: Tensor | None, label: Tensor
                     ) -> tuple[Tensor, object]:
        """The codebook logits of this step and the state the model call leaves (e.g. a grown cache)."""
        ...


def sampler_problem(sampler: object) -> str | None:
    """Why ``sampler`` does not satisfy :class:`Sampler`, or ``None`` when it does."""
    methods = ["training_inputs", "init_state", "step", "model_kwargs", "unconditional_inputs", "default_weights",
               "maskable"]
    return _protocol_problem(sampler, Sampler, methods)
