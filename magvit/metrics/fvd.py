"""Frechet Video Distance (Unterthiner et al. 2018) as a torchmetrics Metric with exact DDP reduction.

FVD is the Frechet distance between two Gaussians fitted to I3D features of real and generated videos:
``|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))``. MAGVIT's protocol (the authors'
``videogvt/train_lib/frechet_distance.py``): videos in [0, 1] are resized bilinearly to 224x224 (TF1
``resize_bilinear``, ``align_corners=False``, no crop), scaled to [-1, 1], and the feature is the
Kinetics-400 I3D's 400 logits averaged over time; clips need at least 9 frames for the original I3D head.

The metric keeps only sums per side (sample count, sum of features, sum of feature outer products, in
float64, ``dist_reduce_fx="sum"``), so a DDP all-reduce gives exactly the statistics of one process
that had seen every sample; the mean and the unbiased covariance (``n - 1``, as tfgan's
``frechet_classifier_distance_from_activations``) are formed only in :meth:`compute`.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from magvit.errors import InputError, MagvitError
from magvit.metrics.i3d import I3D
from magvit.video import check_video

ResizeMethod = Literal["tf1_bilinear", "half_pixel_bilinear"]
REFERENCE_MIN_FRAMES = 9  # the original I3D head needs T >= 9 (videogvt/train_lib/frechet_distance.py)


@attrs.frozen
class Preprocessing:
    """How videos in [0, 1] become extractor input (recorded in every :class:`FVDResult`).

    ``resize``: ``"tf1_bilinear"`` is TF1 ``resize_bilinear(align_corners=False)`` as the standard FVD
    and MAGVIT use it (source coordinate ``dst * in/out``, no half-pixel offset, no antialiasing);
    ``"half_pixel_bilinear"`` is PyTorch ``interpolate(mode="bilinear", align_corners=False)``.
    ``intermediate_size`` reproduces the 64x64 step of the authors' offline ``videogvt/tools/compute_fvd.py``.
    """

    size: tuple[int, int] | None = (224, 224)
    resize: ResizeMethod = "tf1_bilinear"
    intermediate_size: tuple[int, int] | None = None
    value_range: tuple[float, float] = (-1.0, 1.0)


@attrs.frozen
class FVDResult:
    """One FVD value with everything needed to compare it with another one."""

    fvd: float
    num_real: int
    num_fake: int
    weights_sha256: str
    extractor: str
    preprocessing: Preprocessing
    min_frames: int
    max_frames: int

    @property
    def follows_reference_protocol(self) -> bool:
        """224x224 TF1 resize, >= 9 frames and trained (not random) weights: comparable to published FVD."""
        return (self.preprocessing.size == (224, 224) and self.preprocessing.resize == "tf1_bilinear"
                and self.preprocessing.intermediate_size is None and self.min_frames >= REFERENCE_MIN_FRAMES
                and self.weights_sha256 != "random-init")


def _tf1_resize_axis(x: Tensor, out_size: int, axis: int) -> Tensor:
    """TF1 legacy bilinear resize along one axis: src = dst * (in / out), neighbours floor and floor + 1."""
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    src = torch.arange(out_size, dtype=torch.float64, device=x.device) * (in_size / out_size)
    lower = src.floor().long().clamp_(max=in_size - 1)
    upper = (lower + 1).clamp_(max=in_size - 1)
    shape = [1] * x.dim()
    shape[axis] = out_size
    weight = (src - lower).to(x.dtype).view(shape)
    lo, hi = x.index_select(axis, lower), x.index_select(axis, upper)
    return lo + (hi - lo) * weight


def resize_frames(frames: Tensor, size: tuple[int, int], method: ResizeMethod) -> Tensor:
    """Resize ``[N, C, H, W]`` frames to ``size`` (H, W) with the named bilinear convention."""
    if method == "tf1_bilinear":
        return _tf1_resize_axis(_tf1_resize_axis(frames, size[0], 2), size[1], 3)
    if method == "half_pixel_bilinear":
        return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=False)
    raise InputError(f"unknown resize method {method!r}; use 'tf1_bilinear' or 'half_pixel_bilinear'")


def preprocess_video(video: Tensor, prep: Preprocessing = Preprocessing()) -> Tensor:
    """``[B, 3, T, H, W]`` in [0, 1] -> resized (frame by frame) and scaled to ``prep.value_range``."""
    b, c, t, h, w = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    for size in (prep.intermediate_size, prep.size):
        if size is not None:
            frames = resize_frames(frames, tuple(size), prep.resize)
    lo, hi = prep.value_range
    frames = frames * (hi - lo) + lo
    return frames.reshape(b, t, c, *frames.shape[-2:]).permute(0, 2, 1, 3, 4)


def gaussian_from_sums(count: Tensor, total: Tensor, outer: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance from ``n``, ``sum x`` and ``sum x x^T`` (float64)."""
    n = count.to(torch.float64)
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
    return mean, (cov + cov.T) / 2


