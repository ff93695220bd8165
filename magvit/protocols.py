"""The three extension points of magvit and the records they exchange.

* :class:`Task` -- a conditioning task (paper Sec. 3.2): a pixel region kept from the real video and a
  padding function for the rest. A task never sees a tokenizer; which tokens are condition tokens is
  derived by :func:`magvit.masking.condition_token_mask` from the pixel mask and the supervoxel size.
* :class:`Tokenizer` -- video <-> discrete tokens (paper Sec. 3.1).
* :class:`MaskScheduler` -- the mask-ratio schedule gamma(progress) shared by training and decoding
  (paper Sec. 3.2, Algorithm 1; MaskGIT Sec. 3.3).

Conventions (the same throughout magvit): videos are float ``[B, C, T, H, W]`` in ``[0, 1]``; token grids are long
``[B, t, h, w]``; flat token sequences are their row-major reshape ``[B, t*h*w]``.
"""

from __future__ import annotations

import inspect
from typing import Protocol, get_type_hints, runtime_checkable

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
    fields = get_type_hints(Task)
    missing = [attr for attr in [*fields, "condition"] if not hasattr(task, attr)]
    if missing:
        return f"{type(task).__name__!r} object is not a Task: it has no {', '.join(missing)}"
    for attr, kind in fields.items():
        value = getattr(task, attr)
        if not isinstance(value, kind):
            return f"a Task's {attr} must be a {kind.__name__}, got {value!r} ({type(value).__name__})"
    if not callable(task.condition):
        return f"a Task's condition must be a method, got {task.condition!r}"
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
    """

    codebook_size: int
    downsample: tuple[int, int, int]

    def encode(self, video: Tensor) -> Tensor:
        """Float video ``[B, 3, T, H, W]`` in [0, 1] -> long tokens ``[B, t, h, w]``."""
        ...

    def decode(self, tokens: Tensor) -> Tensor:
        """Long tokens ``[B, t, h, w]`` -> float video ``[B, 3, T, H, W]``."""
        ...

    def token_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The token grid ``(t, h, w)`` of a ``frames x height x width`` video."""
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
