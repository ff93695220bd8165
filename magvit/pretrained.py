"""The pretrained pipelines shipped with magvit, registered by name through the plugin hook
:func:`magvit.hookspecs.magvit_add_pipelines` (as a plugin would register its own).

``"demo"`` is the tiny ten-task pipeline of ``magvit demo``, trained on the embedded synthetic clips; it is
a package file, so ``MagvitPipeline.from_pretrained("demo")`` works offline on a fresh clone or install.
This module imports no torch: the registry loads it to list names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from magvit.hookspecs import hookimpl

DEMO_PIPELINE = Path(__file__).resolve().parent / "assets" / "demo" / "pipeline.pt"


def demo_pipeline_path() -> Path:
    """The shipped demo pipeline: a single-file checkpoint (``MagvitPipeline.save``)."""
    return DEMO_PIPELINE


@hookimpl
def magvit_add_pipelines() -> Mapping[str, Callable[..., Any]]:
    return {"demo": demo_pipeline_path}
