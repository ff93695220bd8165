"""The ten built-in MAGVIT tasks (paper Table 1), registered as a plugin.

Each task only declares a pixel region, a padding function, a prompt key and whether it uses the class
label; the library derives condition tokens from the pixel mask (:func:`magvit.masking.condition_token_mask`).

Prompt tokens: by default each task has its own prompt (``prompt_sharing="paper"``). The authors' code
shares one prompt between all six in/outpainting tasks and one between fp and cfp
(``videogvt/train_lib/task_registry.py``);
:func:`build_tasks` with ``prompt_sharing="code"`` reproduces that. ``prompt_sharing="none"`` is the authors'
single-task model: no task prompt at all (they add task tokens only when ``config.multi_task`` is set,
``videogvt/train_lib/maskgvt_train_lib.py``), so the model takes any task's condition at generation
(:func:`transformer_prompts`).

``unc`` (unconditional generation, :mod:`magvit.tasks.unconditional`) is registered beside the ten but is a
baseline's task (paper Table 4's B-UNC): ``"all"`` means the paper's ten plus plugin tasks, ``unc`` must be
named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from magvit import registry
from magvit.config import build_part
from magvit.errors import InputError
from magvit.hookspecs import hookimpl
from magvit.tasks.class_conditional import ClassFramePrediction, ClassGeneration
from magvit.tasks.inpainting import CentralInpainting, DynamicInpainting
from magvit.tasks.interpolation import FrameInterpolation
from magvit.tasks.outpainting import CentralOutpainting, DynamicOutpainting, HorizontalOutpainting, VerticalOutpainting
from magvit.tasks.prediction import FramePrediction
from magvit.tasks.unconditional import UnconditionalGeneration

__all__ = [
    "ALL_TASKS",
    "BASELINE_TASKS",
    "BUILTIN_TASKS",
    "PROMPT_SHARING",
    "CentralInpainting",
    "CentralOutpainting",
    "ClassFramePrediction",
    "ClassGeneration",
    "DynamicInpainting",
    "DynamicOutpainting",
    "FrameInterpolation",
    "FramePrediction",
    "HorizontalOutpainting",
    "UnconditionalGeneration",
    "VerticalOutpainting",
    "all_task_names",
    "build_task",
    "build_tasks",
    "transformer_prompts",
]

BUILTIN_TASKS: dict[str, Callable[..., Any]] = {
    "fp": FramePrediction,
    "fi": FrameInterpolation,
    "opc": CentralOutpainting,
    "opv": VerticalOutpainting,
    "oph": HorizontalOutpainting,
    "opd": DynamicOutpainting,
    "ipc": CentralInpainting,
    "ipd": DynamicInpainting,
    "cg": ClassGeneration,
    "cfp": ClassFramePrediction,
    "unc": UnconditionalGeneration,
}

#: Built-in tasks of the paper's single-task baselines only (Table 4's B-UNC): registered, but not in "all".
BASELINE_TASKS: tuple[str, ...] = ("unc",)

#: The paper's ten tasks in the order of paper Table 4.
ALL_TASKS: tuple[str, ...] = tuple(n for n in BUILTIN_TASKS if n not in BASELINE_TASKS)

#: Prompt keys per sharing mode: "paper" gives every task its own prompt; "code" follows the authors'
#: release, where in/outpainting share the outpainting token and cfp shares fp's token (task_registry.py).
#: "none" builds no prompt at all (:func:`transformer_prompts`): the authors' single-task models.
PROMPT_SHARING: dict[str, dict[str, str]] = {
    "paper": {},
    "code": {"cfp": "fp", **{name: "op" for name in ("opc", "opv", "oph", "opd", "ipc", "ipd")}},
    "none": {},
}


@hookimpl
def magvit_add_tasks() -> Mapping[str, Callable[..., Any]]:
    return BUILTIN_TASKS


def build_task(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The registered task ``name`` built with ``options``; every mistake in them is one :class:`InputError`.

    An unknown name lists the registered tasks; an unknown option lists the task's options (``task 'fp' has
    no option 'foo'; its options: cond_frames, ...``); a value its constructor refuses names the task
    (:func:`magvit.config.build_part`).
    """
    return build_part("task", {"name": name, "config": {} if options is None else options})


def all_task_names() -> list[str]:
    """What ``"all"`` means: every registered task (built-ins first, then plugins) but the baseline-only
    :data:`BASELINE_TASKS`."""
    return [n for n in registry.task_names() if n not in BASELINE_TASKS]


def transformer_prompts(tasks: Iterable[Any], prompt_sharing: str = "paper") -> list[str]:
    """The prompt keys the transformer is built with for ``tasks``: none under ``prompt_sharing="none"``
    (a single-task model, which then takes every registered task's condition), else each task's prompt."""
    if prompt_sharing not in PROMPT_SHARING:
        raise InputError(f"prompt_sharing must be one of {sorted(PROMPT_SHARING)}, got {prompt_sharing!r}")
    return [] if prompt_sharing == "none" else [t.prompt for t in tasks]


def build_tasks(
    names: Iterable[str] | str = "all",
    *,
    prompt_sharing: str = "paper",
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Any]:
    """Build tasks by registry name.

    Args:
        names: task names, or ``"all"`` (:func:`all_task_names`: the paper's ten and plugin tasks).
        prompt_sharing: ``"paper"`` (one prompt per task), ``"code"`` (the authors' shared prompts) or
            ``"none"`` (the tasks keep their own prompt keys; :func:`transformer_prompts` gives the model none).
        options: per-task constructor arguments, e.g. ``{"fp": {"cond_frames": 5}}``.
    """
    if prompt_sharing not in PROMPT_SHARING:
        raise InputError(f"prompt_sharing must be one of {sorted(PROMPT_SHARING)}, got {prompt_sharing!r}")
    if isinstance(names, str):
        names = all_task_names() if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if options is not None and not isinstance(options, Mapping):
        raise InputError(f"task options must map task names to their options, e.g. {{'fp': {{'cond_frames': 5}}}}, "
                         f"got {options!r}")
    options = dict(options or {})
    unknown = set(options) - set(names)
    if unknown:
        raise InputError(f"options given for tasks that are not in the task list: {sorted(unknown)}")
    tasks = []
    for name in names:
        given = options.get(name, {})
        kwargs = dict(given) if isinstance(given, Mapping) else given
        shared = PROMPT_SHARING[prompt_sharing].get(name)
        if shared is not None and isinstance(kwargs, dict):
            kwargs.setdefault("prompt", shared)
        tasks.append(build_task(name, kwargs))
    return tasks
