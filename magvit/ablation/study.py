"""A study file: the arms of one paper ablation, its seeds, data, evaluation and pre-registered metric.

A study is a YAML file read with ``yaml.safe_load`` (data, never code) and checked by :func:`load_study`.
Its keys:

``name``, ``table``
    the study's name (the folder of its results) and the paper table it reproduces.
``primary_metric``
    ``{task, metric, higher_is_better, why}``, fixed before the runs: ``task`` is an evaluated task or
    ``average`` (the mean over the evaluated tasks, as the paper's MT8 column; ``reconstruction`` for a
    tokenizer study); ``metric`` a score of :class:`~magvit.metrics.evaluation.TaskScores` or a held-out token
    metric of :mod:`magvit.metrics.likelihood` (or ``psnr`` / ``ssim`` / ``fvd`` of a reconstruction); an unknown
    name is refused.
``secondary_metrics``
    optional, a list of ``{metric, higher_is_better, why}``: other scores of the same tasks whose paired
    comparisons the report shows beside the primary ones, labelled secondary (the verdicts stay the primary
    metric's). Besides :class:`~magvit.metrics.evaluation.TaskScores`, a transformer study scores the held-out
    token metrics of :mod:`magvit.metrics.likelihood` (``token_nll``, ``token_accuracy``) for every arm.
``base``
    ``{tokenizer: CONFIG, transformer: CONFIG}``: configs as ``magvit fit --config`` takes them (shipped names
    such as ``tiny/tokenizer``, or files). Without ``transformer`` every arm is a tokenizer, scored by its
    reconstructions (:func:`magvit.metrics.reconstruction.evaluate_reconstruction`).
``shared``, ``arms``
    dotted overrides per stage (``{tokenizer: {...}, transformer: {...}}``), applied after the base config as
    options after ``--config`` are (:func:`magvit.train.fit_config.parse_fit_config`): ``shared`` for every
    arm, then the arm's own. A value ``{checkpoint_of: ARM}`` stands for the checkpoint of that arm's run of
    the same stage and seed (a 3D-VQ inflated from the 2D-VQ arm, paper Table 7).
``seeds``, ``seed_stages``
    the seeds, and the stages each seed varies (default both). A seed sets ``trainer.seed`` and ``data.seed``
    of those stages, and the transformer's ``model.init_args.seed``. A study of transformers that share one
    tokenizer names only ``[transformer]``: every seed then trains on the same tokens, as the paper's rows
    share one 3D-VQ.
``data``
    the embedded synthetic data (:func:`magvit.data.write_synthetic`): ``clips``, ``val_clips``, ``frames``,
    ``size``, ``classes``, ``turn_probability``, ``seed``.
``evaluation``
    ``tasks``, ``sampler`` (None: each model's own), ``sampler_options``, ``steps``, ``num_clips``, ``fvd``,
    ``repeats``, ``batch_size``, ``seed`` (the same decoding seed for every arm: the comparisons are paired).
``comparisons``
    the orderings the paper reports, each ``{better: ARM, worse: ARM}`` on the primary metric, optionally on
    another ``task`` than the primary one (Table 4 compares on FP itself as well as on the average).
``paper``
    the paper's numbers for the report: ``{metric: "what they are", values: {ARM: {TASK: number}}}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from magvit.errors import InputError
from magvit.metrics.evaluation import SCORE_FIELDS
from magvit.metrics.likelihood import TOKEN_FIELDS
from magvit.metrics.reconstruction import ReconstructionScores

__all__ = ["STAGES", "Comparison", "DataSpec", "EvalSpec", "PaperNumbers", "PrimaryMetric", "SecondaryMetric", "Study",
           "load_study"]

STAGES = ("tokenizer", "transformer")
#: the key of an override value that names another arm's checkpoint
CHECKPOINT_OF = "checkpoint_of"


@attrs.frozen
class PrimaryMetric:
    """The pre-registered metric: ``metric`` of ``task`` (``average``: mean over the evaluated tasks)."""

    task: str
    metric: str
    higher_is_better: bool
    why: str


@attrs.frozen
class SecondaryMetric:
    """A metric reported beside the primary one, on the same tasks and comparisons (not a verdict)."""

    metric: str
    higher_is_better: bool
    why: str


@attrs.frozen
class Comparison:
    """An ordering the paper reports: ``better`` beats ``worse`` on the primary metric (of ``task`` when set)."""

    better: str
    worse: str
    task: str | None = None


@attrs.frozen
class PaperNumbers:
    """The paper's numbers for the arms, shown beside ours (``values[arm][task]``)."""

    metric: str = ""
    values: dict[str, dict[str, float]] = attrs.field(factory=dict)


