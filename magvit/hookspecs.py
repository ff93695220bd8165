"""Hook specifications of the ``magvit`` plugin system (pluggy project ``"magvit"``).

A plugin is any module or object with functions marked ``@magvit.hookimpl`` whose names match the specs
below. Third-party packages expose their plugin under the ``"magvit"`` entry-point group::

    [project.entry-points.magvit]
    my_tasks = "my_package.plugin"

The built-in tasks, tokenizers, mask schedulers, samplers and the shipped demo pipeline register through these very hooks.
Each hook returns a mapping ``name -> factory``; ``factory(**kwargs)`` builds the component, so a
config can set every constructor argument: a spec ``{"name": name, "config": kwargs}`` (:mod:`magvit.config`).
To be saved in a checkpoint and built again, the component records its constructor arguments: it is an
``attrs`` class, or its ``__init__`` is decorated with :func:`magvit.config.register_to_config`.

A plugin is loaded whole or not at all (:mod:`magvit.registry`): if it fails to import, a hook raises or
returns anything but ``{str: callable}``, or one of its names is taken already, the plugin is disabled with
a warning naming it, and every other plugin still loads.
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
    ``name`` equals the key; ``factory()`` with no arguments must build a default task (it is built once
    when the plugin loads, to check it). Names are global: the first plugin to register a name keeps it
    (built-ins load first), and a later plugin adding it is disabled.
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


@hookspec
def magvit_add_samplers() -> Mapping[str, Callable[..., Any]]:
    """Return the samplers (conditioning-and-decoding methods) this plugin adds, as ``{name: factory}``.

    ``factory(**options)`` must return an object implementing :class:`magvit.protocols.Sampler` whose
    ``name`` equals the key; ``factory()`` with no arguments must build a default sampler (it is built once
    when the plugin loads, to check it). A sampler holds both sides of a method: how a training sequence is
    masked and conditioned (``training_inputs``) and one decoding step (``init_state``, ``step``); the
    decoding loop, guidance and progress are the library's (:func:`magvit.decoding.decode`). Built-ins:
    ``commit``, ``maskgit``, ``prefix``.
    """


@hookspec
def magvit_add_pipelines() -> Mapping[str, Callable[..., Any]]:
    """Return the named pretrained pipelines this plugin ships, as ``{name: factory}``.

    ``factory()`` takes no arguments and returns the path (``str`` or :class:`os.PathLike`) of a folder
    written by :meth:`magvit.pipeline.MagvitPipeline.save_pretrained` (``config.json`` and
    ``model.safetensors``) or of a single-file pipeline checkpoint (``.pt``), for example one inside the
    plugin's package. ``MagvitPipeline.from_pretrained(name)`` loads it; nothing is downloaded.
    """
