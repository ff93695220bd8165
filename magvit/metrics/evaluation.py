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

Repeats (``repeats=R``): every clip is generated R times with different seeds, and every score is reported
as the mean and standard deviation over the R repeats (the paper reports several runs as mean +- std; the
authors' ``_mean_and_std`` in ``videogvt/train_lib/eval_utils.py`` takes ``np.std``, the population standard
deviation). Each repeat has its own FVD against the same real-clip features.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from magvit.errors import InputError
from magvit.metrics.fvd import FrechetVideoDistance
from magvit.metrics.progress import Estimate, EvalProgress, clip_count, format_duration, plan_line
from magvit.metrics.quality import MaskedPSNR, VideoPSNR, VideoSSIM
from magvit.pipeline import sampler_spec
from magvit.precision import Precision
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
#: The score fields of :class:`TaskScores` (every field but ``num_clips``).
SCORE_FIELDS = tuple(f for f in attrs.fields_dict(TaskScores) if f != "num_clips")


def mean_and_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and population standard deviation (``np.std``, as the authors' ``_mean_and_std`` in
    ``videogvt/train_lib/eval_utils.py``) of one score over repeats; ``(None, None)`` if a repeat has none."""
    if not values or any(v is None for v in values):
        return None, None
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def mean_scores(repeats: Sequence[TaskScores]) -> TaskScores:
    """One task's scores averaged over its repeats (each repeat scored the same clips)."""
    means = {key: mean_and_std([getattr(s, key) for s in repeats])[0] for key in SCORE_FIELDS}
    return TaskScores(**means, num_clips=repeats[0].num_clips)


#: The scores :meth:`EvalReport.average` averages over tasks.
AVERAGED = ("psnr_generated", "psnr_trivial", "psnr", "ssim", "fvd")


