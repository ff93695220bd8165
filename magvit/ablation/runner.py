"""The study runner behind ``magvit ablate``: train, tokenise and evaluate every arm of a study over its seeds.

Runs are shared and found by a hash of their resolved config (paths inside the output folder written
relative to it), so studies run into the same ``--out`` folder share them too: one tokenizer per distinct
tokenizer config and seed, one set of token shards per tokenizer (``magvit data tokenize``; the transformer
arms train from them, so no arm re-encodes clips), one transformer per distinct config and seed, one
evaluation per model and evaluation spec. Every finished step writes ``done.json`` atomically; a re-run skips
finished steps and resumes an unfinished training from its ``last.pt`` (``magvit fit --resume``), and an
unfinished tokenisation continues where it stopped. All configs are parsed before anything is trained, so a
bad override is refused at once.

Seeds run in the outer loop and arms in the inner one, and ``results.json`` / ``report.md`` are rewritten
after every evaluation: a stopped study leaves every arm's finished seeds on record.

Layout of ``--out``::

    data/<hash>/{train,val}/          the synthetic clips of a data spec
    runs/<stage>-<hash>/              one training run (last.pt, metrics.csv, done.json)
    tokens/<hash>/                    token shards of one tokenizer run
    evals/<stage>-<hash>-<hash>/      one evaluation (done.json holds its scores); a transformer's held-out
                                      token metrics (magvit.metrics.likelihood) are a second one, merged
                                      into the same per-task scores
    <study name>/results.json         every seed's scores per arm, configs, wall times, the machine
    <study name>/report.md            the tables (magvit.ablation.report) and plots (magvit.ablation.plots)
    <study name>-smoke/               the same for ``--smoke`` (its runs are other runs: other hashes)

``--smoke`` (:data:`SMOKE_SEEDS`, :data:`SMOKE_TRAIN`, :data:`SMOKE_DATA`, :data:`SMOKE_EVAL`) runs the same
plan at the smallest size, to check that a study runs; its numbers mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from magvit.ablation.plots import plot_study
from magvit.ablation.report import render_report
from magvit.ablation.stats import paired_difference
from magvit.ablation.study import CHECKPOINT_OF, Study, arm_references, load_study
from magvit.data import make_eval_loader, write_synthetic
from magvit.data.atomic import write_text_atomic
from magvit.errors import InputError
from magvit.metrics.evaluation import evaluate_tasks
from magvit.metrics.likelihood import TOKEN_FIELDS, evaluate_token_likelihood
from magvit.metrics.reconstruction import evaluate_reconstruction
from magvit.pipeline import MagvitPipeline, load_tokenizer_weights
from magvit.registry import task_names
from magvit.train import fit
from magvit.train.fit_config import fit_parser, instantiate_fit, parse_fit_config, setting_default
from magvit.train.tokenize import tokenize_shards

__all__ = ["machine", "run_study"]

#: ``--smoke``: the first two seeds (the fewest that give an interval); every run trains 2 steps on a few
#: clips and is scored on 2 clips with 2 decoding steps, without FVD.
SMOKE_SEEDS = 2
SMOKE_TRAIN = {"trainer.max_steps": 2, "data.batch_size": 2}
SMOKE_DATA = {"clips": 8, "val_clips": 2}
SMOKE_EVAL = {"num_clips": 2, "fvd": False, "repeats": 1, "batch_size": 2, "steps": 2}
#: settings that change how a run is watched or where it writes, not what it computes (left out of its hash)
_UNHASHED = ("resume", "resume_override", "device")
_UNHASHED_TRAINER = ("out_dir", "progress", "tensorboard", "log_every", "ckpt_every", "sample_every")
#: model settings that trade memory for time and leave every value and gradient unchanged
_UNHASHED_MODEL = ("activation_checkpointing",)
#: trainer settings left out of the hash at their default (``setting_default``): a run at the default computes
#: what a config without the setting computes, so both keep one key; any other value is part of the key
_UNHASHED_AT_DEFAULT = ("precision", "strategy", "compile")
_OUT = "OUT/"


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _read_done(folder: Path) -> dict[str, Any] | None:
    path = folder / "done.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_done(folder: Path, record: Mapping[str, Any]) -> None:
    write_text_atomic(folder / "done.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def _relative(config: Any, out: Path) -> Any:
    """``config`` with every path inside ``out`` written relative to it (so a hash does not depend on where
    the output folder is)."""
    prefix = str(out) + os.sep
    if isinstance(config, dict):
        return {k: _relative(v, out) for k, v in config.items()}
    if isinstance(config, list):
        return [_relative(v, out) for v in config]
    if isinstance(config, str) and config.startswith(prefix):
        return _OUT + config[len(prefix):]
    return config


def _hashed_part(config: dict[str, Any]) -> dict[str, Any]:
    """What a training run computes: its config without where it writes and how it is watched."""
    kept = {k: v for k, v in config.items() if k not in _UNHASHED}
    kept["trainer"] = {k: v for k, v in config.get("trainer", {}).items()
                       if k not in _UNHASHED_TRAINER
                       and not (k in _UNHASHED_AT_DEFAULT and v == setting_default(config, f"trainer.{k}"))}
    model = config.get("model", {})
    if "init_args" in model:
        kept["model"] = {**model, "init_args": {k: v for k, v in model["init_args"].items() if k not in _UNHASHED_MODEL}}
    return kept


# -- the plan ------------------------------------------------------------------------------------------


@attrs.frozen
class TrainRun:
    """One planned training run: its folder (keyed by the hash of its resolved config), that config, and the
    runs whose checkpoints it reads (trained first)."""

    stage: str
    key: str
    folder: Path
    config: dict[str, Any]
    overrides: dict[str, Any]
    base: str
    needs: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.key}"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "last.pt"


@attrs.frozen
class TokenRun:
    """The token shards of one tokenizer run over the training clips, with every registered task's
    condition cached (each transformer arm reads the tasks it trains on)."""

    key: str
    folder: Path
    tokenizer: TrainRun
    src: Path
    task_options: dict[str, Any]
    token_rule: str

    @property
    def name(self) -> str:
        return f"tokens-{self.key}"


@attrs.frozen
class ArmRuns:
    """What one arm needs for one seed."""

    tokenizer: TrainRun
    tokens: TokenRun | None = None
    transformer: TrainRun | None = None

    @property
    def model(self) -> TrainRun:
        return self.transformer or self.tokenizer

    def steps(self) -> list[TrainRun | TokenRun]:
        """The arm's steps in the order they run."""
        return [run for run in (self.tokenizer, self.tokens, self.transformer) if run is not None]

    def names(self) -> dict[str, str]:
        """``{stage: run name}`` (stages tokenizer, tokens, transformer)."""
        return {("tokens" if isinstance(run, TokenRun) else run.stage): run.name for run in self.steps()}


