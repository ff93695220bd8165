"""magvit: MAGVIT, the Masked Generative Video Transformer (Yu et al., CVPR 2023), in PyTorch.

One bidirectional transformer over 3D-VQ video tokens does ten conditional video tasks; tasks,
tokenizers and mask schedules are plugins (see :mod:`magvit.registry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magvit.errors import MagvitError
from magvit.hookspecs import hookimpl

if TYPE_CHECKING:
    from magvit.pipeline import MagvitPipeline

__version__ = "0.1.0"
__all__ = ["MagvitError", "MagvitPipeline", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    # ``import magvit`` stays free of torch (``magvit --version``, ``--help``); the pipeline loads on first use.
    if name == "MagvitPipeline":
        from magvit.pipeline import MagvitPipeline

        return MagvitPipeline
    raise AttributeError(f"module 'magvit' has no attribute {name!r}")
