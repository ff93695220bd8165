"""Inpainting: generate a hole inside every frame (paper Sec. 3.2, Table 1).

As the authors' ``videogvt/train_lib/cond_utils.py``: IPC's hole is the central box rows ``[H/4, 3H/4)`` x
cols ``[W/4, 3W/4)``; IPD's hole is rows ``[H/4, 3H/4)`` x cols ``[s(t), s(t) + W/2)``, sliding left to
right over time. Both fill the hole with zeros (``'constant'``, black in [0, 1]).
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from magvit.protocols import Condition
from magvit.tasks.base import broadcast_mask, central_span, check_video, keep, sliding_band_mask
from magvit.tasks.outpainting import _box_mask


@attrs.frozen
class CentralInpainting:
    """IPC: everything but the central box is condition; the box is generated."""

    prompt: str = "ipc"
    name = "ipc"
    title = "central inpainting"
    description = "all but the central box (half the height and width) is given, the box is generated"
    uses_class = False
    needs_video = True
    deterministic = True

    def _region(self, shape: tuple[int, int, int]) -> Tensor:
        _, h, w = shape
        return ~_box_mask(shape, central_span(h), central_span(w))

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        check_video(video, self.name, min_size=4)
        mask = broadcast_mask(self._region(tuple(video.shape[2:])), video)
        return Condition(keep(video, mask), mask)

    def analytic_token_mask(self, frames: int, token_shape: tuple[int, int, int]) -> Tensor:
        return self._region(token_shape)


@attrs.frozen
class DynamicInpainting:
    """IPD: everything but an H/2 x W/2 hole sliding left to right over time is condition."""

    prompt: str = "ipd"
    name = "ipd"
    title = "dynamic inpainting"
    description = "all but a box (half the height and width) sliding left to right is given, the box is generated"
    uses_class = False
    needs_video = True
    deterministic = True

    @staticmethod
    def _region(shape: tuple[int, int, int]) -> Tensor:
        t, h, w = shape
        return ~sliding_band_mask(t, h, w, rows=central_span(h))

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        check_video(video, self.name, min_frames=2, min_size=4)
        mask = broadcast_mask(self._region(tuple(video.shape[2:])), video)
        return Condition(keep(video, mask), mask)

    def analytic_token_mask(self, frames: int, token_shape: tuple[int, int, int]) -> Tensor:
        return self._region(token_shape)