def _plan_run(stage: str, base: str, overrides: dict[str, Any], out: Path, needs: tuple[Any, ...] = ()) -> TrainRun:
    parser = fit_parser(exit_on_error=False)
    namespace = parse_fit_config(base, {**overrides, "trainer.out_dir": str(out / "pending")}, parser)
    config = _relative(json.loads(parser.dump(namespace, format="json", skip_unset=False)), out)
    key = _hash(_hashed_part(config))
    folder = out / "runs" / f"{stage}-{key}"
    config["trainer"]["out_dir"] = f"{_OUT}runs/{stage}-{key}"
    return TrainRun(stage, key, folder, config, dict(overrides), base, needs)


def _resolve(value: Any, checkpoint_of: Mapping[str, TrainRun]) -> Any:
    """``value`` with each ``{checkpoint_of: ARM}`` replaced by that arm's checkpoint path."""
    if isinstance(value, Mapping):
        if set(value) == {CHECKPOINT_OF}:
            return str(checkpoint_of[str(value[CHECKPOINT_OF])].checkpoint)
        return {k: _resolve(v, checkpoint_of) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, checkpoint_of) for v in value]
    return value


def _seed_overrides(stage: str, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"trainer.seed": seed, "data.seed": seed}
    if stage == "transformer":
        out["model.init_args.seed"] = seed
    return out


def _quiet() -> dict[str, Any]:
    """No progress bar or TensorBoard files, and a checkpoint often enough that a stopped study loses little."""
    return {"trainer.progress": False, "trainer.tensorboard": False, "trainer.ckpt_every": 200}


