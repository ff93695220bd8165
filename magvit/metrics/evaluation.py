"""Per-task evaluation (paper Table 4): FVD, PSNR and SSIM per task and their average.

For every task and held-out clip: the task's condition, a generation (COMMIT decoding), and the trivial
answer -- the padded condition video decoded as it is by the tokenizer. Scores:

* ``psnr_generated`` / ``psnr_trivial``: PSNR inside the generated region (outside the condition pixels;
  the whole clip for cg) of the generation / of the trivial answer;
* ``psnr_condition``: PSNR of the generation inside the condition region, to compare with
  ``psnr_tokenizer_condition``, the tokenizer's own reconstruction PSNR inside the same region (regions
  differ in content -- a central box holds more of the moving objects than the dark border -- so the
  full-clip ``tokenizer_psnr`` is not the yardstick for a region);
* ``psnr`` and ``ssim`` over the whole clip, and ``fvd`` of generations against the real clips.

The condition pixels are not pasted back by default (``replace_condition_pixels`` is off in the authors'
``videogvt/trainers/maskgvt_trainer.py``); ``paste_condition=True``
gives the other convention. FVD uses one extractor whose real-clip features are computed once and shared
by all tasks.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from magvit.metrics.fvd import FrechetVideoDistance
from magvit.metrics.quality import MaskedPSNR, VideoPSNR, VideoSSIM
from magvit.protocols import Task


@attrs.frozen
class TaskScores:
    psnr_generated: float
    psnr_trivial: float
    psnr_condition: float | None
    psnr_tokenizer_condition: float | None
    psnr: float
    ssim: float
    fvd: float | None
    num_clips: int
    # The trivial answer inside the condition region: what copying the condition tokens would give there.
    # Below psnr_tokenizer_condition when the padding reaches the encoder (outpainting borders).
    psnr_trivial_condition: float | None = None

    @property
    def beats_trivial(self) -> bool:
        return self.psnr_generated > self.psnr_trivial


#: The columns of :meth:`EvalReport.table`, named as the fields of :class:`TaskScores` and ``metrics.json``.
TABLE_COLUMNS = ("psnr_generated", "psnr_trivial", "psnr_condition", "psnr_tokenizer_condition",
                 "psnr_trivial_condition", "psnr", "ssim", "fvd")
TABLE_LEGEND = {
    "psnr_generated": "the generation, inside the generated region (the whole clip for cg)",
    "psnr_trivial": "the trivial answer (the padded condition video, encoded and decoded) in the same region",
    "psnr_condition": "the generation, inside the condition region",
    "psnr_tokenizer_condition": "the tokenizer's own reconstruction, inside the condition region",
    "psnr_trivial_condition": "the trivial answer, inside the condition region",
    "psnr": "the generation over the whole clip",
    "ssim": "SSIM of the generation over the whole clip",
    "fvd": "Frechet Video Distance of the generations against the real clips (I3D features)",
}


@attrs.frozen
class EvalReport:
    """Scores of every task, the tokenizer's PSNR and how FVD was computed."""

    tokenizer_psnr: float
    tasks: dict[str, TaskScores]
    paste_condition: bool
    fvd: dict[str, Any] | None

    def average(self) -> dict[str, float | None]:
        """Mean of each score over tasks (paper Table 4's last column)."""
        out: dict[str, float | None] = {}
        for key in ("psnr_generated", "psnr_trivial", "psnr", "ssim", "fvd"):
            values = [getattr(s, key) for s in self.tasks.values() if getattr(s, key) is not None]
            out[key] = sum(values) / len(values) if values else None
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenizer_psnr": self.tokenizer_psnr,
            "paste_condition": self.paste_condition,
            "tasks": {k: attrs.asdict(v) for k, v in self.tasks.items()},
            "average": self.average(),
            "fvd_protocol": self.fvd,
        }

    def table(self) -> str:
        """The scores as a text table (column names as in ``metrics.json``), with a legend below it."""
        header = ["task", *TABLE_COLUMNS, "clips"]
        rows = [[name, *(getattr(s, key) for key in TABLE_COLUMNS), s.num_clips] for name, s in self.tasks.items()]
        avg = self.average()
        rows.append(["average", *(avg.get(key) for key in TABLE_COLUMNS), ""])
        fmt = [[c if isinstance(c, str) else ("-" if c is None else f"{c:.2f}" if isinstance(c, float) else str(c))
                for c in r] for r in rows]
        widths = [max(len(x) for x in col) for col in zip(header, *fmt)]
        line = lambda r: "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
        legend = [f"  {key}: {TABLE_LEGEND[key]}" for key in TABLE_COLUMNS]
        return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, fmt),
                          f"tokenizer reconstruction PSNR: {self.tokenizer_psnr:.2f} dB", "columns (PSNR in dB):", *legend])

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["task", *attrs.fields_dict(TaskScores)])
        for name, s in self.tasks.items():
            w.writerow([name, *attrs.astuple(s)])
        return buf.getvalue()

    def write(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(self.to_json(), indent=2))
        (folder / "metrics.csv").write_text(self.to_csv())


def _value(metric: Any) -> float | None:
    """The metric's value, or None when it never saw data (e.g. the condition region of cg)."""
    if metric.update_count == 0:
        return None
    v = float(metric.compute())
    return None if math.isnan(v) else v


class _TaskMetrics:
    def __init__(self, fvd: FrechetVideoDistance | None) -> None:
        self.generated, self.trivial, self.condition = MaskedPSNR(), MaskedPSNR(), MaskedPSNR()
        self.tokenizer_condition, self.trivial_condition = MaskedPSNR(), MaskedPSNR()
        self.psnr, self.ssim = VideoPSNR(), VideoSSIM()
        self.fvd = fvd
        self.count = 0


