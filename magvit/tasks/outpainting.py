"""Outpainting: keep a central region of every frame, generate the outside (paper Sec. 3.2, Table 1).

As the authors' ``videogvt/train_lib/cond_utils.py``:

* OPC keeps the central box rows ``[H/4, 3H/4)`` x cols ``[W/4, 3W/4)``; OPH keeps the horizontal band of
  rows ``[H/4, 3H/4)`` (top and bottom generated); OPV keeps the vertical band of cols ``[W/4, 3W/4)``.
  All three fill the rest by replicating the kept region's border outward (``'edge'``).
* OPD (dynamic) keeps a W/2-wide vertical band sliding from the left edge at t = 0 to the right edge at
  t = T-1, cols ``[s(t), s(t) + W/2)``, and fills the rest with zeros (``'constant'``).
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from magvit.protocols import Condition
from magvit.tasks.base import broadcast_mask, central_span, check_video, edge_pad_box, keep, sliding_band_mask


def _box_mask(shape: tuple[int, int, int], rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
    t, h, w = shape
    mask = torch.zeros(t, h, w, dtype=torch.bool)
    mask[:, rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


@attrs.frozen
class _StaticOutpainting:
    """Keep a static box (per-axis spans given by :meth:`spans`) and edge-replicate outward."""

    prompt: str = "op"
    uses_class = False
    needs_video = True
    deterministic = True
    name = ""

    def spans(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        raise NotImplementedError

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        check_video(video, self.name, min_size=4)
        _, _, t, h, w = video.shape
        rows, cols = self.spans(h, w)
        return Condition(edge_pad_box(video, rows, cols), broadcast_mask(_box_mask((t, h, w), rows, cols), video))

    def analytic_token_mask(self, frames: int, token_shape: tuple[int, int, int]) -> Tensor:
        """The authors' ``latent_mask``: the same region formula on the latent grid."""
        t, h, w = token_shape
        return _box_mask(token_shape, *self.spans(h, w))


@attrs.frozen
class CentralOutpainting(_StaticOutpainting):
    """OPC: keep the central box, generate the border."""

    prompt: str = "opc"
    name = "opc"
    title = "central outpainting"
    description = "the central box (half the height and width) is given, the border around it is generated"

    def spans(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        return central_span(height), central_span(width)


@attrs.frozen
class HorizontalOutpainting(_StaticOutpainting):
    """OPH: keep rows ``[H/4, 3H/4)`` over the full width, generate the top and bottom quarters."""

    prompt: str = "oph"
    name = "oph"
    title = "horizontal outpainting"
    description = "the middle half of the rows is given, the top and bottom quarters are generated"

    def spans(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        return central_span(height), (0, width)


@attrs.frozen
class VerticalOutpainting(_StaticOutpainting):
    """OPV: keep cols ``[W/4, 3W/4)`` over the full height, generate the left and right quarters."""

    prompt: str = "opv"
    name = "opv"
    title = "vertical outpainting"
    description = "the middle half of the columns is given, the left and right quarters are generated"

    def spans(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        return (0, height), central_span(width)


@attrs.frozen
class DynamicOutpainting:
    """OPD: keep a W/2-wide vertical band sliding left to right over time; zeros elsewhere."""

    prompt: str = "opd"
    name = "opd"
    title = "dynamic outpainting"
    description = "a half-width vertical band sliding left to right is given, the rest is generated"
    uses_class = False
    needs_video = True
    deterministic = True

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        check_video(video, self.name, min_frames=2, min_size=2)
        _, _, t, h, w = video.shape
        mask = broadcast_mask(sliding_band_mask(t, h, w), video)
        return Condition(keep(video, mask), mask)

    def analytic_token_mask(self, frames: int, token_shape: tuple[int, int, int]) -> Tensor:
        """The authors' latent band ``[ls(t), ls(t) + w/2)``, ``ls = round(linspace(0, w/2, t))``."""
        return sliding_band_mask(*token_shape)