def _plan_stage(study: Study, stage: str, arm: str, seed: int, common: dict[str, Any],
                done: Mapping[str, ArmRuns], extra: dict[str, Any], out: Path) -> TrainRun:
    """The run of ``stage`` for ``arm`` and ``seed``; ``done`` holds the planned arms of this seed."""
    refs = {name: getattr(runs, stage) for name, runs in done.items()}
    overrides = {**study.shared[stage], **study.arms[arm][stage]}
    needs = tuple(refs[name] for value in overrides.values() for name in arm_references(value))
    overrides = {k: _resolve(v, refs) for k, v in overrides.items()}
    seeded = _seed_overrides(stage, seed) if stage in study.seed_stages else {}
    return _plan_run(stage, study.base[stage], {**overrides, **common, **seeded, **extra}, out, needs)


def _plan_tokens(tokenizer: TrainRun, transformer: TrainRun, src: Path, out: Path) -> TokenRun:
    init = transformer.config["model"]["init_args"]
    task_options = init.get("task_options") or {}
    token_rule = init["objective"]["token_rule"]
    key = _hash({"tokenizer": tokenizer.key, "src": str(_relative(str(src), out)), "task_options": task_options,
                 "token_rule": token_rule})
    return TokenRun(key, out / "tokens" / key, tokenizer, src, task_options, token_rule)


def plan_study(study: Study, out: Path, data: Path, smoke: bool) -> dict[tuple[str, int], ArmRuns]:
    """Every run of every arm and seed, parsed and keyed (nothing is trained)."""
    common = {"data.train": str(data / "train"), **_quiet(), **(SMOKE_TRAIN if smoke else {})}
    plan: dict[tuple[str, int], ArmRuns] = {}
    for seed in study.seeds:
        done: dict[str, ArmRuns] = {}
        for arm in study.arm_order:
            tokenizer = _plan_stage(study, "tokenizer", arm, seed, common, done, {}, out)
            if study.tokenizer_only:
                done[arm] = ArmRuns(tokenizer)
                continue
            ckpt = {"model.init_args.tokenizer_checkpoint": str(tokenizer.checkpoint)}
            draft = _plan_stage(study, "transformer", arm, seed, common, done, ckpt, out)
            tokens = _plan_tokens(tokenizer, draft, data / "train", out)
            transformer = _plan_stage(study, "transformer", arm, seed, common, done,
                                      {**ckpt, "model.init_args.token_shards": str(tokens.folder)}, out)
            done[arm] = ArmRuns(tokenizer, tokens, attrs.evolve(transformer, needs=(*transformer.needs, tokens)))
        for arm in study.arms:
            plan[arm, seed] = done[arm]
    return plan


# -- the steps -----------------------------------------------------------------------------------------


