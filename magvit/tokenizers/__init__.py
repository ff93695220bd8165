"""Video tokenizers (paper Sec. 3.1), registered as a plugin.

* ``vq3d`` -- :class:`~magvit.tokenizers.vq3d.VQ3D`, the paper's 3D-VQ;
* ``vq2d`` -- :class:`~magvit.tokenizers.vq2d.VQ2D`, the per-frame 2D-VQ baseline.

Training pieces (discriminator, losses, :class:`~magvit.tokenizers.objective.VQGANObjective`) and
2D->3D inflation live in their own modules and are imported on demand (the perceptual loss needs timm).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from magvit.hookspecs import hookimpl
from magvit.tokenizers.tokenizer import TokenizerOutput, VQTokenizer
from magvit.tokenizers.vq2d import VQ2D, build_vq2d
from magvit.tokenizers.vq3d import VQ3D, build_vq3d

__all__ = ["BUILTIN_TOKENIZERS", "VQ2D", "VQ3D", "TokenizerOutput", "VQTokenizer", "build_vq2d", "build_vq3d"]

BUILTIN_TOKENIZERS: dict[str, Callable[..., Any]] = {VQ3D.name: build_vq3d, VQ2D.name: build_vq2d}


@hookimpl
def magvit_add_tokenizers() -> Mapping[str, Callable[..., Any]]:
    return BUILTIN_TOKENIZERS
