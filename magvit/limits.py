"""Checks of model-size arguments, run before any weight is allocated.

A model config can come from a file someone else wrote (a checkpoint's ``model_config``, a YAML config),
so the constructors check each size argument's type and range and the parameter count they imply before
building anything: a forged ``hidden_size`` of 10**9 is one :class:`~magvit.errors.InputError` line, not an
out-of-memory kill. The bounds are far above any MAGVIT model (the paper's L transformer has 306M
parameters, its tokenizer 158M) and only exist to refuse absurd values.
"""

from __future__ import annotations

import math
from typing import Any

from magvit.errors import InputError

#: Largest model (parameters) a config may describe: 8 GB of fp32 weights.
MAX_PARAMETERS = 2 * 10**9

#: Largest clip (frames x height x width) a pipeline may be configured for.
MAX_VIDEO_PIXELS = 2**26


def check_int(owner: str, name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``, else an :class:`InputError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{owner}: {name} must be an integer {bound}, got {value!r}")
    return value


def check_number(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
                 *, high_open: bool = False) -> float:
    """``value`` if it is a finite real number in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and low <= value and (value < high if high_open else value <= high))
    if not ok:
        bound = f"in [{low}, {high}{')' if high_open else ']'}" if math.isfinite(high) else f">= {low}"
        raise InputError(f"{owner}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{owner}: {name} must be true or false, got {value!r}")
    return value


def check_parameter_count(owner: str, count: int, detail: str) -> None:
    """Refuse a model of more than :data:`MAX_PARAMETERS` parameters before it is built."""
    if count > MAX_PARAMETERS:
        raise InputError(
            f"{owner}: {detail} describe a model of about {count:.3g} parameters, more than the "
            f"{MAX_PARAMETERS:.0e} this library builds; the config is corrupt or not meant for it"
        )
