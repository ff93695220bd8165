"""The plugin registry: one pluggy ``PluginManager`` for tasks, tokenizers, mask schedulers, samplers and named
pipelines.

Built-in components are registered by the same hooks as third-party plugins (:mod:`magvit.hookspecs`);
third-party plugins are found through the ``"magvit"`` entry-point group. Plugins load one at a time,
built-ins first, and each plugin is either loaded whole or disabled whole. A plugin is disabled when

* importing it, registering its hooks or calling a hook raises anything (``SystemExit`` included; only
  ``KeyboardInterrupt`` goes through), or pluggy refuses a hook's signature;
* a hook returns something other than a mapping ``{name: factory}`` of str names to callables;
* a task or sampler factory, called once with no arguments, does not return a
  :class:`~magvit.protocols.Task` / :class:`~magvit.protocols.Sampler` whose ``name`` is its key (tokenizer and
  mask-schedule factories are only checked to be callable: building a tokenizer allocates a model);
* it adds a name that an earlier plugin registered: the first registration is kept (built-ins win) and the
  later plugin loses all its names, not only the clashing one, so that no plugin is half loaded.

A disabled plugin is unregistered, keeps no name, gives one :class:`PluginWarning` naming it, its
distribution, the reason and what to do, and is listed in ``errors`` (and by ``magvit plugins``); every
other plugin still loads. Looking up an unknown name raises a ``KeyError`` listing the known names.

A loaded plugin with a ``@hookimpl`` function whose name matches no hook spec (pluggy's
``check_pending`` rule: a misspelt ``magvit_add_task`` is never called) stays loaded, since its other hooks
work, but gives one :class:`PluginWarning` per such function, naming the closest hook, and is listed in
``problems`` (and by ``magvit plugins``).

The module-level functions (:func:`task_names`, :func:`get_task`, ...) use one lazily built default
:class:`Registry`; :func:`reset` rebuilds it (tests, or after installing a plugin in-process).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import reprlib
import textwrap
import warnings
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

import attrs
import pluggy

from magvit import hookspecs
from magvit.errors import InputError
from magvit.hookspecs import PROJECT, hookimpl

__all__ = [
    "BUILTIN_PLUGINS",
    "Entry",
    "PluginError",
    "PluginProblem",
    "PluginWarning",
    "Registry",
    "default_registry",
    "get_mask_scheduler",
    "get_pipeline_path",
    "get_sampler",
    "get_task",
    "get_tokenizer",
    "hookimpl",
    "mask_scheduler_names",
    "option_names",
    "pipeline_names",
    "reset",
    "sampler_names",
    "task_names",
    "tokenizer_names",
]

#: Modules of the built-in plugins, registered exactly like third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "magvit.tasks", "magvit.masking", "magvit.samplers", "magvit.tokenizers", "magvit.pretrained",
)

#: hook name -> the kind of component it adds
_KINDS = {
    "magvit_add_tasks": "task",
    "magvit_add_tokenizers": "tokenizer",
    "magvit_add_mask_schedulers": "mask scheduler",
    "magvit_add_samplers": "sampler",
    "magvit_add_pipelines": "pipeline",
}


class PluginWarning(UserWarning):
    """A plugin was disabled, or loaded with a mistake; the message names it, its distribution, the reason
    and what to do."""


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
    """A disabled plugin: its name, distribution, why it was disabled and what the user can do."""

    plugin: str
    source: str
    error: str
    hint: str = ""

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.source}) is disabled: {self.error}. {self.hint}".rstrip()


@attrs.frozen
class PluginProblem:
    """A mistake in a loaded plugin that does not disable it (e.g. a hook implementation matching no spec)."""

    plugin: str
    source: str
    problem: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.source}): {self.problem}"


class _Rejected(Exception):
    """Why the plugin being loaded is disabled."""


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
        self.problems: list[PluginProblem] = []
        self._sources: dict[str, str] = {}  # the loaded plugins; pm holds exactly these between loads
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in _KINDS.values()}
        # Other names of a component (a factory's ``aliases`` class attribute, e.g. the paper's name of a
        # sampler): alias -> registered name, resolved by entry().
        self._aliases: dict[str, dict[str, str]] = {kind: {} for kind in _KINDS.values()}
        builtin, hint = f"magvit {_version('magvit')} (built-in)", "This is a bug in magvit: reinstall it, or report it"
        for module in builtins:
            self._add_plugin(module, builtin, hint, functools.partial(importlib.import_module, module))
        if entry_points is None:
            entry_points = metadata.entry_points(group=PROJECT)
        for ep in entry_points:
            dist = ep.dist.name if ep.dist is not None else None
            source = f"{dist} {ep.dist.version}" if ep.dist is not None else "unknown distribution"
            uninstall = f"Uninstall it (pip uninstall {dist})" if dist else "Uninstall the package that provides it"
            hint = f"{uninstall} or fix the plugin; the rest of magvit works without it"
            self._add_plugin(ep.name, source, hint, ep.load)

    def _add_plugin(self, name: str, source: str, hint: str, load: Callable[[], object]) -> None:
        """Import, register and collect one plugin; anything wrong disables it whole."""
        try:
            plugin = _guard(load, "importing it")
            if self.pm.is_registered(plugin):
                return  # one module behind two entry points is one plugin
            if self.pm.has_plugin(name):
                raise _Rejected(f"a plugin named {name!r} is already loaded ({self._sources[name]})")
            _guard(lambda: self.pm.register(plugin, name=name), "registering its hooks")
            found = self._collect(name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever a plugin does, it only disables itself
            if name not in self._sources and self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            reason = str(exc) if isinstance(exc, _Rejected) else _describe(exc)
            self._disable(PluginError(name, source, reason, hint))
            return
        for kind, factories in found.items():
            for key, factory in factories.items():
                self._entries[kind][key] = Entry(kind, key, factory, name, source)
                self._aliases[kind].update({alias: key for alias in _aliases(factory)})
        self._sources[name] = source
        for hook_name in _unknown_hooks(self.pm, name):
            self._report(PluginProblem(name, source, _unknown_hook_message(hook_name, _spec_names(self.pm))))

    def _disable(self, error: PluginError) -> None:
        self.errors.append(error)
        warnings.warn(str(error), PluginWarning, stacklevel=3)

    def _report(self, problem: PluginProblem) -> None:
        self.problems.append(problem)
        warnings.warn(str(problem), PluginWarning, stacklevel=3)

    def _collect(self, plugin: str) -> dict[str, dict[str, Callable[..., Any]]]:
        """What the hooks of ``plugin`` add, as ``{kind: {name: factory}}``, each entry checked."""
        found: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in _KINDS.values()}
        for hook_name, kind in _KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == plugin:
                    added = _name_table(_guard(impl.function, f"{hook_name}()"), hook_name)
                    for name, factory in added.items():
                        self._check(kind, name, factory, found[kind])
                        found[kind][name] = factory
        return found

    def _check(self, kind: str, name: str, factory: object, found: Mapping[str, object]) -> None:
        """Raise :class:`_Rejected` unless ``factory`` may be registered as the ``kind`` ``name``."""
        first = self._entries[kind].get(name)
        if first is not None:
            raise _Rejected(f"{kind} {name!r} is already registered by plugin {first.plugin!r} ({first.source}); "
                            "the first registration wins")
        if name in found:
            raise _Rejected(f"{kind} {name!r} is added twice by this plugin")
        taken = set(self._entries[kind]) | set(self._aliases[kind]) | set(found)
        clash = [a for a in (name, *_aliases(factory)) if a in self._aliases[kind] or (a != name and a in taken)]
        if clash:
            raise _Rejected(f"{kind} {name!r}: the name {clash[0]!r} is already taken by another {kind} or alias")
        if not callable(factory):
            raise _Rejected(f"{kind} {name!r}: its factory {reprlib.repr(factory)} is not callable")
        if kind in ("task", "sampler"):  # small records: build the default one to check it
            from magvit.protocols import sampler_problem, task_problem  # imports torch; the CLI stays light

            built = _guard(factory, f"{kind} {name!r}: its factory()")
            problem = (task_problem if kind == "task" else sampler_problem)(built)
            if problem is None and built.name != name:
                problem = f"the {kind}'s name is {built.name!r}, not its registered name"
            if problem is not None:
                raise _Rejected(f"{kind} {name!r}: its factory() built an unusable {kind}: {problem}")

    # -- lookups ------------------------------------------------------------------------------
    def entries(self, kind: str) -> list[Entry]:
        """All registered components of ``kind`` ("task", "tokenizer", "mask scheduler", "sampler", "pipeline")."""
        return list(self._entries[kind].values())

    def names(self, kind: str) -> list[str]:
        return list(self._entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        """The component registered as ``name`` or under the alias ``name``."""
        table = self._entries[kind]
        name = self._aliases[kind].get(name, name)
        if name not in table:
            known = ", ".join(table) or "none"
            raise KeyError(f"unknown {kind} {name!r}; registered {kind}s: {known}")
        return table[name]

    def build(self, kind: str, name: str, **kwargs: Any) -> Any:
        return self.entry(kind, name).factory(**kwargs)

    def plugins(self) -> list[tuple[str, str]]:
        """``(plugin name, source)`` of every loaded plugin, in load order."""
        return list(self._sources.items())


def _aliases(factory: object) -> tuple[str, ...]:
    """A factory's other names (its ``aliases`` class attribute), checked to be non-empty strings."""
    aliases = getattr(factory, "aliases", ())
    if isinstance(aliases, str) or not isinstance(aliases, (tuple, list)) or \
            not all(isinstance(a, str) and a for a in aliases):
        raise _Rejected(f"its aliases must be a tuple of non-empty names, got {reprlib.repr(aliases)}")
    return tuple(aliases)


