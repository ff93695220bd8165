"""Plots of a study (PNG, matplotlib's non-interactive Agg canvas): every seed's primary metric per arm with
the mean, and the per-task means. matplotlib is an optional dependency (``magvit[plots]``); without it a
study writes no plots and its report says so."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from magvit.ablation.report import task_order
from magvit.ablation.study import Study
from magvit.data.atomic import atomic_path

__all__ = ["plot_study"]


def _figure_classes() -> tuple[Any, Any] | None:
    """matplotlib's ``Figure`` and Agg canvas, or None when matplotlib is not installed.

    The object-oriented API draws without pyplot's global figure registry or backend switch, so a library
    call changes no process-wide state.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def _save(figure: Any, canvas_class: Any, path: Path) -> Path:
    canvas_class(figure)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


def _seed_values(seeds: Mapping[str, Any], task: str, metric: str) -> list[float]:
    return [v for entry in seeds.values() if (v := entry["scores"].get(task, {}).get(metric)) is not None]


def plot_study(study: Study, results: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write ``primary.png`` (and ``tasks.png`` for a multi-task study) into ``folder``; returns their paths
    (none without matplotlib or before any arm has a score)."""
    classes = _figure_classes()
    arms = {arm: seeds for arm, seeds in results["arms"].items() if seeds}
    if classes is None or not arms:
        return []
    figure_class, canvas_class = classes
    p = study.primary
    task = study.summary_task if study.tokenizer_only else p.task
    direction = "higher" if p.higher_is_better else "lower"
    paths = []

    figure = figure_class(figsize=(1.4 + 1.1 * len(arms), 3.6))
    ax = figure.add_subplot()
    for i, (arm, seeds) in enumerate(arms.items()):
        values = _seed_values(seeds, task, p.metric)
        ax.scatter([i] * len(values), values, color="tab:blue", alpha=0.6, zorder=2)
        if values:
            ax.hlines(sum(values) / len(values), i - 0.3, i + 0.3, color="black", zorder=3)
    ax.set_xticks(range(len(arms)), list(arms), rotation=30, ha="right")
    ax.set_ylabel(f"{p.metric} of {task} ({direction} is better)")
    ax.set_title(f"{study.name}: each seed (dots) and the mean (bar)")
    ax.grid(axis="y", alpha=0.3)
    paths.append(_save(figure, canvas_class, folder / "primary.png"))

    scored = next(iter(next(iter(arms.values())).values()))["scores"]
    tasks = [t for t in task_order(results, scored) if t != "average"]
    if not study.tokenizer_only and len(tasks) > 1:
        figure = figure_class(figsize=(2 + 0.9 * len(tasks), 3.6))
        ax = figure.add_subplot()
        width = 0.8 / len(arms)
        for i, (arm, seeds) in enumerate(arms.items()):
            means = [sum(v) / len(v) if (v := _seed_values(seeds, t, p.metric)) else 0.0 for t in tasks]
            ax.bar([j + i * width for j in range(len(tasks))], means, width, label=arm)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks)
        ax.set_ylabel(f"{p.metric} ({direction} is better), mean over seeds")
        ax.legend(fontsize="small")
        ax.grid(axis="y", alpha=0.3)
        paths.append(_save(figure, canvas_class, folder / "tasks.png"))
    return paths
