"""Range checks of the training settings, as ``attrs`` validators.

A setting out of range fails when its record is built -- from the command line or from Python -- with a
:class:`SettingError` naming the setting, the rule and the value, before anything runs or is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

from magvit.errors import InputError

Validator = Callable[[Any, Any, Any], None]


class SettingError(InputError):
    """A setting outside its range.

    Attributes:
        owner: the class that holds the setting (e.g. ``TrainerConfig``).
        setting: the attribute name (e.g. ``"grad_accum"``).
        rule: what the value must be (e.g. ``"must be >= 1"``).
        value: the refused value.
    """

    def __init__(self, owner: type, setting: str, rule: str, value: Any) -> None:
        self.owner, self.setting, self.rule, self.value = owner, setting, rule, value
        super().__init__(self.message(f"{owner.__name__}.{setting}"))

    def message(self, name: str) -> str:
        """The message with the setting called ``name`` (the command line names it by its flag)."""
        return f"{name} {self.rule}, got {self.value!r}"


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def at_least(low: float) -> Validator:
    """A number ``>= low`` (integers stay integers: the type annotation is checked by the parser)."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not (_number(value) and value >= low):
            raise SettingError(type(instance), attribute.name, f"must be >= {low}", value)

    return check


def positive_finite(instance: Any, attribute: Any, value: Any) -> None:
    """A finite number ``> 0`` (a learning rate)."""
    if not (_number(value) and math.isfinite(value) and value > 0):
        raise SettingError(type(instance), attribute.name, "must be a finite number > 0", value)


def non_negative_finite(instance: Any, attribute: Any, value: Any) -> None:
    """A finite number ``>= 0`` (a weight decay, a clipping norm where 0 means off)."""
    if not (_number(value) and math.isfinite(value) and value >= 0):
        raise SettingError(type(instance), attribute.name, "must be a finite number >= 0", value)


def unit_interval_pair(instance: Any, attribute: Any, value: Any) -> None:
    """Two numbers in ``[0, 1)`` (Adam's betas)."""
    try:
        ok = len(value) == 2 and all(_number(b) and 0 <= b < 1 for b in value)
    except TypeError:
        ok = False
    if not ok:
        raise SettingError(type(instance), attribute.name, "must be two numbers in [0, 1)", value)


def in_unit_interval(owner: type, name: str, value: Any) -> None:
    """A decay in ``[0, 1)`` (an EMA decay), checked in a plain constructor."""
    if not (_number(value) and 0 <= value < 1):
        raise SettingError(owner, name, "must be in [0, 1)", value)