def _average(scores: Iterable[TaskScores]) -> dict[str, float | None]:
    """Mean of each :data:`AVERAGED` score over the tasks that have it."""
    scores = list(scores)
    out: dict[str, float | None] = {}
    for key in AVERAGED:
        values = [getattr(s, key) for s in scores if getattr(s, key) is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def _cell(value: float | None, std: float | None = None) -> str:
    """A table cell: ``-`` for no value, two decimals, ``mean±std`` when a spread is given."""
    if value is None:
        return "-"
    return f"{value:.2f}" if std is None else f"{value:.2f}±{std:.2f}"


@attrs.frozen
class EvalReport:
    """Scores of every task, the tokenizer's PSNR and how FVD was computed."""

    tokenizer_psnr: float
    tasks: dict[str, TaskScores]
    paste_condition: bool
    fvd: dict[str, Any] | None
    #: how the generations were decoded: the sampler spec ``{"name", "config"}``, the number of steps, the
    #: guidance, the seed, the number of repeats and the precision
    decoding: dict[str, Any] | None = None
    #: each task's scores of every repeat (:func:`evaluate_tasks` with ``repeats``); ``tasks`` holds their means.
    #: Empty: one run, whose scores are ``tasks``.
    repeats: dict[str, list[TaskScores]] = attrs.field(factory=dict)

    @property
    def num_repeats(self) -> int:
        return len(next(iter(self.repeats.values()))) if self.repeats else 1

    def runs(self) -> dict[str, list[TaskScores]]:
        """Each task's scores per repeat (one entry per task without repeats)."""
        return {name: self.repeats.get(name) or [s] for name, s in self.tasks.items()}

    def std(self) -> dict[str, dict[str, float | None]]:
        """Standard deviation of each task's scores over the repeats (0 for one run)."""
        return {name: {key: mean_and_std([getattr(s, key) for s in runs])[1] for key in SCORE_FIELDS}
                for name, runs in self.runs().items()}

    def average(self) -> dict[str, float | None]:
        """Mean of each score over tasks (paper Table 4's last column)."""
        return _average(self.tasks.values())

    def average_std(self) -> dict[str, float | None]:
        """Standard deviation over the repeats of the average over tasks (0 for one run)."""
        runs = self.runs()
        per_repeat = [_average([r[i] for r in runs.values()]) for i in range(self.num_repeats)]
        return {key: mean_and_std([a[key] for a in per_repeat])[1] for key in AVERAGED}

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenizer_psnr": self.tokenizer_psnr,
            "paste_condition": self.paste_condition,
            "tasks": {k: attrs.asdict(v) for k, v in self.tasks.items()},
            "average": self.average(),
            "std": self.std(),
            "average_std": self.average_std(),
            "repeats": {k: [attrs.asdict(s) for s in runs] for k, runs in self.runs().items()},
            "fvd_protocol": self.fvd,
            "decoding": self.decoding,
        }

    def table(self) -> str:
        """The scores as a text table (column names as in ``metrics.json``), with a legend below it; with
        repeats each cell is ``mean±std`` over them."""
        header = ["task", *TABLE_COLUMNS, "clips"]
        repeated = self.num_repeats > 1
        std, avg_std = (self.std(), self.average_std()) if repeated else ({}, {})
        rows = [[name, *(_cell(getattr(s, key), std.get(name, {}).get(key)) for key in TABLE_COLUMNS), str(s.num_clips)]
                for name, s in self.tasks.items()]
        avg = self.average()
        rows.append(["average", *(_cell(avg.get(key), avg_std.get(key)) for key in TABLE_COLUMNS), ""])
        widths = [max(len(x) for x in col) for col in zip(header, *rows)]
        line = lambda r: "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
        legend = [f"  {key}: {TABLE_LEGEND[key]}" for key in TABLE_COLUMNS]
        if repeated:
            legend.append(f"  mean±std over {self.num_repeats} repeats (each clip generated with {self.num_repeats} "
                          "seeds)")
        return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows),
                          f"tokenizer reconstruction PSNR: {self.tokenizer_psnr:.2f} dB", "columns (PSNR in dB):", *legend])

    def to_csv(self) -> str:
        """One row per task (the means); with repeats, a ``statistic`` column and rows ``mean``, ``std`` and
        ``repeat <i>`` per task."""
        buf = io.StringIO()
        w = csv.writer(buf)
        if self.num_repeats == 1:
            w.writerow(["task", *attrs.fields_dict(TaskScores)])
            for name, s in self.tasks.items():
                w.writerow([name, *attrs.astuple(s)])
            return buf.getvalue()
        w.writerow(["task", "statistic", *attrs.fields_dict(TaskScores)])
        std = self.std()
        for name, runs in self.runs().items():
            w.writerow([name, "mean", *attrs.astuple(self.tasks[name])])
            w.writerow([name, "std", *(runs[0].num_clips if key == "num_clips" else std[name][key]
                                       for key in attrs.fields_dict(TaskScores))])
            for i, s in enumerate(runs):
                w.writerow([name, f"repeat {i}", *attrs.astuple(s)])
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


def _trivial(tokenizer: Any, video: Tensor, cond: Any) -> tuple[Tensor, Tensor]:
    """The condition region ``[B, 1, T, H, W]`` and the trivial answer of one task's batch.

    ``cond`` is the task's condition (None without a visual condition, as cg): the trivial answer is then an
    empty clip and the condition region is empty.
    """
    if cond is None:  # nothing to decode: the trivial answer is an empty clip
        return torch.zeros_like(video[:, :1], dtype=torch.bool), torch.zeros_like(video)
    return cond.mask, tokenizer.decode(tokenizer.encode(cond.video)).clamp(0, 1)