class _Steps:
    """Runs each planned step at most once per invocation and records what it did."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []

    def _say(self, message: str) -> None:
        self.log.append(message)
        print(f"ablate: {message}", file=sys.stderr, flush=True)

    def train(self, run: TrainRun) -> dict[str, Any]:
        """Train ``run`` (after what it needs) unless its done record exists; an unfinished run resumes."""
        if run.name in self.records:
            return self.records[run.name]
        done = _read_done(run.folder)
        if done is None:
            for need in run.needs:
                self.tokenize(need) if isinstance(need, TokenRun) else self.train(need)
            resume = run.checkpoint.exists()
            parser = fit_parser(exit_on_error=False)
            overrides = {**run.overrides, "trainer.out_dir": str(run.folder), "resume": resume}
            namespace = parse_fit_config(run.base, overrides, parser)
            self._say(f"{'resuming' if resume else 'training'} {run.name}")
            start = time.perf_counter()
            result = fit(instantiate_fit(namespace, parser))
            done = {"stage": run.stage, "key": run.key, "config": run.config, "step": result.step,
                    "seconds": round(time.perf_counter() - start, 3), "resumed": resume, "machine": machine()}
            _write_done(run.folder, done)
        self.records[run.name] = done
        return done

    def tokenize(self, run: TokenRun) -> dict[str, Any]:
        """Write ``run``'s token shards unless done (``tokenize_shards`` continues a stopped job)."""
        if run.name in self.records:
            return self.records[run.name]
        self.train(run.tokenizer)
        done = _read_done(run.folder)
        if done is None:
            self._say(f"tokenising the training clips with {run.tokenizer.name}")
            start = time.perf_counter()
            report = tokenize_shards(run.tokenizer.checkpoint, run.src, run.folder, tasks=task_names(),
                                     task_options=run.task_options, token_rule=run.token_rule)
            done = {"stage": "tokens", "key": run.key, "tokenizer": run.tokenizer.name,
                    "cached_tasks": list(report.cached_tasks), "seconds": round(time.perf_counter() - start, 3),
                    "machine": machine()}
            _write_done(run.folder, done)
        self.records[run.name] = done
        return done

    def run_arm(self, runs: ArmRuns, tokenizer_only: bool, spec: dict[str, Any], val: Path, out: Path,
                run: bool = True) -> dict[str, Any] | None:
        """Train, tokenise and evaluate what ``runs`` needs and return the evaluation's record; with ``run``
        False only what is already done is read (None when the evaluation is not)."""
        folder = self._eval_folder(runs.model, spec, out)
        token_folder = None if tokenizer_only else self._eval_folder(runs.model, _token_spec(spec), out)
        if not run:
            done = _read_done(folder)
            if done is None:
                return None
            for step in runs.steps():
                record = _read_done(step.folder)
                if record is not None:
                    self.records.setdefault(step.name, record)
            return _with_token_scores(done, None if token_folder is None else _read_done(token_folder))
        for step in runs.steps():
            self.tokenize(step) if isinstance(step, TokenRun) else self.train(step)
        done = self.evaluate(runs.model, tokenizer_only, spec, val, folder)
        if token_folder is None:
            return done
        return _with_token_scores(done, self.evaluate_tokens(runs.model, spec, val, token_folder))

    @staticmethod
    def _eval_folder(model: TrainRun, spec: dict[str, Any], out: Path) -> Path:
        return out / "evals" / f"{model.name}-{_hash({'model': model.key, 'evaluation': spec})}"

    def evaluate_tokens(self, model: TrainRun, spec: dict[str, Any], val: Path, folder: Path) -> dict[str, Any]:
        """The held-out token metrics of transformer ``model`` (:mod:`magvit.metrics.likelihood`) once into
        ``folder``, on the clips and tasks of the evaluation ``spec``."""
        done = _read_done(folder)
        if done is not None:
            return done
        self._say(f"scoring the held-out tokens of {model.name}")
        start = time.perf_counter()
        pipe = MagvitPipeline.from_checkpoint(model.checkpoint)
        loader = make_eval_loader(val, spec["batch_size"])
        scores = evaluate_token_likelihood(pipe, loader, spec["tasks"], max_clips=spec["num_clips"])
        done = {"model": model.name, "evaluation": _token_spec(spec),
                "scores": {name: attrs.asdict(s) for name, s in scores.items()},
                "seconds": round(time.perf_counter() - start, 3), "machine": machine()}
        _write_done(folder, done)
        return done

    def evaluate(self, model: TrainRun, tokenizer_only: bool, spec: dict[str, Any], val: Path,
                 folder: Path) -> dict[str, Any]:
        """Score ``model`` once into ``folder`` (its done record holds the per-task scores)."""
        done = _read_done(folder)
        if done is not None:
            return done
        self._say(f"evaluating {model.name}")
        start = time.perf_counter()
        loader = make_eval_loader(val, spec["batch_size"])
        fvd = "i3d" if spec["fvd"] else None
        if tokenizer_only:
            tokenizer, _, _ = load_tokenizer_weights(model.checkpoint)
            tokenizer.eval()
            report = evaluate_reconstruction(tokenizer, loader, fvd_extractor=fvd, max_clips=spec["num_clips"])
            scores = {"reconstruction": attrs.asdict(report.scores)}
            per_repeat = {"reconstruction": [scores["reconstruction"]]}
        else:
            pipe = MagvitPipeline.from_checkpoint(model.checkpoint)
            report = evaluate_tasks(pipe, loader, spec["tasks"], fvd_extractor=fvd, steps=spec["steps"],
                                    sampler=spec["sampler"], sampler_options=spec["sampler_options"],
                                    repeats=spec["repeats"], seed=spec["seed"], max_clips=spec["num_clips"])
            scores = {name: attrs.asdict(s) for name, s in report.tasks.items()}
            scores["average"] = report.average()
            per_repeat = {name: [attrs.asdict(s) for s in runs] for name, runs in report.runs().items()}
        done = {"model": model.name, "evaluation": spec, "scores": scores, "repeats": per_repeat,
                "seconds": round(time.perf_counter() - start, 3), "machine": machine()}
        _write_done(folder, done)
        return done


