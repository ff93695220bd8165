"""Temporal super-resolution (TSR): a conditioning task added through the ``magvit`` entry points.

Condition: every ``stride``-th frame ``0, s, 2s, ...`` of the clip. Padding: each missing frame between
two kept frames is their linear blend (the FI padding applied per gap); frames after the
last kept frame repeat it (the FP padding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from magvit.hookspecs import hookimpl
from magvit.protocols import Condition
from magvit.tasks.base import check_video
from magvit.tasks.interpolation import linear_blend



def _ordinal(n: int) -> str:
    """``2nd``, ``3rd``, ``4th``, ``11th``, ``21st``: the stride as people say it."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _at_least_two(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 2:
        raise ValueError(f"{attribute.name} must be >= 2 (1 would keep every frame), got {value}")


@attrs.frozen
class TemporalSuperResolution:
    """Keep frames ``0, stride, 2*stride, ...``; blend linearly in between, repeat after the last."""

    stride: int = attrs.field(default=4, validator=_at_least_two)
    prompt: str = "tsr"

    name = "tsr"
    title = "temporal super-resolution"
    uses_class = False
    needs_video = True
    deterministic = True

    @property
    def description(self) -> str:
        """One line for people (magvit's optional ``Task.description``)."""
        return f"every {_ordinal(self.stride)} frame is given, the frames between are generated"

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        check_video(video, self.name, min_frames=self.stride + 1)
        t = video.shape[2]
        kept = list(range(0, t, self.stride))
        pieces = []
        for a, b in zip(kept, kept[1:]):
            pieces += [video[:, :, a : a + 1], linear_blend(video[:, :, a : a + 1], video[:, :, b : b + 1], b - a - 1)]
        last = kept[-1]
        pieces.append(video[:, :, last : last + 1].expand(-1, -1, t - last, -1, -1))
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool, device=video.device)
        mask[:, :, kept] = True
        return Condition(torch.cat(pieces, dim=2), mask)


@hookimpl
def magvit_add_tasks() -> Mapping[str, Callable[..., Any]]:
    return {"tsr": TemporalSuperResolution}
