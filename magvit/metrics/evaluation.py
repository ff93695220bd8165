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
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from magvit.metrics.fvd import FrechetVideoDistance
from magvit.metrics.progress import Estimate, EvalProgress, clip_count, format_duration, plan_line
from magvit.metrics.quality import MaskedPSNR, VideoPSNR, VideoSSIM
from magvit.pipeline import sampler_spec
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
    #: how the generations were decoded: the sampler spec ``{"name", "config"}`` and the number of steps
    decoding: dict[str, Any] | None = None

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
            "decoding": self.decoding,
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


def _score(m: _TaskMetrics, tokenizer: Any, video: Tensor, recon: Tensor, cond: Any, gen: Tensor,
           real_feats: Tensor | None, features: Callable[[Tensor], tuple[Tensor, float]]) -> float:
    """Add one task's batch to its metrics; returns the seconds spent in the FVD extractor.

    ``cond`` is the task's condition (None without a visual condition, as cg): the trivial answer is then an
    empty clip and the condition region is empty.
    """
    if cond is not None:
        region = cond.mask
        trivial = tokenizer.decode(tokenizer.encode(cond.video)).clamp(0, 1)
    else:
        region = torch.zeros_like(video[:, :1], dtype=torch.bool)
        trivial = torch.zeros_like(video)  # nothing to decode: the trivial answer is an empty clip
    m.generated.update(gen, video, ~region)
    m.trivial.update(trivial, video, ~region)
    if region.any():
        m.condition.update(gen, video, region)
        m.tokenizer_condition.update(recon, video, region)
        m.trivial_condition.update(trivial, video, region)
    m.psnr.update(gen, video)
    m.ssim.update(gen, video)
    m.count += video.shape[0]
    if m.fvd is None:
        return 0.0
    m.fvd.update_features(real_feats, True, video.shape[2])
    fake_feats, seconds = features(gen)
    m.fvd.update_features(fake_feats, False, gen.shape[2])
    return seconds


