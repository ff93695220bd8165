"""Mask schedules, condition-token derivation and the training-time masking of MAGVIT.

* Schedules gamma(r) (MaskGIT Sec. 3.3; the authors' ``videogvt/train_lib/mask_schedule.py``): ``cosine``
  (default) ``cos(pi/2 r)``, ``linear`` ``1 - r``, ``square`` ``1 - r^2``, ``exp`` ``1 - 2^(-log2(N)(1 - r))``
  (the BAIR eval option).
* :func:`condition_token_mask`: a token is a condition token iff its supervoxel holds at least one
  interior-condition pixel (paper Sec. 3.2, "not ispad"). :func:`warn_condition_coverage` warns when a
  task's condition tokens are the whole grid or none of it at the configured clip and tokenizer.
* Training-time masking shared by every method: one mask ratio per step and uniformly random positions
  (the authors' ``videogvt/train_lib/mask_utils.py``), and the records a method returns
  (:class:`MaskedTokens`, with :class:`LossWeights` per part of paper Eq. 3). How the masked sequence is
  conditioned (COMMIT, latent masking, prefix condition) is the sampler's (:mod:`magvit.samplers`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from magvit.errors import InputError, MagvitError
from magvit.hookspecs import hookimpl
from magvit.protocols import AnalyticTokenMask

# gamma is clipped to [1e-6, 1] before counting masked tokens, in training and in decoding (the authors'
# generate_mask_ratio in videogvt/train_lib/maskgvt_train_lib.py and videogvt/train_lib/parallel_decode.py).
MIN_RATIO = 1e-6


def _as_tensor(progress: Tensor | float) -> Tensor:
    return torch.as_tensor(progress, dtype=torch.float64)


@attrs.frozen
class CosineSchedule:
    """gamma(r) = cos(pi/2 r): MAGVIT's and MaskGIT's default (``mask_scheduling_method='cosine'``)."""

    name = "cosine"

    def ratio(self, progress: Tensor | float) -> Tensor:
        return torch.cos(math.pi / 2 * _as_tensor(progress))


@attrs.frozen
class LinearSchedule:
    """gamma(r) = 1 - r (MaskGIT Sec. 3.3)."""

    name = "linear"

    def ratio(self, progress: Tensor | float) -> Tensor:
        return 1 - _as_tensor(progress)


@attrs.frozen
class SquareSchedule:
    """gamma(r) = 1 - r^2 (MaskGIT Sec. 3.3)."""

    name = "square"

    def ratio(self, progress: Tensor | float) -> Tensor:
        return 1 - _as_tensor(progress) ** 2


@attrs.frozen
class ExpSchedule:
    """gamma(r) = 1 - 2^(-log2(N) (1 - r)) over N tokens (the 'eval-single' option of the authors'
    ``videogvt/configs/maskgvt_bair_config.py``)."""

    num_tokens: int = 1024
    name = "exp"

    def ratio(self, progress: Tensor | float) -> Tensor:
        return 1 - torch.exp2(-math.log2(self.num_tokens) * (1 - _as_tensor(progress)))


MASK_SCHEDULERS: dict[str, Callable[..., Any]] = {
    "cosine": CosineSchedule,
    "linear": LinearSchedule,
    "square": SquareSchedule,
    "exp": ExpSchedule,
}


@hookimpl
def magvit_add_mask_schedulers() -> Mapping[str, Callable[..., Any]]:
    return MASK_SCHEDULERS


# -- condition tokens -------------------------------------------------------------------------------


def condition_token_mask(pixel_mask: Tensor, downsample: tuple[int, int, int]) -> Tensor:
    """Bool ``[B, t, h, w]``: True where the supervoxel holds at least one condition pixel.

    Args:
        pixel_mask: bool ``[B, 1, T, H, W]`` (a :class:`~magvit.protocols.Condition` mask).
        downsample: supervoxel size ``(ft, fh, fw)`` of the tokenizer.
    """
    if pixel_mask.dim() != 5 or pixel_mask.shape[1] != 1:
        raise InputError(f"pixel_mask must be bool [B, 1, T, H, W], got shape {tuple(pixel_mask.shape)}")
    b, _, t, h, w = pixel_mask.shape
    ft, fh, fw = downsample
    if t % ft or h % fh or w % fw:
        raise InputError(
            f"pixel mask {t}x{h}x{w} (T x H x W) is not divisible by the supervoxel size {ft}x{fh}x{fw}"
        )
    grid = pixel_mask.reshape(b, t // ft, ft, h // fh, fh, w // fw, fw)
    return grid.any(dim=6).any(dim=4).any(dim=2)


TOKEN_RULES = ("supervoxel", "analytic")


def task_token_mask(
    task: Any, pixel_mask: Tensor, downsample: tuple[int, int, int], rule: str = "supervoxel"
) -> Tensor:
    """Condition-token mask ``[B, t, h, w]`` of a task's condition.

    ``rule="supervoxel"`` (default) is the paper's rule (:func:`condition_token_mask`). ``rule="analytic"``
    reproduces the authors' code, which evaluates each region formula on the latent grid instead
    (``latent_mask`` in ``videogvt/train_lib/cond_utils.py``); it differs for opd/ipd and for hand-set
    ``cond_latent_frames``. Tasks provide it as the :class:`~magvit.protocols.AnalyticTokenMask` capability.
    """
    if rule == "supervoxel":
        return condition_token_mask(pixel_mask, downsample)
    if rule != "analytic":
        raise ValueError(f"token rule must be one of {TOKEN_RULES}, got {rule!r}")
    if not isinstance(task, AnalyticTokenMask):
        raise ValueError(f"task {task.name!r} has no analytic_token_mask; use rule='supervoxel'")
    b, _, t, h, w = pixel_mask.shape
    ft, fh, fw = downsample
    region = task.analytic_token_mask(t, (t // ft, h // fh, w // fw)).to(pixel_mask.device)
    return region[None].expand(b, *region.shape).clone()


class ConditionCoverageWarning(UserWarning):
    """A task's condition tokens are every token of the grid (nothing to generate) or none (no condition)."""


