"""Frame prediction (FP): condition on the first k frames, predict the rest (paper Sec. 3.2, Table 1).

As the authors' ``videogvt/train_lib/cond_utils.py``: the condition video repeats the last condition frame
forward in time (``'edge'``). k = 1 is the BAIR setup, k = 5 the Kinetics-600 setup.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from magvit.protocols import Condition
from magvit.tasks.base import check_video


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


def first_frames(k: int) -> str:
    """``"the first frame"`` or ``"the first k frames"``, for the task descriptions."""
    return "the first frame" if k == 1 else f"the first {k} frames"


@attrs.frozen
class FramePrediction:
    """Keep frames ``[0, cond_frames)``; frames after repeat frame ``cond_frames - 1``.

    Args:
        cond_frames: number of condition frames k (1 for BAIR, 5 for Kinetics-600).
        cond_latent_frames: latent frames marked as condition by the authors' analytic rule
            (``cond_utils.py``); ``None`` means ``ceil(k / ft)``. Only used with ``token_rule="analytic"``.
        prompt: task-prompt key.
    """

    cond_frames: int = attrs.field(default=1, validator=_positive)
    cond_latent_frames: int | None = None
    prompt: str = "fp"

    name = "fp"
    title = "frame prediction"
    uses_class = False
    needs_video = True
    deterministic = True

    @property
    def description(self) -> str:
        """One line for people (the optional ``Task.description``)."""
        verb = "is" if self.cond_frames == 1 else "are"
        return f"{first_frames(self.cond_frames)} {verb} given, the rest is generated"

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        k = self.cond_frames
        check_video(video, self.name, min_frames=k + 1)
        t = video.shape[2]
        idx = torch.arange(t, device=video.device).clamp(max=k - 1)
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool, device=video.device)
        mask[:, :, :k] = True
        return Condition(video.index_select(2, idx), mask)

    def analytic_token_mask(self, frames: int, token_shape: tuple[int, int, int]) -> Tensor:
        """The authors' ``latent_mask``: the first ``cond_latent_frames`` latent frames."""
        t, h, w = token_shape
        n = self.cond_latent_frames if self.cond_latent_frames is not None else -(-self.cond_frames * t // frames)
        mask = torch.zeros(t, h, w, dtype=torch.bool)
        mask[:n] = True
        return mask
