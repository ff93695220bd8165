"""Hook specifications of the ``magvit`` plugin system (pluggy project ``"magvit"``).

A plugin is any module or object with functions marked ``@magvit.hookimpl`` whose names match the specs
below. Third-party packages expose their plugin under the ``"magvit"`` entry-point group::

    [project.entry-points.magvit]
    my_tasks = "my_package.plugin"

The built-in tasks, tokenizers and mask schedulers register through these very hooks.
Each hook returns a mapping ``name -> factory``; ``factory(**kwargs)`` builds the component, so a
config can set every constructor argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

PROJECT = "magvit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def magvit_add_tasks() -> Mapping[str, Callable[..., Any]]:
    """Return the conditioning tasks this plugin adds, as ``{name: factory}``.

    ``factory(**kwargs)`` must return an object implementing :class:`magvit.protocols.Task` whose
    ``name`` equals the key. Names are global: a name that another plugin already registered is an error.
    """


@hookspec
def magvit_add_tokenizers() -> Mapping[str, Callable[..., Any]]:
    """Return the tokenizers this plugin adds, as ``{name: factory}``.

    ``factory(**kwargs)`` must return an object implementing :class:`magvit.protocols.Tokenizer`
    (for example ``get_tokenizer("vq3d", preset="B", resolution=128)``).
    """


@hookspec
def magvit_add_mask_schedulers() -> Mapping[str, Callable[..., Any]]:
    """Return the mask-ratio schedules this plugin adds, as ``{name: factory}``.

    ``factory(**kwargs)`` must return an object implementing :class:`magvit.protocols.MaskScheduler`.
    """
