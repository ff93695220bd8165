"""Frame interpolation (FI): condition on the first and last k frames (paper Sec. 3.2, Table 1).

As the authors' ``videogvt/train_lib/cond_utils.py``: the frames in between are a linear blend from frame
``k - 1`` to frame ``T - k`` with fractions ``arange(1, L + 1) / (L + 1)``, ``L = T - 2k``; for k = 1 and
T = 16, frame j is ``f0 + (f15 - f0) * j / 15``.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from magvit.protocols import Condition
from magvit.tasks.base import check_video
from magvit.tasks.prediction import _positive


def linear_blend(start: Tensor, end: Tensor, steps: int) -> Tensor:
    """``steps`` frames strictly between ``start`` and ``end`` ([B, C, 1, H, W] each), along dim 2."""
    frac = torch.arange(1, steps + 1, dtype=start.dtype, device=start.device) / (steps + 1)
    frac = frac.view(1, 1, steps, 1, 1)
    return start + (end - start) * frac


@attrs.frozen
class FrameInterpolation:
    """Keep frames ``[0, k)`` and ``[T - k, T)``; linear blend in between.

    Args:
        cond_frames: k, the number of condition frames at each end.
        cond_latent_frames: latent frames at each end for the analytic token rule (``None``: ``ceil(k/ft)``).
        prompt: task-prompt key.
    """

    cond_frames: int = attrs.field(default=1, validator=_positive)
    cond_latent_frames: int | None = None
    prompt: str = "fi"

    name = "fi"
    title = "frame interpolation"
    uses_class = False
    needs_video = True
    deterministic = True

    @property
    def description(self) -> str:
        """One line for people (the optional ``Task.description``)."""
        ends = "frame" if self.cond_frames == 1 else f"{self.cond_frames} frames"
        return f"the first and last {ends} are given, the frames between are generated"

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        k = self.cond_frames
        check_video(video, self.name, min_frames=2 * k + 1)
        t = video.shape[2]
        start, end = video[:, :, k - 1 : k], video[:, :, t - k : t - k + 1]
        middle = linear_blend(start, end, t - 2 * k)
        padded = torch.cat([video[:, :, :k], middle, video[:, :, t - k :]], dim=2)
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool, device=video.device)
        mask[:, :, :k] = True
        mask[:, :, t - k :] = True
        return Condition(padded, mask)

    def analytic_token_mask(self, frames: int, token_shape: tuple[int, int, int]) -> Tensor:
        """The authors' ``latent_mask``: the first and last ``cond_latent_frames`` latent frames."""
        t, h, w = token_shape
        n = self.cond_latent_frames if self.cond_latent_frames is not None else -(-self.cond_frames * t // frames)
        mask = torch.zeros(t, h, w, dtype=torch.bool)
        mask[:n] = True
        mask[t - n :] = True
        return mask
