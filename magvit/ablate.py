"""A study runner: train and evaluate the arms of an ablation (paper Tables 4-7) over seeds, with paired statistics.

A study is a YAML file (read with ``yaml.safe_load``, never executed; :func:`load_study`):

``name``, ``table``
    the study's name and the paper table it reproduces.
``primary_metric``
    ``{task, metric, higher_is_better, why}``, fixed before the runs: ``task`` is an evaluated task or
    ``average`` (the mean over the evaluated tasks, as the paper's MT8 column); ``metric`` a score of
    :class:`~magvit.metrics.evaluation.TaskScores` (or ``psnr`` / ``ssim`` / ``fvd`` of a reconstruction).
``base``
    ``{tokenizer: CONFIG, transformer: CONFIG}``: configs as ``magvit fit --config`` takes them (shipped names
    such as ``tiny/tokenizer``, or files). Without ``transformer`` every arm is a tokenizer, scored by its
    reconstructions (:func:`magvit.metrics.reconstruction.evaluate_reconstruction`).
``shared``, ``arms``
    dotted overrides per stage (``{tokenizer: {...}, transformer: {...}}``), applied after the base config as
    options after ``--config`` are (:func:`magvit.train.fit_config.parse_fit_config`): ``shared`` for every
    arm, then the arm's own.
``seeds``
    the seeds; each sets ``trainer.seed`` and ``data.seed`` of both stages and the transformer's
    ``model.init_args.seed``.
``data``
    the embedded synthetic data (:func:`magvit.data.write_synthetic`): ``clips``, ``val_clips``, ``frames``,
    ``size``, ``classes``, ``seed``.
``evaluation``
    ``tasks``, ``sampler`` (None: each model's own), ``sampler_options``, ``steps``, ``num_clips``, ``fvd``,
    ``repeats``, ``batch_size``, ``seed`` (the same decoding seed for every arm: the comparisons are paired).
``comparisons``
    the orderings the paper reports, each ``{better: ARM, worse: ARM}`` on the primary metric.

Runs are shared and found by a hash of their resolved config (paths inside the output folder written
relative to it): one tokenizer per distinct tokenizer config and seed, one transformer per distinct
transformer config and seed, one evaluation per model and evaluation spec. Every finished run writes
``done.json`` atomically; a re-run skips finished runs and resumes an unfinished training from its
``last.pt`` (``magvit fit --resume``). All configs are parsed before anything is trained, so a bad override is
refused at once.

``--smoke`` (:data:`SMOKE_SEEDS`, :data:`SMOKE_TRAIN`, :data:`SMOKE_DATA`, :data:`SMOKE_EVAL`) runs the same plan
at the smallest size, to check that a study runs; its numbers mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml

from magvit.data import make_eval_loader, write_synthetic
from magvit.data.atomic import write_text_atomic
from magvit.errors import InputError
from magvit.metrics.evaluation import SCORE_FIELDS, evaluate_tasks
from magvit.metrics.reconstruction import evaluate_reconstruction
from magvit.pipeline import MagvitPipeline, load_tokenizer_weights
from magvit.train import fit
from magvit.train.fit_config import fit_parser, instantiate_fit, parse_fit_config

__all__ = ["Comparison", "PairedDifference", "Study", "load_study", "paired_difference", "run_study"]

STAGES = ("tokenizer", "transformer")
#: ``--smoke``: the first two seeds (the fewest that give an interval); every run trains 2 steps on a few
#: clips and is scored on 2 clips with 2 decoding steps, without FVD.
SMOKE_SEEDS = 2
SMOKE_TRAIN = {"trainer.max_steps": 2, "data.batch_size": 2}
SMOKE_DATA = {"clips": 8, "val_clips": 2}
SMOKE_EVAL = {"num_clips": 2, "fvd": False, "repeats": 1, "batch_size": 2, "steps": 2}
#: settings that change how a run is watched or where it writes, not what it computes (left out of its hash)
_UNHASHED = ("resume", "resume_override", "device")
_UNHASHED_TRAINER = ("out_dir", "progress", "tensorboard", "log_every", "ckpt_every", "sample_every")


def _require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise InputError(f"{where}: missing key {key!r}")
    return mapping[key]


def _known(mapping: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; expected some of {list(allowed)}")


def _stage_overrides(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """``{tokenizer: {dotted: value}, transformer: {...}}`` checked; missing stages are empty."""
    value = value or {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected a mapping of stage -> overrides, got {value!r}")
    _known(value, STAGES, where)
    out = {}
    for stage in STAGES:
        overrides = value.get(stage) or {}
        if not isinstance(overrides, Mapping):
            raise InputError(f"{where}.{stage}: expected a mapping of dotted keys to values, got {overrides!r}")
        out[stage] = dict(overrides)
    return out


@attrs.frozen
class PrimaryMetric:
    """The pre-registered metric: ``metric`` of ``task`` (``average``: mean over the evaluated tasks)."""

    task: str
    metric: str
    higher_is_better: bool
    why: str


@attrs.frozen
class Comparison:
    """An ordering the paper reports: ``better`` beats ``worse`` on the primary metric."""

    better: str
    worse: str


@attrs.frozen
class DataSpec:
    clips: int = 2048
    val_clips: int = 64
    frames: int = 16
    size: int = 32
    classes: int = 8
    seed: int = 0


@attrs.frozen
class EvalSpec:
    tasks: list[str] | None = None
    sampler: str | None = None
    sampler_options: dict[str, Any] = attrs.field(factory=dict)
    steps: int = 12
    num_clips: int = 64
    fvd: bool = False
    repeats: int = 1
    batch_size: int = 8
    seed: int = 0


@attrs.frozen
class Study:
    """A parsed study file (:func:`load_study`)."""

    name: str
    table: int | str
    primary: PrimaryMetric
    base: dict[str, str | None]
    shared: dict[str, dict[str, Any]]
    arms: dict[str, dict[str, dict[str, Any]]]
    seeds: list[int]
    data: DataSpec
    evaluation: EvalSpec
    comparisons: list[Comparison]
    path: str

    @property
    def tokenizer_only(self) -> bool:
        return self.base.get("transformer") is None


def _record(cls: type, value: Any, where: str) -> Any:
    value = value or {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected a mapping, got {value!r}")
    _known(value, tuple(attrs.fields_dict(cls)), where)
    try:
        return cls(**value)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read and check a study file (see the module docstring for its keys).

    Raises:
        InputError: not YAML, a missing or unknown key, an arm or comparison that names no arm.
    """
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: expected a mapping with keys name, table, primary_metric, base, arms, seeds, "
                         "data, evaluation, comparisons")
    _known(raw, ("name", "table", "primary_metric", "base", "shared", "arms", "seeds", "data", "evaluation",
                 "comparisons"), where)
    primary = _record(PrimaryMetric, _require(raw, "primary_metric", where), f"{where}: primary_metric")
    base = _require(raw, "base", where)
    if not isinstance(base, Mapping) or not base.get("tokenizer"):
        raise InputError(f"{where}: base needs a tokenizer config (and a transformer config unless every arm is "
                         "a tokenizer), e.g. {tokenizer: tiny/tokenizer, transformer: tiny/transformer}")
    _known(base, STAGES, f"{where}: base")
    arms_raw = _require(raw, "arms", where)
    if not isinstance(arms_raw, Mapping) or not arms_raw:
        raise InputError(f"{where}: arms must map each arm's name to its overrides")
    arms = {str(name): _stage_overrides(value, f"{where}: arms.{name}") for name, value in arms_raw.items()}
    seeds = _require(raw, "seeds", where)
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise InputError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    comparisons = []
    for i, item in enumerate(raw.get("comparisons") or []):
        comparison = _record(Comparison, item, f"{where}: comparisons[{i}]")
        for arm in (comparison.better, comparison.worse):
            if arm not in arms:
                raise InputError(f"{where}: comparisons[{i}] names arm {arm!r}; the arms are {list(arms)}")
        comparisons.append(comparison)
    return Study(name=str(_require(raw, "name", where)), table=_require(raw, "table", where), primary=primary,
                 base={stage: base.get(stage) for stage in STAGES},
                 shared=_stage_overrides(raw.get("shared"), f"{where}: shared"), arms=arms, seeds=list(seeds),
                 data=_record(DataSpec, raw.get("data"), f"{where}: data"),
                 evaluation=_record(EvalSpec, raw.get("evaluation"), f"{where}: evaluation"),
                 comparisons=comparisons, path=where)


