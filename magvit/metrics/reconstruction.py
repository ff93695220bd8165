"""Reconstruction quality of a tokenizer (MAGVIT paper Table 7: PSNR, SSIM and FVD of the 2D-VQ and 3D-VQ
reconstructions; the authors' ``videogvt/trainers/vqgan_trainer.py`` evaluation).

Every held-out clip is encoded and decoded (``decode(encode(video))``) and scored against itself with the
metrics of :mod:`magvit.metrics.quality` (PSNR of the pooled squared error, SSIM averaged over frames) and
:mod:`magvit.metrics.fvd` (FVD of the reconstructions against the clips). The report records which weights
of a tokenizer-stage checkpoint were scored (the generator's EMA, the copy used as the tokenizer, or its
trained weights) and the FVD protocol (:class:`~magvit.metrics.fvd.FVDResult` without its value).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import torch

from magvit.errors import MagvitError
from magvit.metrics.fvd import FrechetVideoDistance
from magvit.metrics.progress import EvalProgress, clip_count
from magvit.metrics.quality import VideoPSNR, VideoSSIM

#: The scores of :class:`ReconstructionScores`, with what each measures (the table's legend).
LEGEND = {
    "psnr": "PSNR (dB) of the reconstructions over every pixel of every clip",
    "ssim": "SSIM of the reconstructions, averaged over frames",
    "fvd": "Frechet Video Distance of the reconstructions against the clips (I3D features)",
}


@attrs.frozen
class TokenizerSource:
    """Which tokenizer was scored.

    Attributes:
        name: its registry name (``vq3d``, ``vq2d``, ...).
        checkpoint: the tokenizer-stage checkpoint it was read from.
        weights: ``"ema"`` (the generator's EMA, the copy used as the tokenizer) or ``"models"`` (its trained
            weights).
    """

    name: str
    checkpoint: str
    weights: str


@attrs.frozen
class ReconstructionScores:
    """Scores of the reconstructions of ``num_clips`` clips; ``fvd`` is None without FVD or with fewer than 2."""

    psnr: float
    ssim: float
    fvd: float | None
    num_clips: int


@attrs.frozen
class ReconstructionReport:
    """What ``magvit evaluate`` reports for a tokenizer checkpoint (``metrics.json``)."""

    scores: ReconstructionScores
    tokenizer: TokenizerSource | None = None
    #: the FVD protocol (:class:`~magvit.metrics.fvd.FVDResult` but its value); None without FVD
    fvd_protocol: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reconstruction": attrs.asdict(self.scores),
            "tokenizer": None if self.tokenizer is None else attrs.asdict(self.tokenizer),
            "fvd_protocol": self.fvd_protocol,
        }

    def table(self) -> str:
        """The scores as a text table (names as in ``metrics.json``) with a legend."""
        s = self.scores
        cells = ["-" if getattr(s, key) is None else f"{getattr(s, key):.2f}" for key in LEGEND] + [str(s.num_clips)]
        header = [*LEGEND, "clips"]
        widths = [max(len(h), len(c)) for h, c in zip(header, cells)]
        lines = ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in (header, ["-" * w for w in widths], cells)]
        if self.tokenizer is not None:
            t = self.tokenizer
            lines.insert(0, f"reconstruction of {t.name} ({'EMA' if t.weights == 'ema' else 'trained, non-EMA'} "
                            f"weights of {t.checkpoint})")
        return "\n".join([*lines, "columns:", *(f"  {key}: {text}" for key, text in LEGEND.items())])

    def write(self, folder: str | Path) -> Path:
        """Write ``metrics.json`` into ``folder`` (created); returns its path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "metrics.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


@torch.no_grad()
def evaluate_reconstruction(
    tokenizer: Any,
    batches: Iterable[Any],
    *,
    fvd_extractor: torch.nn.Module | str | None = "i3d",
    max_clips: int | None = None,
    source: TokenizerSource | None = None,
    progress: bool = False,
) -> ReconstructionReport:
    """Score ``tokenizer``'s reconstructions of the clips of ``batches``.

    Args:
        tokenizer: a :class:`~magvit.protocols.Tokenizer` (its ``encode`` / ``decode``).
        batches: iterable of :class:`~magvit.batch.ClipBatch` with video (e.g. ``make_eval_loader``).
        fvd_extractor: ``"i3d"`` (the Kinetics-400 I3D from the local cache), a module (its ``num_features``
            attribute gives the feature size, default 400), or None to skip FVD.
        max_clips: stop after this many clips.
        source: which checkpoint and weights ``tokenizer`` is (recorded in the report).
        progress: a tqdm bar over clips on stderr.
    """
    fvd = None
    if fvd_extractor == "i3d":
        fvd = FrechetVideoDistance()
    elif fvd_extractor is not None:
        fvd = FrechetVideoDistance(fvd_extractor, num_features=getattr(fvd_extractor, "num_features", 400))
    psnr, ssim = VideoPSNR(), VideoSSIM()
    device = next(iter(tokenizer.parameters())).device if hasattr(tokenizer, "parameters") else torch.device("cpu")
    show = EvalProgress(progress, clip_count(batches, max_clips))
    seen = 0
    try:
        for batch in batches:
            video = batch.video.to(device)
            if max_clips is not None:
                video = video[: max_clips - seen]
            if video.shape[0] == 0:
                break
            show.phase("tokenizer")
            recon = tokenizer.decode(tokenizer.encode(video)).clamp(0, 1)
            psnr.update(recon, video)
            ssim.update(recon, video)
            if fvd is not None:
                show.phase(type(fvd.extractor).__name__)
                fvd.update(video, real=True)
                fvd.update(recon, real=False)
            seen += video.shape[0]
            show.advance(video.shape[0])
            if max_clips is not None and seen >= max_clips:
                break
        show.close()
    finally:
        show.close(finished=False)
    if seen == 0:
        raise MagvitError("the evaluation data yielded no clip: check the shard folder")
    protocol = fvd_value = None
    if fvd is not None and seen >= 2:
        result = fvd.result()
        fvd_value = result.fvd if math.isfinite(result.fvd) else None
        protocol = {k: v for k, v in attrs.asdict(result).items() if k != "fvd"}
        protocol["follows_reference_protocol"] = result.follows_reference_protocol
    scores = ReconstructionScores(psnr=float(psnr.compute()), ssim=float(ssim.compute()), fvd=fvd_value,
                                  num_clips=seen)
    return ReconstructionReport(scores, source, protocol)
