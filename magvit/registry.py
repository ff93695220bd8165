"""The plugin registry: one pluggy ``PluginManager`` for tasks, tokenizers and mask schedulers.

Built-in components are registered by the same hooks as third-party plugins (:mod:`magvit.hookspecs`);
third-party plugins are found through the ``"magvit"`` entry-point group. Rules:

* a name registered by two plugins is a :class:`~magvit.errors.RegistryError` naming both;
* a plugin that fails to import (or whose hook raises) is reported by name with a warning and in
  ``magvit plugins``; the other plugins still load;
* looking up an unknown name raises a ``KeyError`` listing the known names.

The module-level functions (:func:`task_names`, :func:`get_task`, ...) use one lazily built default
:class:`Registry`; :func:`reset` rebuilds it (tests, or after installing a plugin in-process).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import attrs
import pluggy

from magvit import hookspecs
from magvit.errors import RegistryError
from magvit.hookspecs import PROJECT, hookimpl

__all__ = [
    "BUILTIN_PLUGINS",
    "Entry",
    "PluginError",
    "Registry",
    "default_registry",
    "get_mask_scheduler",
    "get_task",
    "get_tokenizer",
    "hookimpl",
    "mask_scheduler_names",
    "reset",
    "task_names",
    "tokenizer_names",
]

#: Modules of the built-in plugins, registered exactly like third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = ("magvit.tasks", "magvit.masking", "magvit.tokenizers")

#: hook name -> the kind of component it adds
_KINDS = {
    "magvit_add_tasks": "task",
    "magvit_add_tokenizers": "tokenizer",
    "magvit_add_mask_schedulers": "mask scheduler",
}


@attrs.frozen
class Entry:
    """One registered component: its name, factory and the plugin (and distribution) it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    source: str


@attrs.frozen
class PluginError:
    """A plugin that could not be loaded or whose hook raised."""

    plugin: str
    source: str
    error: str


class Registry:
    """Tasks, tokenizers and mask schedulers collected from all plugins.

    Args:
        builtins: module paths of the built-in plugins.
        entry_points: the third-party entry points to load; ``None`` reads the ``"magvit"`` group of the
            installed distributions.
    """

    def __init__(
        self,
        builtins: Iterable[str] = BUILTIN_PLUGINS,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.errors: list[PluginError] = []
        self._sources: dict[str, str] = {}
        for module in builtins:
            self._load(module, f"magvit {_version('magvit')} (built-in)", lambda m=module: importlib.import_module(m))
        if entry_points is None:
            entry_points = metadata.entry_points(group=PROJECT)
        for ep in entry_points:
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown distribution"
            self._load(ep.name, dist, ep.load)
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in _KINDS.values()}
        for hook_name, kind in _KINDS.items():
            self._collect(hook_name, kind)

    def _load(self, name: str, source: str, load: Callable[[], object]) -> None:
        try:
            plugin = load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported, not raised
            self._report(name, source, f"failed to import: {type(exc).__name__}: {exc}")
            return
        if self.pm.is_registered(plugin) or self.pm.get_plugin(name) is not None:
            return
        self.pm.register(plugin, name=name)
        self._sources[name] = source

    def _report(self, plugin: str, source: str, error: str) -> None:
        self.errors.append(PluginError(plugin, source, error))
        warnings.warn(f"magvit plugin {plugin!r} ({source}) {error}; the other plugins still load", stacklevel=3)

    def _collect(self, hook_name: str, kind: str) -> None:
        table = self._entries[kind]
        caller = getattr(self.pm.hook, hook_name)
        # get_hookimpls() is in registration order (built-ins first); pluggy *calls* them LIFO, which
        # is why each implementation is called here directly: the first registrant keeps its name.
        for impl in caller.get_hookimpls():
            source = self._sources.get(impl.plugin_name, "")
            try:
                added = dict(impl.function() or {})
            except Exception as exc:  # noqa: BLE001 - a broken hook disables only its own plugin
                self._report(impl.plugin_name, source, f"raised in {hook_name}: {type(exc).__name__}: {exc}")
                continue
            for name, factory in added.items():
                if name in table:
                    raise RegistryError(
                        f"{kind} {name!r} is registered twice: by plugin {table[name].plugin!r} "
                        f"({table[name].source}) and by plugin {impl.plugin_name!r} ({source}); "
                        "uninstall one of them or rename the component"
                    )
                table[name] = Entry(kind, name, factory, impl.plugin_name, source)

    # -- lookups ------------------------------------------------------------------------------
    def entries(self, kind: str) -> list[Entry]:
        """All registered components of ``kind`` ("task", "tokenizer", "mask scheduler")."""
        return list(self._entries[kind].values())

    def names(self, kind: str) -> list[str]:
        return list(self._entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        table = self._entries[kind]
        if name not in table:
            known = ", ".join(table) or "none"
            raise KeyError(f"unknown {kind} {name!r}; registered {kind}s: {known}")
        return table[name]

    def build(self, kind: str, name: str, **kwargs: Any) -> Any:
        return self.entry(kind, name).factory(**kwargs)

    def plugins(self) -> list[tuple[str, str]]:
        """``(plugin name, source)`` of every loaded plugin, in load order."""
        return list(self._sources.items())


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(not installed)"


@functools.cache
def default_registry() -> Registry:
    """The process-wide registry, built on first use."""
    return Registry()


def reset() -> None:
    """Forget the default registry so the next lookup rebuilds it (e.g. after installing a plugin)."""
    default_registry.cache_clear()


def task_names() -> list[str]:
    """Names of all registered tasks, built-ins first."""
    return default_registry().names("task")


def get_task(name: str, **kwargs: Any) -> Any:
    """Build the task ``name``; ``kwargs`` go to its constructor (e.g. ``cond_frames=5``)."""
    return default_registry().build("task", name, **kwargs)


def tokenizer_names() -> list[str]:
    """Names of all registered tokenizers."""
    return default_registry().names("tokenizer")


def get_tokenizer(name: str, **kwargs: Any) -> Any:
    """Build the tokenizer ``name`` (e.g. ``get_tokenizer("vq3d", preset="B", resolution=128)``)."""
    return default_registry().build("tokenizer", name, **kwargs)


def mask_scheduler_names() -> list[str]:
    """Names of all registered mask schedules."""
    return default_registry().names("mask scheduler")


def get_mask_scheduler(name: str, **kwargs: Any) -> Any:
    """Build the mask schedule ``name`` (``"cosine"`` is the paper's default)."""
    return default_registry().build("mask scheduler", name, **kwargs)