# -- statistics ---------------------------------------------------------------------------------------


@attrs.frozen
class PairedDifference:
    """The paired difference ``better - worse`` over seeds (sign-flipped when lower is better, so that a
    positive mean always favours ``better``) with its two-sided t-interval.

    ``low``/``high`` are None with fewer than 2 pairs (no spread to estimate).
    """

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None

    @property
    def verdict(self) -> str:
        """``reproduced`` (interval above 0), ``not reproduced`` (below 0) or ``inconclusive``."""
        if self.low is not None and self.low > 0:
            return "reproduced"
        if self.high is not None and self.high < 0:
            return "not reproduced"
        return "inconclusive"


def paired_difference(better: list[float], worse: list[float], higher_is_better: bool = True,
                      confidence: float = 0.95) -> PairedDifference:
    """Mean paired difference over seeds and its Student-t interval: mean +- t_{(1+c)/2, n-1} * s / sqrt(n),
    with ``s`` the sample standard deviation (n - 1) of the differences."""
    from scipy import stats

    if len(better) != len(worse) or not better:
        raise InputError(f"paired values need the same non-zero count, got {len(better)} and {len(worse)}")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (b - w) for b, w in zip(better, worse)]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(mean, None, n, None, None)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return PairedDifference(mean, std, n, mean - half, mean + half)


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation over seeds (None when a seed has no value)."""
    if not values or any(v is None for v in values):
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


# -- runs -----------------------------------------------------------------------------------------------


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _read_done(folder: Path) -> dict[str, Any] | None:
    path = folder / "done.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_done(folder: Path, record: Mapping[str, Any]) -> None:
    write_text_atomic(folder / "done.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def _relative(config: Any, out: Path) -> Any:
    """``config`` with every path inside ``out`` written relative to it (so the hash does not depend on where
    the study's folder is)."""
    prefix = str(out) + os.sep
    if isinstance(config, dict):
        return {k: _relative(v, out) for k, v in config.items()}
    if isinstance(config, list):
        return [_relative(v, out) for v in config]
    if isinstance(config, str) and config.startswith(prefix):
        return "OUT/" + config[len(prefix):]
    return config


def _hashed_part(config: dict[str, Any]) -> dict[str, Any]:
    """What a training run computes: its config without where it writes and how it is watched."""
    kept = {k: v for k, v in config.items() if k not in _UNHASHED}
    kept["trainer"] = {k: v for k, v in config.get("trainer", {}).items() if k not in _UNHASHED_TRAINER}
    return kept


@attrs.frozen
class TrainRun:
    """One planned training run: its folder (keyed by the hash of its resolved config) and that config."""

    stage: str
    key: str
    folder: Path
    config: dict[str, Any]
    overrides: dict[str, Any]
    base: str

    @property
    def checkpoint(self) -> Path:
        return self.folder / "last.pt"


def _plan_run(stage: str, base: str, overrides: dict[str, Any], out: Path) -> TrainRun:
    parser = fit_parser(exit_on_error=False)
    namespace = parse_fit_config(base, {**overrides, "trainer.out_dir": str(out / "pending")}, parser)
    config = _relative(json.loads(parser.dump(namespace, format="json", skip_unset=False)), out)
    key = _hash(_hashed_part(config))
    folder = out / "runs" / f"{stage}-{key}"
    config["trainer"]["out_dir"] = f"OUT/runs/{stage}-{key}"
    return TrainRun(stage, key, folder, config, dict(overrides), base)


def _train(run: TrainRun, log: list[str]) -> dict[str, Any]:
    """Train ``run`` unless its done record exists; an unfinished run resumes from its ``last.pt``."""
    done = _read_done(run.folder)
    if done is not None:
        return done
    resume = run.checkpoint.exists()
    parser = fit_parser(exit_on_error=False)
    overrides = {**run.overrides, "trainer.out_dir": str(run.folder), "resume": resume}
    namespace = parse_fit_config(run.base, overrides, parser)
    log.append(f"{'resuming' if resume else 'training'} {run.stage} {run.key}")
    print(f"ablate: {log[-1]} in {run.folder}", file=sys.stderr)
    start = time.perf_counter()
    result = fit(instantiate_fit(namespace, parser))
    record = {"stage": run.stage, "key": run.key, "config": run.config, "step": result.step,
              "seconds": round(time.perf_counter() - start, 3), "resumed": resume}
    _write_done(run.folder, record)
    return record


def _seed_overrides(stage: str, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"trainer.seed": seed, "data.seed": seed}
    if stage == "transformer":
        out["model.init_args.seed"] = seed
    return out


def _quiet() -> dict[str, Any]:
    return {"trainer.progress": False, "trainer.tensorboard": False}


def _data(study: Study, out: Path, smoke: bool) -> tuple[Path, dict[str, Any]]:
    spec = {**attrs.asdict(study.data), **(SMOKE_DATA if smoke else {})}
    folder = out / "data" / _hash(spec)
    done = _read_done(folder)
    if done is None:
        start = time.perf_counter()
        write_synthetic(folder, num_clips=spec["clips"], num_val_clips=spec["val_clips"], frames=spec["frames"],
                        size=spec["size"], num_classes=spec["classes"], seed=spec["seed"], overwrite=True)
        done = {"spec": spec, "seconds": round(time.perf_counter() - start, 3)}
        _write_done(folder, done)
    return folder, done


def _evaluate(model: Path, tokenizer_only: bool, spec: dict[str, Any], val: Path, folder: Path,
              log: list[str]) -> dict[str, Any]:
    """Score ``model`` once (its done record holds the per-task scores); returns that record."""
    done = _read_done(folder)
    if done is not None:
        return done
    log.append(f"evaluating {model.parent.name}")
    print(f"ablate: {log[-1]} into {folder}", file=sys.stderr)
    start = time.perf_counter()
    loader = make_eval_loader(val, spec["batch_size"])
    if tokenizer_only:
        tokenizer, _, _ = load_tokenizer_weights(model)
        tokenizer.eval()
        report = evaluate_reconstruction(tokenizer, loader, fvd_extractor="i3d" if spec["fvd"] else None,
                                         max_clips=spec["num_clips"])
        scores = {"reconstruction": attrs.asdict(report.scores)}
        per_repeat = {"reconstruction": [scores["reconstruction"]]}
    else:
        pipe = MagvitPipeline.from_checkpoint(model)
        report = evaluate_tasks(pipe, loader, spec["tasks"], fvd_extractor="i3d" if spec["fvd"] else None,
                                steps=spec["steps"], sampler=spec["sampler"], sampler_options=spec["sampler_options"],
                                repeats=spec["repeats"], seed=spec["seed"], max_clips=spec["num_clips"])
        scores = {name: attrs.asdict(s) for name, s in report.tasks.items()}
        scores["average"] = report.average()
        per_repeat = {name: [attrs.asdict(s) for s in runs] for name, runs in report.runs().items()}
    record = {"model": model.parent.name, "evaluation": spec, "scores": scores, "repeats": per_repeat,
              "seconds": round(time.perf_counter() - start, 3)}
    _write_done(folder, record)
    return record


def machine() -> dict[str, Any]:
    """What the numbers were measured on (CPU determinism holds for the same kind of machine)."""
    return {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__}


def run_study(study_path: str | os.PathLike[str], out: str | os.PathLike[str], smoke: bool = False) -> Path:
    """Run (or continue) the study of ``study_path`` in ``out``; writes ``results.json`` and ``report.md``.

    Returns the path of ``report.md``.
    """
    study = load_study(study_path)
    if smoke:
        study = attrs.evolve(study, seeds=study.seeds[:SMOKE_SEEDS])
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    data, data_record = _data(study, out, smoke)
    smoke_train = SMOKE_TRAIN if smoke else {}
    common = {"data.train": str(data / "train"), **_quiet(), **smoke_train}
    # plan every run first: a bad override is refused before anything trains
    plan: dict[tuple[str, int], dict[str, TrainRun]] = {}
    for arm, overrides in study.arms.items():
        for seed in study.seeds:
            runs = {}
            tok = _plan_run("tokenizer", study.base["tokenizer"],
                            {**study.shared["tokenizer"], **overrides["tokenizer"], **common,
                             **_seed_overrides("tokenizer", seed)}, out)
            runs["tokenizer"] = tok
            if not study.tokenizer_only:
                runs["transformer"] = _plan_run(
                    "transformer", study.base["transformer"],
                    {**study.shared["transformer"], **overrides["transformer"], **common,
                     **_seed_overrides("transformer", seed), "model.init_args.tokenizer_checkpoint": str(tok.checkpoint)},
                    out)
            plan[arm, seed] = runs
    eval_spec = {**attrs.asdict(study.evaluation), **(SMOKE_EVAL if smoke else {})}
    trained: dict[str, dict[str, Any]] = {}
    evaluations: dict[str, dict[str, Any]] = {}
    arms: dict[str, dict[str, Any]] = {arm: {} for arm in study.arms}
    for (arm, seed), runs in plan.items():
        for run in runs.values():
            name = f"{run.stage}-{run.key}"
            if name not in trained:
                trained[name] = _train(run, log)
        model = runs["tokenizer" if study.tokenizer_only else "transformer"]
        eval_key = _hash({"model": model.key, "evaluation": eval_spec})
        record = _evaluate(model.checkpoint, study.tokenizer_only, eval_spec, data / "val",
                           out / "evals" / f"{model.stage}-{model.key}-{eval_key}", log)
        evaluations[eval_key] = record
        arms[arm][str(seed)] = {"runs": {stage: f"{r.stage}-{r.key}" for stage, r in runs.items()},
                                "scores": record["scores"], "repeats": record["repeats"],
                                "eval_seconds": record["seconds"]}
    results = _results(study, smoke, data_record, trained, arms, log)
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    return write_text_atomic(out / "report.md", _report(study, results))


def _primary_values(study: Study, arms: dict[str, dict[str, Any]], arm: str) -> list[float | None]:
    task = "reconstruction" if study.tokenizer_only else study.primary.task
    return [arms[arm][str(seed)]["scores"].get(task, {}).get(study.primary.metric) for seed in study.seeds]


def _results(study: Study, smoke: bool, data_record: dict[str, Any], trained: dict[str, dict[str, Any]],
             arms: dict[str, dict[str, Any]], log: list[str]) -> dict[str, Any]:
    comparisons = []
    for c in study.comparisons:
        better, worse = _primary_values(study, arms, c.better), _primary_values(study, arms, c.worse)
        entry: dict[str, Any] = {"better": c.better, "worse": c.worse, "better_values": better,
                                 "worse_values": worse}
        if any(v is None for v in better + worse):
            entry.update(verdict="inconclusive", note="the primary metric is missing for a seed")
        else:
            diff = paired_difference(better, worse, study.primary.higher_is_better)
            entry.update(attrs.asdict(diff), verdict=diff.verdict)
        comparisons.append(entry)
    return {"study": study.name, "table": study.table, "file": study.path, "smoke": smoke,
            "primary_metric": attrs.asdict(study.primary), "seeds": study.seeds, "data": data_record,
            "machine": machine(), "runs": trained, "arms": arms, "comparisons": comparisons,
            "this_invocation": log}


def _cell(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.3f} ± {std:.3f}"


def _report(study: Study, results: dict[str, Any]) -> str:
    arms = results["arms"]
    p = study.primary
    direction = "higher" if p.higher_is_better else "lower"
    lines = [f"# Study {study.name} (paper Table {study.table})", "",
             f"Primary metric (pre-registered): `{p.metric}` of `{p.task}`, {direction} is better. {p.why}", "",
             f"Seeds: {study.seeds}. Cells are mean ± sample std over seeds."
             + (" **Smoke run: a few training steps, not a result.**" if results["smoke"] else ""), ""]
    first = arms[next(iter(arms))][str(study.seeds[0])]["scores"]
    tasks = list(first)
    metrics = [m for m in (*SCORE_FIELDS, "psnr", "ssim", "fvd") if any(m in first[t] for t in tasks)]
    metrics = list(dict.fromkeys(metrics))
    lines += [f"## `{p.metric}` per task", "", "| arm | " + " | ".join(tasks) + " |",
              "|---|" + "---|" * len(tasks)]
    for arm, seeds in arms.items():
        cells = [_cell(*_mean_std([seeds[str(s)]["scores"][t].get(p.metric) for s in study.seeds])) for t in tasks]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    summary = "reconstruction" if study.tokenizer_only else "average"
    lines += ["", f"## Every metric of `{summary}`", "", "| arm | " + " | ".join(metrics) + " |",
              "|---|" + "---|" * len(metrics)]
    for arm, seeds in arms.items():
        cells = [_cell(*_mean_std([seeds[str(s)]["scores"][summary].get(m) for s in study.seeds])) for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "## Comparisons (paired over seeds, 95% Student-t interval of the difference)", "",
              f"Difference = better - worse in `{p.metric}` of `{p.task}`"
              + ("" if p.higher_is_better else ", sign-flipped so that > 0 favours the first arm") + ".", "",
              "| claim | mean difference | 95% interval | verdict |", "|---|---|---|---|"]
    for c in results["comparisons"]:
        interval = "-" if c.get("low") is None else f"[{c['low']:.3f}, {c['high']:.3f}]"
        mean = "-" if c.get("mean") is None else f"{c['mean']:.3f}"
        lines.append(f"| {c['better']} > {c['worse']} | {mean} | {interval} | {c['verdict']} |")
    train_seconds = sum(r["seconds"] for r in results["runs"].values())
    eval_seconds = sum(seeds[str(s)]["eval_seconds"] for seeds in arms.values() for s in study.seeds)
    m = results["machine"]
    lines += ["", "## Wall time and machine", "",
              f"Training {train_seconds:.1f} s over {len(results['runs'])} runs (shared runs counted once), "
              f"evaluation {eval_seconds:.1f} s, data {results['data']['seconds']:.1f} s; "
              f"{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}.", "",
              "Plots: none (matplotlib is not a dependency of magvit).", ""]
    return "\n".join(lines)