@attrs.frozen
class DataSpec:
    clips: int = 2048
    val_clips: int = 64
    frames: int = 16
    size: int = 32
    classes: int = 8
    turn_probability: float = 0.0
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
    seed_stages: tuple[str, ...]
    data: DataSpec
    evaluation: EvalSpec
    comparisons: list[Comparison]
    paper: PaperNumbers
    path: str
    #: the arms, each after those whose checkpoints it names (``checkpoint_of``)
    arm_order: tuple[str, ...] = ()
    secondary: tuple[SecondaryMetric, ...] = ()

    @property
    def tokenizer_only(self) -> bool:
        return self.base.get("transformer") is None

    @property
    def summary_task(self) -> str:
        """The score every arm's row summarises: the tokenizer's reconstruction or the task average."""
        return "reconstruction" if self.tokenizer_only else "average"


def _require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise InputError(f"{where}: missing key {key!r}")
    return mapping[key]


def _known(mapping: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(mapping) - set(allowed), key=str)
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; expected some of {list(allowed)}")


def _record(cls: type, value: Any, where: str) -> Any:
    value = value or {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected a mapping, got {value!r}")
    _known(value, tuple(attrs.fields_dict(cls)), where)
    try:
        return cls(**value)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def arm_references(value: Any) -> list[str]:
    """The arms whose checkpoints an override value names (``{checkpoint_of: ARM}``, at any depth)."""
    if isinstance(value, Mapping):
        if set(value) == {CHECKPOINT_OF}:
            return [str(value[CHECKPOINT_OF])]
        return [arm for v in value.values() for arm in arm_references(v)]
    if isinstance(value, list):
        return [arm for v in value for arm in arm_references(v)]
    return []


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


def _arm_order(arms: dict[str, dict[str, dict[str, Any]]], where: str) -> tuple[str, ...]:
    """The arms with each after those whose checkpoints it names (the file's order otherwise), after checking
    that every ``checkpoint_of`` names another arm and no arm depends on itself through others."""
    needs = {arm: list(dict.fromkeys(ref for stage in STAGES for ref in arm_references(o[stage])))
             for arm, o in arms.items()}
    for arm, refs in needs.items():
        for ref in refs:
            if ref not in arms:
                raise InputError(f"{where}: arms.{arm} names checkpoint_of {ref!r}; the arms are {list(arms)}")
    visiting: set[str] = set()
    order: list[str] = []

    def visit(arm: str) -> None:
        if arm in order:
            return
        if arm in visiting:
            raise InputError(f"{where}: arms.{arm} depends on its own checkpoint through checkpoint_of")
        visiting.add(arm)
        for ref in needs[arm]:
            visit(ref)
        visiting.discard(arm)
        order.append(arm)

    for arm in arms:
        visit(arm)
    return tuple(order)


def _check_paper_values(values: Any, where: str) -> None:
    """``paper.values`` is ``{ARM: {TASK: number}}`` (the report's paper columns read it so)."""
    if not isinstance(values, Mapping):
        raise InputError(f"{where}: paper.values must map each arm to {{TASK: number}}, got {values!r}")
    for arm, numbers in values.items():
        if not isinstance(numbers, Mapping) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
            raise InputError(f"{where}: paper.values.{arm} must map each task to a number, got {numbers!r}")


def _check_metric(metric: str, tokenizer_only: bool, where: str) -> None:
    """``metric`` is a score the runner records for this kind of study."""
    known = ([f for f in attrs.fields_dict(ReconstructionScores) if f != "num_clips"] if tokenizer_only
             else [*SCORE_FIELDS, *TOKEN_FIELDS])
    if metric not in known:
        kind = "a tokenizer study (reconstructions)" if tokenizer_only else "a transformer study"
        raise InputError(f"{where}: metric {metric!r} is not a score of {kind}; expected one of {known}")


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read and check a study file (see the module docstring for its keys).

    Raises:
        InputError: not YAML, a missing or unknown key, an arm, comparison or reference that names no arm.
    """
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: expected a mapping with keys name, table, primary_metric, base, arms, seeds, "
                         "data, evaluation, comparisons")
    _known(raw, ("name", "table", "primary_metric", "base", "shared", "arms", "seeds", "seed_stages", "data",
                 "evaluation", "comparisons", "paper", "secondary_metrics"), where)
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
    arm_order = _arm_order(arms, where)
    seeds = _require(raw, "seeds", where)
    # bool is an int in Python, but `seeds: [true]` is a typo, not seed 1
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise InputError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"{where}: seeds must be distinct, got {seeds!r}")
    seed_stages = raw.get("seed_stages", list(STAGES))
    if not isinstance(seed_stages, list) or not seed_stages or not set(seed_stages) <= set(STAGES):
        raise InputError(f"{where}: seed_stages must be a non-empty list of {list(STAGES)}, got {seed_stages!r}")
    comparisons_raw = raw.get("comparisons") or []
    if not isinstance(comparisons_raw, list):
        raise InputError(f"{where}: comparisons must be a list of {{better: ARM, worse: ARM}}, "
                         f"got {comparisons_raw!r}")
    comparisons = []
    for i, item in enumerate(comparisons_raw):
        comparison = _record(Comparison, item, f"{where}: comparisons[{i}]")
        for arm in (comparison.better, comparison.worse):
            if arm not in arms:
                raise InputError(f"{where}: comparisons[{i}] names arm {arm!r}; the arms are {list(arms)}")
        comparisons.append(comparison)
    secondary_raw = raw.get("secondary_metrics") or []
    if not isinstance(secondary_raw, list):
        raise InputError(f"{where}: secondary_metrics must be a list of {{metric, higher_is_better, why}}, "
                         f"got {secondary_raw!r}")
    secondary = tuple(_record(SecondaryMetric, item, f"{where}: secondary_metrics[{i}]")
                      for i, item in enumerate(secondary_raw))
    tokenizer_only = base.get("transformer") is None
    _check_metric(primary.metric, tokenizer_only, f"{where}: primary_metric")
    for i, item in enumerate(secondary):
        _check_metric(item.metric, tokenizer_only, f"{where}: secondary_metrics[{i}]")
    paper = _record(PaperNumbers, raw.get("paper"), f"{where}: paper")
    _check_paper_values(paper.values, where)
    for arm in paper.values:
        if arm not in arms:
            raise InputError(f"{where}: paper.values names arm {arm!r}; the arms are {list(arms)}")
    return Study(name=str(_require(raw, "name", where)), table=_require(raw, "table", where), primary=primary,
                 base={stage: base.get(stage) for stage in STAGES},
                 shared=_stage_overrides(raw.get("shared"), f"{where}: shared"), arms=arms, seeds=list(seeds),
                 seed_stages=tuple(s for s in STAGES if s in seed_stages),
                 data=_record(DataSpec, raw.get("data"), f"{where}: data"),
                 evaluation=_record(EvalSpec, raw.get("evaluation"), f"{where}: evaluation"),
                 comparisons=comparisons, paper=paper, path=where, arm_order=arm_order, secondary=secondary)