def _psd_sqrt(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Frechet distance of two Gaussians in float64.

    ``tr((S1 S2)^(1/2))`` equals ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))``: the inner matrix is symmetric
    positive semi-definite, so symmetric eigendecompositions give it without the complex round-off of a
    general matrix square root (the eigenvalues of ``S1 S2`` are those of the symmetric form).
    """
    mu1, mu2, sigma1, sigma2 = (x.to(torch.float64) for x in (mu1, mu2, sigma1, sigma2))
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt)


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over a module's state-dict names and tensor bytes: identifies weights that have no file."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "state-dict:" + digest.hexdigest()


class FrechetVideoDistance(Metric):
    """FVD between videos passed with ``real=True`` and ``real=False``.

    Args:
        extractor: module mapping preprocessed video ``[B, 3, T, h, w]`` to features ``[B, num_features]``.
            Default: :meth:`I3D.from_pretrained` (``weights_path`` or the cache; never a hub).
        num_features: feature size of the extractor (400 for I3D logits).
        preprocessing: resize and scaling (default: MAGVIT's, as ``frechet_distance.py``).
        weights_sha256: what to record as the weights' identity; default the extractor's
            ``weights_sha256`` attribute (I3D: file sha256 or ``"random-init"``), else a state-dict hash.
        extractor_batch: videos per extractor call (bounds memory at 224 px).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, extractor: nn.Module | None = None, *, num_features: int = 400,
                 weights_path: str | os.PathLike[str] | None = None,
                 preprocessing: Preprocessing = Preprocessing(), weights_sha256: str | None = None,
                 extractor_batch: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if extractor_batch < 1:
            raise InputError(f"extractor_batch must be >= 1; got {extractor_batch}")
        self.extractor = (I3D.from_pretrained(weights_path) if extractor is None else extractor).eval()
        self.extractor.requires_grad_(False)
        self.weights_sha256 = weights_sha256 or getattr(self.extractor, "weights_sha256", None) \
            or state_dict_sha256(self.extractor)
        self.num_features = num_features
        self.preprocessing = preprocessing
        self.extractor_batch = extractor_batch
        for side in ("real", "fake"):
            self.add_state(f"{side}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(num_features, num_features, dtype=torch.float64),
                           dist_reduce_fx="sum")
        self.add_state("min_frames", torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx="min")
        self.add_state("max_frames", torch.tensor(-math.inf, dtype=torch.float64), dist_reduce_fx="max")

    def _features(self, video: Tensor) -> Tensor:
        param = next(self.extractor.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        chunks = []
        with torch.no_grad():
            for part in video.split(self.extractor_batch):
                chunks.append(self.extractor(preprocess_video(part.to(dtype), self.preprocessing)))
        feats = torch.cat(chunks)
        if feats.shape != (video.shape[0], self.num_features):
            raise InputError(f"the feature extractor returned {tuple(feats.shape)}; expected "
                             f"[{video.shape[0]}, {self.num_features}]. Pass num_features= matching it.")
        return feats.to(torch.float64)

    def update(self, video: Tensor, real: bool) -> None:  # type: ignore[override]
        """Add a batch ``[B, 3, T, H, W]`` in [0, 1] to the real (``real=True``) or generated statistics."""
        if not isinstance(real, bool):
            raise InputError(f"real must be True (reference videos) or False (generated); got {real!r}")
        check_video(video, "FrechetVideoDistance")
        self.update_features(self._features(video), real, video.shape[2])

    def update_features(self, feats: Tensor, real: bool, frames: int) -> None:
        """Add features already computed by :meth:`features` (lets several metrics share the real clips')."""
        side = "real" if real else "fake"
        feats = feats.to(torch.float64)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + feats.shape[0])
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(dim=0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.T @ feats)
        t = torch.tensor(float(frames), dtype=torch.float64, device=self.min_frames.device)
        self.min_frames = torch.minimum(self.min_frames, t)
        self.max_frames = torch.maximum(self.max_frames, t)

    def features(self, video: Tensor) -> Tensor:
        """Extractor features ``[B, num_features]`` (float64) of videos in [0, 1], preprocessed as configured."""
        check_video(video, "FrechetVideoDistance")
        return self._features(video)

    def _distance(self) -> float:
        for side in ("real", "fake"):
            n = int(getattr(self, f"{side}_count").item())
            if n < 2:
                raise MagvitError(f"FVD needs at least 2 {side} videos to estimate a covariance; got {n}. "
                                  f"Call update(video, real={side == 'real'}) with more samples.")
        mu_r, sigma_r = gaussian_from_sums(self.real_count, self.real_sum, self.real_outer)
        mu_f, sigma_f = gaussian_from_sums(self.fake_count, self.fake_sum, self.fake_outer)
        return frechet_distance(mu_r, sigma_r, mu_f, sigma_f)

    def compute(self) -> Tensor:
        """The FVD value (float64 scalar tensor), from the (DDP-reduced) sums."""
        return torch.tensor(self._distance(), dtype=torch.float64)

    def result(self) -> FVDResult:
        """The FVD value with the weights' hash, sample counts, frame counts and preprocessing."""
        with self.sync_context():
            return FVDResult(
                fvd=self._distance(), num_real=int(self.real_count.item()), num_fake=int(self.fake_count.item()),
                weights_sha256=self.weights_sha256, extractor=type(self.extractor).__name__,
                preprocessing=self.preprocessing, min_frames=int(self.min_frames.item()),
                max_frames=int(self.max_frames.item()),
            )