@torch.no_grad()
def evaluate_tasks(
    pipeline: Any,
    batches: Iterable[Any],
    tasks: Sequence[str | Task] | None = None,
    *,
    fvd_extractor: torch.nn.Module | str | None = "i3d",
    paste_condition: bool = False,
    steps: int = 12,
    seed: int = 0,
    max_clips: int | None = None,
    progress: bool = True,
    on_batch: Any = None,
) -> EvalReport:
    """Evaluate ``pipeline`` on every task over ``batches`` of held-out clips.

    Args:
        pipeline: a :class:`~magvit.pipeline.MagvitPipeline`.
        batches: iterable of :class:`~magvit.data.VideoBatch` (e.g. ``make_eval_loader``).
        tasks: task names (default: all of the pipeline's tasks).
        fvd_extractor: ``"i3d"`` (the Kinetics-400 I3D from the local cache), a module (its
            ``num_features`` attribute gives the feature size, default 400), or None to skip FVD.
        paste_condition: paste the condition pixels back before scoring (off in the paper).
        max_clips: stop after this many clips.
        on_batch: called as ``on_batch(task_name, condition_video, generated, real)`` for the first batch
            (the demo uses it to write grids).
    """
    names = [t if isinstance(t, str) else t.name for t in (tasks or list(pipeline.tasks))]
    task_objs = [pipeline.task(n) for n in names]
    shared = None
    if fvd_extractor is not None:
        shared = (FrechetVideoDistance() if fvd_extractor == "i3d"
                  else FrechetVideoDistance(fvd_extractor, num_features=getattr(fvd_extractor, "num_features", 400)))
    metrics = {n: _TaskMetrics(None if shared is None else _fvd_like(shared)) for n in names}
    tok_psnr = VideoPSNR()
    device = pipeline.device
    seen = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_clips, desc="evaluate", unit="clip", dynamic_ncols=True)
    first = True
    for batch in batches:
        video = batch.video.to(device)
        if max_clips is not None:
            video = video[: max_clips - seen]
        labels = batch.label[: video.shape[0]]
        if video.shape[0] == 0:
            break
        recon = pipeline.tokenizer.decode(pipeline.tokenizer.encode(video)).clamp(0, 1)
        tok_psnr.update(recon, video)
        real_feats = shared.features(video) if shared is not None else None
        for name, task in zip(names, task_objs):
            m = metrics[name]
            g = torch.Generator().manual_seed(seed + seen)
            gen = pipeline.generate(task, video if task.needs_video else None, labels if task.uses_class else None,
                                    steps=steps, generator=g, paste_condition=paste_condition)
            if task.needs_video:
                cond = task.condition(video)
                region = cond.mask
                trivial = pipeline.tokenizer.decode(pipeline.tokenizer.encode(cond.video)).clamp(0, 1)
            else:
                cond, region = None, torch.zeros_like(video[:, :1], dtype=torch.bool)
                trivial = torch.zeros_like(video)  # nothing to decode: the trivial answer is an empty clip
            m.generated.update(gen, video, ~region)
            m.trivial.update(trivial, video, ~region)
            if region.any():
                m.condition.update(gen, video, region)
                m.tokenizer_condition.update(recon, video, region)
                m.trivial_condition.update(trivial, video, region)
            m.psnr.update(gen, video)
            m.ssim.update(gen, video)
            if m.fvd is not None:
                m.fvd.update_features(real_feats, True, video.shape[2])
                m.fvd.update_features(shared.features(gen), False, gen.shape[2])
            m.count += video.shape[0]
            if first and on_batch is not None:
                on_batch(name, cond.video if cond is not None else torch.zeros_like(video), gen, video)
        first = False
        seen += video.shape[0]
        if bar is not None:
            bar.update(video.shape[0])
        if max_clips is not None and seen >= max_clips:
            break
    if bar is not None:
        bar.close()
    scores = {}
    for name, m in metrics.items():
        fvd = None
        if m.fvd is not None and m.count >= 2:
            fvd = m.fvd.result().fvd
        scores[name] = TaskScores(
            psnr_generated=_value(m.generated), psnr_trivial=_value(m.trivial), psnr_condition=_value(m.condition),
            psnr_tokenizer_condition=_value(m.tokenizer_condition),
            psnr=_value(m.psnr), ssim=_value(m.ssim), fvd=fvd, num_clips=m.count,
            psnr_trivial_condition=_value(m.trivial_condition),
        )
    protocol = None
    if shared is not None:
        protocol = {"weights_sha256": shared.weights_sha256, "extractor": type(shared.extractor).__name__,
                    "preprocessing": attrs.asdict(shared.preprocessing), "num_real": seen,
                    "num_fake_per_task": seen}
    return EvalReport(_value(tok_psnr), scores, paste_condition, protocol)


def _fvd_like(shared: FrechetVideoDistance) -> FrechetVideoDistance:
    """A metric with its own sums that reuses ``shared``'s extractor (features are passed in)."""
    return FrechetVideoDistance(shared.extractor, num_features=shared.num_features,
                                preprocessing=shared.preprocessing, weights_sha256=shared.weights_sha256)


def quality_bar(report: EvalReport, margin_db: float = 1.0) -> dict[str, dict[str, bool]]:
    """The demo's quality bar: per conditional task, generated beats the trivial answer inside the
    generated region, and the condition region is within ``margin_db`` of the tokenizer's own PSNR in that
    region."""
    out = {}
    for name, s in report.tasks.items():
        if s.psnr_condition is None:  # no visual condition (cg): the bar does not apply
            continue
        out[name] = {
            "beats_trivial": s.psnr_generated > s.psnr_trivial,
            "condition_within_margin": s.psnr_condition >= s.psnr_tokenizer_condition - margin_db,
        }
    return out