#: Conditions drawn from a task whose condition is random: it is flagged only if every draw is all or none.
COVERAGE_DRAWS = 8


def condition_coverage_problems(
    tasks: Iterable[Any], downsample: tuple[int, int, int], clip: tuple[int, int, int], rule: str = "supervoxel"
) -> list[str]:
    """One message per task whose condition tokens are all or none of the token grid.

    A task region is a function of the clip size, not of its pixels, so the condition of a zero clip of
    ``clip`` = ``(T, H, W)`` frames x pixels is taken: once, or :data:`COVERAGE_DRAWS` times with a fixed seed
    for a random condition. Tasks with no visual condition (``needs_video`` False: cg, unc) are skipped:
    covering none is their point. A region is chosen in pixels without knowing the tokenizer, so e.g.
    "every 2nd pixel" is every token once each supervoxel is wider than one pixel.

    This only warns: a task that cannot condition such a clip, or has no region for the ``analytic`` rule,
    is skipped here and refused with its own error where it is used.
    """
    video = torch.zeros(1, 3, *clip)
    sizes = "x".join(map(str, downsample))
    problems = []
    for task in tasks:
        if not task.needs_video:
            continue
        if rule == "analytic" and not isinstance(task, AnalyticTokenMask):
            continue
        draws = 1 if task.deterministic else COVERAGE_DRAWS
        generator = torch.Generator().manual_seed(0)
        try:
            masks = [task_token_mask(task, task.condition(video, generator).mask, downsample, rule)
                     for _ in range(draws)]
        except MagvitError:
            continue
        grid, total = "x".join(map(str, masks[0].shape[1:])), masks[0].numel()
        where = f"of the {grid} token grid under the tokenizer's {sizes} supervoxels"
        if draws > 1:
            where += f" (in each of {draws} random draws)"
        if all(bool(m.all()) for m in masks):
            problems.append(f"task {task.name!r}: its condition covers all {total} tokens {where}: no token is left "
                            "to generate, only the condition's tokens to refine; leave whole supervoxels without "
                            "condition pixels")
        elif not any(bool(m.any()) for m in masks):
            problems.append(f"task {task.name!r}: its condition covers none of the {total} tokens {where}: the "
                            "model sees no condition; set needs_video False if that is meant")
    return problems


