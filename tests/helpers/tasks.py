"""Plugin-style test tasks whose condition covers every token of a supervoxel grid."""

from __future__ import annotations

import attrs
import torch

from magvit.protocols import Condition


@attrs.frozen
class EverySecondPixel:
    """Keeps every 2nd pixel of every frame: under any supervoxel wider than one pixel, every token."""

    prompt: str = "every2"
    name = "every2"
    uses_class = False
    needs_video = True
    deterministic = True

    def condition(self, video: torch.Tensor, generator: torch.Generator | None = None) -> Condition:
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool, device=video.device)
        mask[..., ::2, ::2] = True
        return Condition(video * mask, mask)