def _token_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What the held-out token metrics of an evaluation spec depend on (not its decoding settings)."""
    return {"token_likelihood": {k: spec[k] for k in ("tasks", "num_clips", "batch_size")}}


def _with_token_scores(done: dict[str, Any], tokens: Mapping[str, Any] | None) -> dict[str, Any]:
    """An evaluation record with the token metrics of ``tokens`` (a done record of
    :meth:`_Steps.evaluate_tokens`, None when not scored) added to its per-task scores, and their mean over
    the tasks that have them to ``average``."""
    if tokens is None:
        return done
    scores = {task: {**values, **tokens["scores"].get(task, {})} for task, values in done["scores"].items()}
    for key in TOKEN_FIELDS:
        values = [s[key] for s in tokens["scores"].values() if s.get(key) is not None]
        # fsum: exact, so the mean does not depend on the order of the tasks (a done record's keys are sorted)
        scores.setdefault("average", {})[key] = math.fsum(values) / len(values) if values else None
    return {**done, "scores": scores, "token_seconds": tokens["seconds"]}


def _data(study: Study, out: Path, smoke: bool) -> tuple[Path, dict[str, Any]]:
    spec = {**attrs.asdict(study.data), **(SMOKE_DATA if smoke else {})}
    folder = out / "data" / _hash(spec)
    done = _read_done(folder)
    if done is None:
        start = time.perf_counter()
        write_synthetic(folder, num_clips=spec["clips"], num_val_clips=spec["val_clips"], frames=spec["frames"],
                        size=spec["size"], num_classes=spec["classes"], turn_probability=spec["turn_probability"],
                        seed=spec["seed"], overwrite=True)
        done = {"spec": spec, "seconds": round(time.perf_counter() - start, 3)}
        _write_done(folder, done)
    return folder, done


def machine() -> dict[str, Any]:
    """What the numbers were measured on (CPU determinism holds for the same kind of machine)."""
    return {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__}


def run_study(study_path: str | os.PathLike[str], out: str | os.PathLike[str], smoke: bool = False,
              arms: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> Path:
    """Run (or continue) the study of ``study_path`` in ``out``; writes ``out/<name>/results.json`` (with
    ``--smoke``: ``out/<name>-smoke/``), its ``report.md`` and plots.

    Args:
        study_path: the study file (:mod:`magvit.ablation.study`).
        out: the output folder; studies run into the same folder share their common runs.
        smoke: the same plan at the smallest size (first two seeds, 2 training steps, 2 clips).
        arms, seeds: run only these arms and seeds (with the runs they depend on); the results still hold
            every arm and seed finished before. In a fresh folder this re-runs one arm and seed, to check that
            it reproduces its recorded metrics.

    Returns the path of ``report.md``.
    """
    study = load_study(study_path)
    if smoke:
        study = attrs.evolve(study, seeds=study.seeds[:SMOKE_SEEDS])
    _check_selection(study, arms, seeds)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data, data_record = _data(study, out, smoke)
    plan = plan_study(study, out, data, smoke)  # every config parsed: a bad override is refused here
    eval_spec = {**attrs.asdict(study.evaluation), **(SMOKE_EVAL if smoke else {})}
    steps = _Steps()
    results_dir = out / (f"{study.name}-smoke" if smoke else study.name)  # a smoke run never replaces results
    scores: dict[str, dict[str, Any]] = {arm: {} for arm in study.arms}
    report = results_dir / "report.md"
    for seed in study.seeds:
        for arm in study.arms:
            runs = plan[arm, seed]
            chosen = (arms is None or arm in arms) and (seeds is None or seed in seeds)
            record = steps.run_arm(runs, study.tokenizer_only, eval_spec, data / "val", out, run=chosen)
            if record is None:
                continue
            scores[arm][str(seed)] = {"runs": runs.names(),
                                      "scores": record["scores"], "repeats": record["repeats"],
                                      "eval_seconds": record["seconds"] + record.get("token_seconds", 0.0)}
            results = _results(study, smoke, data_record, eval_spec, scores, steps)
            report = _write_results(study, results, results_dir)
    if not any(scores.values()):
        report = _write_results(study, _results(study, smoke, data_record, eval_spec, scores, steps), results_dir)
    return report


def _check_selection(study: Study, arms: Sequence[str] | None, seeds: Sequence[int] | None) -> None:
    if seeds is not None and sorted(set(seeds) - set(study.seeds)):
        raise InputError(f"--seeds {sorted(set(seeds) - set(study.seeds))}: not seeds of study {study.name} "
                         f"(its seeds: {study.seeds})")
    if arms is not None and sorted(set(arms) - set(study.arms)):
        raise InputError(f"--arms {sorted(set(arms) - set(study.arms))}: not arms of study {study.name} "
                         f"(its arms: {list(study.arms)})")


def _write_results(study: Study, results: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "results.json", json.dumps(results, indent=2) + "\n")
    plots = plot_study(study, results, folder)
    return write_text_atomic(folder / "report.md", render_report(study, results, [p.name for p in plots]))


def primary_values(study: Study, scores: Mapping[str, Mapping[str, Any]], arm: str, seeds: Sequence[str],
                   task: str | None = None, metric: str | None = None) -> list[float | None]:
    """The primary metric (or ``metric``) of ``arm`` for each seed (of ``task`` when given)."""
    task = "reconstruction" if study.tokenizer_only else (task or study.primary.task)
    metric = metric or study.primary.metric
    return [scores[arm][seed]["scores"].get(task, {}).get(metric) for seed in seeds]


def _comparisons(study: Study, scores: Mapping[str, Mapping[str, Any]], metric: str | None = None,
                 higher_is_better: bool | None = None) -> list[dict[str, Any]]:
    """Every comparison of the study on the primary metric, or on ``metric`` (a secondary one)."""
    higher = study.primary.higher_is_better if higher_is_better is None else higher_is_better
    out = []
    for c in study.comparisons:
        entry: dict[str, Any] = {"better": c.better, "worse": c.worse,
                                 "task": "reconstruction" if study.tokenizer_only else (c.task or study.primary.task)}
        if metric is not None:
            entry.update(metric=metric, higher_is_better=higher)
        seeds = [s for s in map(str, study.seeds) if s in scores.get(c.better, {}) and s in scores.get(c.worse, {})]
        better = primary_values(study, scores, c.better, seeds, c.task, metric)
        worse = primary_values(study, scores, c.worse, seeds, c.task, metric)
        entry.update(seeds=[int(s) for s in seeds], better_values=better, worse_values=worse)
        if not seeds or any(v is None for v in better + worse):
            entry.update(verdict="inconclusive", note=f"no seed has both arms' {metric or 'primary metric'} yet")
        else:
            diff = paired_difference(better, worse, higher)
            entry.update(attrs.asdict(diff), verdict=diff.verdict)
        out.append(entry)
    return out


def secondary_comparisons(study: Study, scores: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The comparisons on each secondary metric (each entry names its ``metric``)."""
    return [entry for m in study.secondary for entry in _comparisons(study, scores, m.metric, m.higher_is_better)]


def _results(study: Study, smoke: bool, data_record: dict[str, Any], eval_spec: dict[str, Any],
             scores: dict[str, dict[str, Any]], steps: _Steps) -> dict[str, Any]:
    names = {name for entry in scores.values() for seed in entry.values() for name in seed["runs"].values()}
    runs = {name: steps.records[name] for name in sorted(names) if name in steps.records}
    complete = all(str(s) in scores[arm] for arm in scores for s in study.seeds)
    return {"study": study.name, "table": study.table, "file": study.path, "smoke": smoke, "complete": complete,
            "primary_metric": attrs.asdict(study.primary), "seeds": study.seeds,
            "seed_stages": list(study.seed_stages), "data": data_record, "evaluation": eval_spec,
            "machine": machine(), "runs": runs, "arms": scores,
            "comparisons": _comparisons(study, scores),
            "secondary_metrics": [attrs.asdict(m) for m in study.secondary],
            "secondary_comparisons": secondary_comparisons(study, scores), "paper": attrs.asdict(study.paper),
            "this_invocation": steps.log}