def warn_condition_coverage(
    tasks: Iterable[Any], downsample: tuple[int, int, int], clip: tuple[int, int, int], rule: str = "supervoxel"
) -> None:
    """One :class:`ConditionCoverageWarning` per message of :func:`condition_coverage_problems`.

    The warnings are attributed to this function, so that under the default warning filter a model that is
    checked again (each pipeline a training run builds for its samples) repeats none of them.
    """
    for problem in condition_coverage_problems(tasks, downsample, clip, rule):
        warnings.warn(problem, ConditionCoverageWarning, stacklevel=1)


# -- training-time masking --------------------------------------------------------------------------


@attrs.frozen
class LossWeights:
    """Weights of the three parts of the MAGVIT loss (paper Eq. 3; all 1 in the authors' configs,
    ``weight_mode='mask+refine+recons'``).

    ``refine``: masked condition positions (input z~); ``mask``: [MASK] positions; ``recons``: unmasked
    positions (input z). Setting them reproduces paper Table 5's loss ablation.
    """

    refine: float = 1.0
    mask: float = 1.0
    recons: float = 1.0


@attrs.frozen
class MaskedTokens:
    """One masked training example batch (flat sequences).

    Attributes:
        inputs: long ``[B, N]`` transformer inputs (codes, condition codes or ``mask_id``).
        targets: long ``[B, N]`` ground-truth codes.
        weights: float ``[B, N]`` per-token loss weights.
        masked: bool ``[B, N]`` positions selected by the mask.
        prefix: long ``[B, P]`` condition tokens to prepend (prefix-condition baseline only), else None.
        prefix_index: long ``[B, P]`` visual position of each prefix token, else None.
    """

    inputs: Tensor
    targets: Tensor
    weights: Tensor
    masked: Tensor
    prefix: Tensor | None = None
    prefix_index: Tensor | None = None


def num_masked(num_tokens: int, ratio: Tensor | float) -> int:
    """``max(1, floor(N * clip(gamma, 1e-6, 1)))`` (the authors' ``videogvt/train_lib/mask_utils.py``)."""
    gamma = float(_as_tensor(ratio).clamp(MIN_RATIO, 1.0))
    return max(1, math.floor(num_tokens * gamma))


def sample_ratio(scheduler: Any, generator: torch.Generator | None = None) -> float:
    """One mask ratio for the whole batch: gamma(u), u ~ U[0, 1) (the authors' ``generate_mask_ratio``)."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    return float(scheduler.ratio(u).clamp(MIN_RATIO, 1.0))


def random_mask(
    shape: tuple[int, int], ratio: float, generator: torch.Generator | None = None, device: Any = None
) -> Tensor:
    """Bool ``[B, N]`` with exactly ``num_masked(N, ratio)`` True per row at uniformly random positions.

    Scores ``s ~ U(0, 1)`` per token; a token is masked when ``s <= s*``, the n-th smallest score (the
    authors' ``random_mask`` in ``videogvt/train_lib/mask_utils.py``).
    """
    b, n = shape
    k = num_masked(n, ratio)
    scores = torch.rand(shape, generator=generator, device=device)
    threshold = scores.kthvalue(k, dim=1, keepdim=True).values
    return scores <= threshold
