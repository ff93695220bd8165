"""Video tokenizers (paper Sec. 3.1), registered as a plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from magvit.hookspecs import hookimpl

BUILTIN_TOKENIZERS: dict[str, Callable[..., Any]] = {}


@hookimpl
def magvit_add_tokenizers() -> Mapping[str, Callable[..., Any]]:
    return BUILTIN_TOKENIZERS