def _score(m: _TaskMetrics, video: Tensor, recon: Tensor, region: Tensor, trivial: Tensor, gen: Tensor,
           real_feats: Tensor | None, features: Callable[[Tensor], tuple[Tensor, float]]) -> float:
    """Add one task's batch to its metrics (``region`` and ``trivial`` of :func:`_trivial`); returns the
    seconds spent in the FVD extractor."""
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
    sampler_options: Mapping[str, Any] | None = None,
    guidance_scale: float = 0.0,
    guidance_task: str | None = None,
    repeats: int = 1,
    seed: int = 0,
    max_clips: int | None = None,
    progress: bool = False,
    on_batch: Any = None,
    on_estimate: Callable[[Estimate], None] | None = None,
    precision: str = "32",
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
        sampler_options: the sampler's options (``choice_temperature``, ``temperature``, ``schedule``); those
            not given keep the sampler's defaults.
        guidance_scale, guidance_task: classifier-free guidance (:meth:`MagvitPipeline.generate`).
        repeats: generations per clip, each with its own seeds (:func:`decode_seed`); every score is then the
            mean over the repeats, :attr:`EvalReport.repeats` holds each repeat's scores.
        seed: seed of the decoding (:func:`decode_seed`).
        max_clips: stop after this many clips.
        progress: on stderr, what will be done, a tqdm bar over clip-tasks (the phase in progress beside it)
            and the estimate of :class:`~magvit.metrics.progress.Estimate`.
        on_batch: called as ``on_batch(task_name, condition_video, generated, real)`` for the first batch
            (the demo uses it to write grids; its time is left out of the estimate).
        on_estimate: called with an :class:`Estimate` after the first task of the first batch and again after
            the first batch, when work is left (instead of the line ``progress`` prints).
        precision: the transformer's precision in generation (:meth:`MagvitPipeline.generate`); every tokenizer
            pass, the reference reconstructions included, stays float32.
    """
    names = [t if isinstance(t, str) else t.name for t in (tasks or list(pipeline.tasks))]
    task_objs = [pipeline.task(n) for n in names]
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InputError(f"repeats must be an int >= 1 (generations per clip), got {repeats!r}")
    # an unknown sampler, option or precision is refused before any work
    decoder = pipeline.decoding_sampler(sampler, **dict(sampler_options or {}))
    precision = Precision(precision).name
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
        metrics = {n: [_TaskMetrics(None if shared is None else _fvd_like(shared)) for _ in range(repeats)]
                   for n in names}
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
                cond = region = trivial = first_gen = None
                task_fvd = 0.0
                for r in range(repeats):
                    g = torch.Generator().manual_seed(decode_seed(seed, r, seen))
                    # a task without a visual condition (cg, unc) only takes the batch size from the clips
                    gen = pipeline.generate(task, video, labels if task.uses_class else None,
                                            steps=steps, generator=g, paste_condition=paste_condition,
                                            sampler=decoder, guidance_scale=guidance_scale,
                                            guidance_task=guidance_task, precision=precision)
                    if r == 0:
                        cond = task.condition(video) if task.needs_video else None
                        region, trivial = _trivial(pipeline.tokenizer, video, cond)
                        first_gen = gen
                    task_fvd += _score(metrics[name][r], video, recon, region, trivial, gen, real_feats, features)
                gen = first_gen
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
    runs = {name: [_task_scores(m) for m in ms] for name, ms in metrics.items()}
    scores = {name: r[0] if repeats == 1 else mean_scores(r) for name, r in runs.items()}
    protocol = None
    if shared is not None:
        protocol = {"weights_sha256": shared.weights_sha256, "extractor": type(shared.extractor).__name__,
                    "preprocessing": attrs.asdict(shared.preprocessing), "num_real": seen,
                    "num_fake_per_task": seen}
    decoding = {"sampler": sampler_spec(decoder), "steps": steps, "guidance_scale": guidance_scale,
                "guidance_task": guidance_task, "seed": seed, "repeats": repeats, "precision": precision}
    return EvalReport(_value(tok_psnr), scores, paste_condition, protocol, decoding,
                      repeats=runs if repeats > 1 else {})


#: Seed stride between repeats. torch's CPU generator keeps only the low 32 bits of a seed, so the seeds stay
#: below 2**32: repeat 0 keeps the seeds of a single run, and no two (repeat, clip) pairs share a seed for
#: fewer than 2**24 clips and 256 repeats.
REPEAT_SEED_STRIDE = 2**24


def decode_seed(seed: int, repeat: int, clip_index: int) -> int:
    """The decoding seed of the batch starting at clip ``clip_index`` in repeat ``repeat``."""
    return (seed + clip_index + repeat * REPEAT_SEED_STRIDE) % 2**32


def _task_scores(m: _TaskMetrics) -> TaskScores:
    """The scores of one task's metrics (FVD from 2 clips on)."""
    fvd = m.fvd.result().fvd if m.fvd is not None and m.count >= 2 else None
    return TaskScores(
        psnr_generated=_value(m.generated), psnr_trivial=_value(m.trivial), psnr_condition=_value(m.condition),
        psnr_tokenizer_condition=_value(m.tokenizer_condition),
        psnr=_value(m.psnr), ssim=_value(m.ssim), fvd=fvd, num_clips=m.count,
        psnr_trivial_condition=_value(m.trivial_condition),
    )


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