@torch.no_grad()
def evaluate_tasks(
    pipeline: Any,
    batches: Iterable[Any],
    tasks: Sequence[str | Task] | None = None,
    *,
    fvd_extractor: torch.nn.Module | str | None = "i3d",
    paste_condition: bool = False,
    steps: int = 12,
    sampler: str | None = None,
    seed: int = 0,
    max_clips: int | None = None,
    progress: bool = False,
    on_batch: Any = None,
    on_estimate: Callable[[Estimate], None] | None = None,
) -> EvalReport:
    """Evaluate ``pipeline`` on every task over ``batches`` of held-out clips.

    Args:
        pipeline: a :class:`~magvit.pipeline.MagvitPipeline`.
        batches: iterable of :class:`~magvit.batch.ClipBatch` with video (e.g. ``make_eval_loader``).
        tasks: task names (default: all of the pipeline's tasks).
        fvd_extractor: ``"i3d"`` (the Kinetics-400 I3D from the local cache), a module (its
            ``num_features`` attribute gives the feature size, default 400), or None to skip FVD.
        paste_condition: paste the condition pixels back before scoring (off in the paper).
        steps: decoding steps.
        sampler: the registered sampler to decode with (None: the model's own).
        max_clips: stop after this many clips.
        progress: on stderr, what will be done, a tqdm bar over clip-tasks (the phase in progress beside it)
            and the estimate of :class:`~magvit.metrics.progress.Estimate`.
        on_batch: called as ``on_batch(task_name, condition_video, generated, real)`` for the first batch
            (the demo uses it to write grids; its time is left out of the estimate).
        on_estimate: called with an :class:`Estimate` after the first task of the first batch and again after
            the first batch, when work is left (instead of the line ``progress`` prints).
    """
    names = [t if isinstance(t, str) else t.name for t in (tasks or list(pipeline.tasks))]
    task_objs = [pipeline.task(n) for n in names]
    decoder = pipeline.decoding_sampler(sampler)  # an unknown sampler is refused before any work
    num_clips = clip_count(batches, max_clips)
    show = EvalProgress(progress, None if num_clips is None else num_clips * (len(names) + 1))

    def estimate(**kw: Any) -> None:
        est = Estimate.extrapolate(num_tasks=len(names), num_clips=num_clips, **kw)
        if on_estimate is not None:
            on_estimate(est)
        else:
            show.line(est.message())

    try:
        shared = None
        if fvd_extractor is not None:
            show.phase("loading the FVD feature extractor")
            shared = (FrechetVideoDistance() if fvd_extractor == "i3d"
                      else FrechetVideoDistance(fvd_extractor,
                                                num_features=getattr(fvd_extractor, "num_features", 400)))

        def features(video: Tensor) -> tuple[Tensor, float]:
            start = time.perf_counter()
            return shared.features(video), time.perf_counter() - start

        extractor_name = None if shared is None else type(shared.extractor).__name__
        metrics = {n: _TaskMetrics(None if shared is None else _fvd_like(shared)) for n in names}
        tok_psnr = VideoPSNR()
        device = pipeline.device
        show.phase("reading the first batch")
        started = time.perf_counter()
        batch_start = started
        seen = index = 0
        num_batches: int | None = None
        for batch in batches:
            video = batch.video.to(device)
            if max_clips is not None:
                video = video[: max_clips - seen]
            labels = batch.label[: video.shape[0]]
            b = video.shape[0]
            if b == 0:
                break
            first = index == 0
            index += 1
            if first:
                num_batches = None if num_clips is None else math.ceil(num_clips / b)
                show.line(plan_line(len(names), num_clips, b, extractor_name))
            where = f"batch {index}" + ("" if num_batches is None else f"/{num_batches}")
            show.phase(f"{where}: reference (tokenizer{', ' + extractor_name if extractor_name else ''})")
            recon = pipeline.tokenizer.decode(pipeline.tokenizer.encode(video)).clamp(0, 1)
            tok_psnr.update(recon, video)
            real_feats, fvd_seconds = features(video) if shared is not None else (None, 0.0)
            reference_seconds, reference_fvd = time.perf_counter() - batch_start, fvd_seconds
            show.advance(b)
            aside = 0.0  # time in on_batch (the demo writes its grids there): not evaluation work
            for i, (name, task) in enumerate(zip(names, task_objs)):
                show.phase(f"{where}: {name}")
                task_start = time.perf_counter()
                g = torch.Generator().manual_seed(seed + seen)
                gen = pipeline.generate(task, video if task.needs_video else None,
                                        labels if task.uses_class else None,
                                        steps=steps, generator=g, paste_condition=paste_condition,
                                        sampler=decoder)
                cond = task.condition(video) if task.needs_video else None
                task_fvd = _score(metrics[name], pipeline.tokenizer, video, recon, cond, gen, real_feats, features)
                fvd_seconds += task_fvd
                task_seconds = time.perf_counter() - task_start
                show.advance(b)
                if first and on_batch is not None:
                    t = time.perf_counter()
                    on_batch(name, cond.video if cond is not None else torch.zeros_like(video), gen, video)
                    aside += time.perf_counter() - t
                if first and i == 0 and len(names) > 1:
                    # the other tasks of the batch cost about what the first one did; the first includes the
                    # start-up (first calls of the tokenizer, transformer and extractor), so this one errs high
                    refined = "; refined after the first batch" if num_clips is None or num_clips > b else ""
                    estimate(batch_seconds=reference_seconds + len(names) * task_seconds,
                             batch_fvd_seconds=reference_fvd + len(names) * task_fvd, batch_clips=b,
                             spent_seconds=reference_seconds + task_seconds,
                             measured_on=f"the first task of the first batch of {b} clips, start-up included"
                                         f"{refined}")
            seen += b
            done = (max_clips is not None and seen >= max_clips) or (num_clips is not None and seen >= num_clips)
            if first and not done:
                spent = time.perf_counter() - batch_start - aside
                estimate(batch_seconds=spent, batch_fvd_seconds=fvd_seconds, batch_clips=b, spent_seconds=spent,
                         measured_on=f"the first batch of {b} clips")
            if max_clips is not None and seen >= max_clips:
                break
            batch_start = time.perf_counter()
            if num_batches is None or index < num_batches:
                show.phase(f"reading batch {index + 1}")
        show.close()
        if index:
            show.line(f"evaluate: {len(names)} task{'' if len(names) == 1 else 's'} x {seen} clips done in "
                      f"{format_duration(time.perf_counter() - started)}")
    finally:
        show.close(finished=False)  # an error: the bar ends where it stopped
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
    decoding = {"sampler": sampler_spec(decoder), "steps": steps}
    return EvalReport(_value(tok_psnr), scores, paste_condition, protocol, decoding)


def _fvd_like(shared: FrechetVideoDistance) -> FrechetVideoDistance:
    """A metric with its own sums that reuses ``shared``'s extractor (features are passed in)."""
    return FrechetVideoDistance(shared.extractor, num_features=shared.num_features,
                                preprocessing=shared.preprocessing, weights_sha256=shared.weights_sha256)


#: How far below the tokenizer's own PSNR in the condition region a generation may be and still pass
#: :func:`quality_bar`.
QUALITY_BAR_MARGIN_DB = 1.0


def quality_bar(report: EvalReport, margin_db: float = QUALITY_BAR_MARGIN_DB) -> dict[str, dict[str, bool]]:
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