def _guard(call: Callable[[], Any], what: str) -> Any:
    """``call()``; anything it raises but ``KeyboardInterrupt`` (even ``SystemExit``) becomes a
    :class:`_Rejected` that says ``what`` raised it."""
    try:
        return call()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a plugin must not end or break the host process
        raise _Rejected(f"{what} raised {_describe(exc)}") from exc


def _unknown_hooks(pm: pluggy.PluginManager, plugin: str) -> list[str]:
    """Names of the hook implementations of ``plugin`` that match no hook spec and are not marked
    ``optionalhook``: the implementations ``pm.check_pending()`` rejects, restricted to one plugin (that
    method stops at the first one of any plugin)."""
    unknown = []
    for hook_name, caller in vars(pm.hook).items():
        if hook_name.startswith("_") or caller.has_spec():
            continue
        if any(impl.plugin_name == plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
            unknown.append(hook_name)
    return unknown


def _spec_names(pm: pluggy.PluginManager) -> list[str]:
    """The hook names that have a spec, sorted."""
    return sorted(name for name, caller in vars(pm.hook).items() if not name.startswith("_") and caller.has_spec())


def _unknown_hook_message(hook_name: str, known: list[str]) -> str:
    """Why ``hook_name`` is never called, and the closest of the ``known`` hook names if one is close."""
    close = difflib.get_close_matches(hook_name, known, n=1)
    fix = f"did you mean {close[0]!r}?" if close else f"known hooks: {', '.join(known)}"
    return (f"hook {hook_name!r} matches no magvit hook spec, so it is never called ({fix}); "
            "the plugin's other hooks are loaded")


def _describe(exc: BaseException) -> str:
    """``Type: message`` on one line (pluggy's messages span lines), cut to a readable length."""
    message = textwrap.shorten(str(exc), width=300, placeholder=" ...")
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _name_table(added: object, hook_name: str) -> dict[str, Any]:
    """What a hook returned as ``{name: factory}``; ``None`` adds nothing."""
    if added is None:
        return {}
    if not isinstance(added, Mapping):
        raise _Rejected(f"{hook_name}() returned a {type(added).__name__} {reprlib.repr(added)}, "
                        "not a mapping {name: factory}")
    table = dict(added)
    for name in table:
        if not isinstance(name, str) or not name:
            raise _Rejected(f"{hook_name}() returned the name {name!r} ({type(name).__name__}); "
                            "names must be non-empty str")
    return table


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


def sampler_names() -> list[str]:
    """Names of all registered samplers (conditioning-and-decoding methods; ``"commit"`` is the paper's)."""
    return default_registry().names("sampler")


def get_sampler(name: str, **options: Any) -> Any:
    """Build the sampler ``name`` with its ``options`` (e.g. ``get_sampler("maskgit", choice_temperature=1.0)``).

    An unknown name raises ``KeyError`` listing the registered ones; an option the sampler does not take is an
    :class:`~magvit.errors.InputError` naming the options it takes.
    """
    entry = default_registry().entry("sampler", name)
    try:
        return entry.factory(**options)
    except TypeError as exc:
        taken = ", ".join(option_names(entry.factory) or ()) or "any"
        raise InputError(f"sampler {name!r} cannot take the options {sorted(options)} ({exc}); its options: "
                         f"{taken}") from None


def option_names(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword arguments ``factory`` takes, or ``None`` when it takes any (``**kwargs``) or cannot tell."""
    if attrs.has(factory):
        return [a.alias for a in attrs.fields(factory) if a.init]  # type: ignore[arg-type]
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in named]


def pipeline_names() -> list[str]:
    """Names of all registered pretrained pipelines (``"demo"``, the shipped tiny model, first)."""
    return default_registry().names("pipeline")


def get_pipeline_path(name: str) -> Any:
    """The path the pipeline ``name`` is stored at: a ``save_pretrained`` folder or a ``.pt`` checkpoint."""
    return default_registry().build("pipeline", name)
