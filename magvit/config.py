"""Constructor arguments recorded once, and parts rebuilt from them through the registry.

A *part* is anything the registry builds: a task, a tokenizer, a mask schedule, a sampler. Its *config* is
the constructor arguments that rebuild it, as plain data; its *spec* is ``{"name": <registry name>,
"config": {...}}``, the form in which checkpoints, ``config.json`` files and YAML configs hold a part.

A part has a config in one of two ways, and in no other:

* it is an ``attrs`` class: its ``__init__`` fields are its config, nothing to add;
* its ``__init__`` is decorated with :func:`register_to_config` (as diffusers' ``ConfigMixin``): the
  arguments of each construction, defaults applied, become the read-only mapping ``part.config``.

:func:`part_spec` gives any part's spec and :func:`build_part` builds a part back from a spec through the
registry. A part with neither is refused when it is saved (:func:`part_config`), never rebuilt with default
arguments. This module imports no torch: configs are read before any model is built.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from magvit import registry
from magvit.registry import option_names
from magvit.errors import InputError, MagvitError

__all__ = [
    "KINDS",
    "FrozenConfig",
    "build_part",
    "option_names",
    "part_config",
    "part_spec",
    "read_spec",
    "records_config",
    "register_to_config",
]

#: The kinds of part a spec can name (the registry's kinds of constructible component).
KINDS: tuple[str, ...] = ("task", "tokenizer", "mask scheduler", "sampler")

#: What a spec may hold. ``"args"`` is another name of ``"config"``: task specs may be stored under it (the
#: shipped demo model's are), and are read the same.
_SPEC_KEYS = ("name", "config", "args")

Init = TypeVar("Init", bound=Callable[..., None])


class FrozenConfig(dict):
    """A part's recorded constructor arguments: a ``dict`` (so ``json.dumps`` and ``dict(...)`` take it
    as it is) that refuses every change. ``config | {...}`` gives a plain ``dict`` to build a variant from."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a part's config is read-only: it records how the part was built; build a new part "
                        "with the changed arguments instead, e.g. type(part)(**(part.config | {...}))")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # copy/deepcopy/pickle rebuild it from a plain dict (the default would set the items one by one)
        return (FrozenConfig, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenConfig({dict.__repr__(self)})"


def register_to_config(init: Init) -> Init:
    """Decorate ``__init__`` so that each construction records its arguments as ``self.config``.

    The arguments are bound to the signature with the defaults applied and recorded before the body runs,
    so the body may read ``self.config`` (e.g. to hand its arguments on to a base class). Sequences are
    recorded as lists and mappings as dicts, the form they take in a JSON or YAML file; a ``**kwargs``
    parameter contributes its items. Only the constructor of the object's own class records: a base class's
    decorated ``__init__`` called through ``super()`` does not overwrite it, and a subclass whose own
    ``__init__`` is not decorated records nothing (its arguments are not its base's), so it is refused
    when saved rather than rebuilt as its base.
    """
    signature = inspect.signature(init)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        raise TypeError(f"register_to_config cannot record the *args of {init.__qualname__}: a config names "
                        "every argument; make them named parameters")

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        if type(self).__init__ is wrapper:
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                bound = None  # the call itself is wrong: let __init__ raise its own error
            if bound is not None:
                bound.apply_defaults()
                # object.__setattr__: nn.Module's __setattr__ is not ready before Module.__init__ has run
                object.__setattr__(self, "config", FrozenConfig(_recorded_arguments(bound, signature)))
        init(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _recorded_arguments(bound: inspect.BoundArguments, signature: inspect.Signature) -> dict[str, Any]:
    recorded: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:  # [0] is self
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            recorded.update({key: _as_recorded(v) for key, v in value.items()})
        else:
            recorded[name] = _as_recorded(value)
    return recorded


def _as_recorded(value: Any) -> Any:
    """Tuples and lists as new lists, mappings as new dicts (recursively); anything else as it is."""
    if isinstance(value, (list, tuple)):
        return [_as_recorded(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _as_recorded(v) for k, v in value.items()}
    return value


def records_config(part: object) -> bool:
    """Whether ``part`` has a config: it is an attrs instance or its ``__init__`` records one."""
    return attrs.has(type(part)) or isinstance(getattr(part, "config", None), FrozenConfig)


def _describe(part: object) -> str:
    cls = type(part)
    name = getattr(part, "name", None)
    where = f"{cls.__module__}.{cls.__qualname__}"
    return f"{name!r} ({where})" if isinstance(name, str) else where


def part_config(part: object) -> dict[str, Any]:
    """The constructor arguments of ``part`` as plain data (a new ``dict``).

    Raises:
        MagvitError: ``part`` records no constructor arguments, or one of them is not plain data (numbers,
            strings, booleans, ``None``, lists, str-keyed dicts, or a part, which is written as its spec).
    """
    if attrs.has(type(part)):
        arguments = {a.alias: getattr(part, a.name) for a in attrs.fields(type(part)) if a.init}
    elif isinstance(getattr(part, "config", None), FrozenConfig):
        arguments = dict(part.config)  # type: ignore[attr-defined]
    else:
        raise MagvitError(
            f"{_describe(part)} records no constructor arguments, so it cannot be saved and built again: "
            "decorate its __init__ with @magvit.config.register_to_config, or make it an attrs class (its "
            "fields are then its config)"
        )
    return {key: _plain(value, part, key) for key, value in arguments.items()}


def _plain(value: Any, part: object, key: str) -> Any:
    """``value`` as data a JSON file can hold, or a :class:`MagvitError` naming the argument."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, part, key) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, part, key) for k, v in value.items()}
    if isinstance(getattr(value, "name", None), str) and records_config(value):
        return part_spec(value)  # a part given to a part (e.g. a sampler's mask schedule)
    raise MagvitError(
        f"{_describe(part)}: its constructor argument {key!r} is {value!r} ({type(value).__name__}), which a "
        "config file cannot hold; give plain values (numbers, strings, booleans, None, lists, dicts with str "
        "keys) or a registered part"
    )


def part_spec(part: object, name: str | None = None) -> dict[str, Any]:
    """``{"name": name, "config": part_config(part)}``: what :func:`build_part` builds ``part`` again from.

    Args:
        part: a task, tokenizer, mask schedule or sampler.
        name: its registry name; default: ``part.name``.
    """
    name = name if name is not None else getattr(part, "name", None)
    if not isinstance(name, str) or not name:
        raise MagvitError(f"{_describe(part)} has no registry name (a str `name` attribute); give the name it is "
                          "registered under")
    return {"name": name, "config": part_config(part)}


def read_spec(kind: str, spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The registry name and constructor arguments of a spec: a bare name, or ``{"name", "config"}``.

    ``"args"`` is read as ``"config"``. Anything else is an :class:`InputError` saying what a spec is.
    """
    expected = f'a {kind} spec is a registry name or {{"name": str, "config": {{option: value}}}}'
    if isinstance(spec, str):
        options: Any = {}
        name: Any = spec
    elif isinstance(spec, Mapping):
        extra = sorted(str(k) for k in spec if k not in _SPEC_KEYS)
        if extra:
            raise InputError(f"{expected}; got the unknown key {extra[0]!r} in {dict(spec)!r}")
        if "config" in spec and "args" in spec:
            raise InputError(f"{expected}; got both config and args in {dict(spec)!r}")
        name = spec.get("name")
        options = spec.get("config", spec.get("args", {}))
    else:
        raise InputError(f"{expected}, got {spec!r} ({type(spec).__name__})")
    if not isinstance(name, str) or not name:
        raise InputError(f"{expected}; its name must be a non-empty str, got {name!r}")
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise InputError(f"the config of {kind} {name!r} must map option names to values, got {options!r}")
    return name, dict(options)


def build_part(kind: str, spec: str | Mapping[str, Any]) -> Any:
    """Build the ``kind`` part of ``spec`` (see :func:`read_spec`) with the registered factory.

    Every mistake is one :class:`InputError`: an unknown name lists the registered ones, an unknown option
    lists the part's options (``task 'fp' has no option 'foo'; its options: cond_frames, ...``), a value
    the constructor refuses names the part and the options. A :class:`MagvitError` of the constructor
    itself (which already says what is wrong) passes through.
    """
    if kind not in KINDS:
        raise InputError(f"a part's kind is one of {', '.join(KINDS)}; got {kind!r}")
    name, options = read_spec(kind, spec)
    try:
        entry = registry.default_registry().entry(kind, name)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None
    known = option_names(entry.factory)
    unknown = sorted(k for k in options if known is not None and k not in known)
    if unknown:
        raise InputError(f"{kind} {name!r} has no option {unknown[0]!r}; its options: {', '.join(known or ()) or 'none'}")
    try:
        return entry.factory(**options)
    except MagvitError:
        raise
    except (TypeError, ValueError) as exc:  # an attrs validator, or a value of the wrong type
        detail = " ".join(str(exc).split())
        raise InputError(f"{kind} {name!r} refuses the options {options!r}: {detail}") from None
