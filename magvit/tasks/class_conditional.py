"""Class-conditional tasks: generation from the label alone (CG) and frame prediction plus label (CFP).

As the authors' ``videogvt/train_lib/cond_utils.py``: CG has no visual condition (every token starts as
[MASK], plain MaskGIT); CFP is FP with the real class token instead of the "uncond" one.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from magvit.protocols import Condition
from magvit.tasks.base import check_video
from magvit.tasks.prediction import FramePrediction, first_frames


@attrs.frozen
class ClassGeneration:
    """CG: class-conditional generation; the condition is the label only (mask all False)."""

    prompt: str = "cg"
    name = "cg"
    title = "class-conditional generation"
    description = "only the class label is given, the whole clip is generated"
    uses_class = True
    needs_video = False
    deterministic = True

    def condition(self, video: Tensor, generator: torch.Generator | None = None) -> Condition:
        check_video(video, self.name)
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool, device=video.device)
        return Condition(torch.zeros_like(video), mask)

    def analytic_token_mask(self, frames: int, token_shape: tuple[int, int, int]) -> Tensor:
        return torch.zeros(token_shape, dtype=torch.bool)


@attrs.frozen
class ClassFramePrediction(FramePrediction):
    """CFP: frame prediction conditioned on the class label as well."""

    prompt: str = "cfp"
    name = "cfp"
    title = "class-conditional frame prediction"
    uses_class = True

    @property
    def description(self) -> str:
        """One line for people (the optional ``Task.description``)."""
        return f"{first_frames(self.cond_frames)} and the class label are given, the rest is generated"
