"""``report.md`` of a study: its tables in the paper's layout (arms as rows), mean +- std over seeds, the
paper's numbers beside ours, the paired comparisons with their intervals and verdicts, wall times."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from magvit.ablation.stats import mean_std
from magvit.ablation.study import Study
from magvit.metrics.evaluation import SCORE_FIELDS

__all__ = ["render_report", "task_order"]


def task_order(results: Mapping[str, Any], scores: Mapping[str, Any]) -> list[str]:
    """The scored tasks in the study's evaluation order, then the average (a score record read back from a
    ``done.json`` has its keys sorted)."""
    order = [*(results.get("evaluation", {}).get("tasks") or []), "average", "reconstruction"]
    return sorted(scores, key=lambda t: order.index(t) if t in order else len(order))


def _cell(values: Sequence[float | None]) -> str:
    """``mean ± std`` over the seeds that have a value (``(n=k)`` when fewer than all)."""
    present = [v for v in values if v is not None]
    mean, std = mean_std(present)
    if mean is None:
        return "-"
    return f"{mean:.3f} ± {std:.3f}" + ("" if len(present) == len(values) else f" (n={len(present)})")


def _values(study: Study, seeds: Mapping[str, Any], task: str, metric: str) -> list[float | None]:
    """One value per seed of the study: None where the arm has not finished that seed or lacks the score."""
    return [seeds[str(s)]["scores"].get(task, {}).get(metric) if str(s) in seeds else None for s in study.seeds]


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _paper_table(study: Study, arms: Mapping[str, Any]) -> list[str]:
    tasks = list(dict.fromkeys(t for values in study.paper.values.values() for t in values))
    if not tasks:
        return []
    p = study.primary
    header = ["arm", *(f"paper {t}" for t in tasks), *(f"ours {t}" for t in tasks)]
    rows = []
    for arm in study.arms:
        paper = study.paper.values.get(arm, {})
        seeds = arms.get(arm, {})
        ours = [_cell(_values(study, seeds, "reconstruction" if study.tokenizer_only else t, p.metric))
                if seeds else "-"
                for t in tasks]
        rows.append([arm, *(_number(paper.get(t)) for t in tasks), *ours])
    return ["## Ours beside the paper's", "",
            f"Paper: {study.paper.metric}. Ours: `{p.metric}` "
            f"({'higher' if p.higher_is_better else 'lower'} is better), mean ± sample std over seeds.", "",
            *_table(header, rows), ""]


def render_report(study: Study, results: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """The markdown report of ``results`` (:func:`magvit.ablation.runner.run_study`'s ``results.json``)."""
    arms = results["arms"]
    p = study.primary
    direction = "higher" if p.higher_is_better else "lower"
    done = {arm: sorted(map(int, seeds)) for arm, seeds in arms.items()}
    lines = [f"# Study {study.name} (paper Table {study.table})", "",
             f"Primary metric (pre-registered): `{p.metric}` of `{p.task}`, {direction} is better. {p.why}", "",
             f"Seeds: {study.seeds} (varying the {' and '.join(study.seed_stages)}). Cells are mean ± sample std "
             "over seeds." + (" **Smoke run: a few training steps, not a result.**" if results["smoke"] else ""), ""]
    if not results.get("complete", True):
        lines += ["**Incomplete: the study is still running.** Seeds finished per arm: "
                  + ", ".join(f"{arm} {seeds}" for arm, seeds in done.items()) + ".", ""]
    lines += _paper_table(study, arms)
    first = next((seed["scores"] for seeds in arms.values() for seed in seeds.values()), None)
    if first is None:
        return "\n".join(lines + ["No arm has finished a seed yet.", ""])
    tasks = task_order(results, first)
    summary = study.summary_task
    # the scores the summary has (the task average holds fewer than a task: magvit.metrics.evaluation.AVERAGED)
    metrics = list(dict.fromkeys(m for m in (*SCORE_FIELDS, "psnr", "ssim", "fvd") if m in first.get(summary, {})))
    lines += [f"## `{p.metric}` per task", "",
              *_table(["arm", *tasks], [[arm, *(_cell(_values(study, seeds, t, p.metric)) for t in tasks)]
                                        for arm, seeds in arms.items()]), ""]
    lines += [f"## Every metric of `{summary}`", "",
              *_table(["arm", *metrics], [[arm, *(_cell(_values(study, seeds, summary, m)) for m in metrics)]
                                          for arm, seeds in arms.items()]), ""]
    lines += ["## Comparisons (paired over seeds, 95% Student-t interval of the difference)", "",
              f"Difference = first arm - second arm in `{p.metric}`"
              + ("" if p.higher_is_better else ", sign-flipped so that > 0 favours the first arm")
              + "; the claim is the paper's ordering.", ""]
    rows = _comparison_rows(results["comparisons"], digits=3)
    lines += [*_table(["claim", "task", "seeds", "mean difference", "95% interval", "verdict"], rows), ""]
    lines += _secondary(study, results, tasks)
    lines += _wall_times(results)
    lines += ["## Plots", ""]
    lines += [f"![{name}]({name})" for name in plots] or [
        "None: matplotlib is not installed (`pip install 'magvit[plots]'`)."]
    return "\n".join(lines) + "\n"


def _comparison_rows(comparisons: Sequence[Mapping[str, Any]], digits: int) -> list[list[str]]:
    """One table row per comparison: claim, task, seeds, mean difference and interval (``digits`` decimals), verdict."""
    rows = []
    for c in comparisons:
        interval = "-" if c.get("low") is None else f"[{c['low']:.{digits}f}, {c['high']:.{digits}f}]"
        mean = "-" if c.get("mean") is None else f"{c['mean']:.{digits}f}"
        rows.append([f"{c['better']} > {c['worse']}", f"`{c['task']}`", str(len(c["seeds"])), mean, interval,
                     c["verdict"]])
    return rows


def _secondary(study: Study, results: Mapping[str, Any], tasks: Sequence[str]) -> list[str]:
    """Per secondary metric: its per-task table and the paired comparisons on it (labelled: not verdicts)."""
    if not study.secondary:
        return []
    arms = results["arms"]
    lines = ["## Secondary metrics", "",
             "Reported beside the pre-registered metric, on the same clips, tasks and seeds; the verdicts above "
             "are the primary metric's. Each comparison below is the same paired interval on this metric.", ""]
    for m in study.secondary:
        direction = "higher" if m.higher_is_better else "lower"
        lines += [f"### `{m.metric}` ({direction} is better)", "", m.why, "",
                  *_table(["arm", *tasks], [[arm, *(_cell(_values(study, seeds, t, m.metric)) for t in tasks)]
                                            for arm, seeds in arms.items()]), ""]
        rows = _comparison_rows([c for c in results.get("secondary_comparisons", []) if c.get("metric") == m.metric],
                                digits=4)
        lines += [*_table(["claim", "task", "seeds", "mean difference", "95% interval", "on this metric"], rows),
                  ""]
    return lines


def _wall_times(results: Mapping[str, Any]) -> list[str]:
    runs = results["runs"].values()
    train = sum(r["seconds"] for r in runs if r.get("stage") in ("tokenizer", "transformer"))
    tokens = sum(r["seconds"] for r in runs if r.get("stage") == "tokens")
    evaluation = sum(entry["eval_seconds"] for seeds in results["arms"].values() for entry in seeds.values())
    resumed = sum(1 for r in runs if r.get("resumed"))
    m = results["machine"]
    # the threads each run was trained with (its done record); results["machine"] is the invocation's that
    # wrote the results, which may only have read runs trained before
    threads = sorted({r["machine"]["torch_threads"] for r in runs if "machine" in r})
    recorded = "" if not threads else \
        f" Runs recorded with {' and '.join(map(str, threads))} torch thread{'s' if threads != [1] else ''}."
    return ["## Wall time and machine", "",
            f"Training {train:.1f} s over {sum(1 for r in runs if r.get('stage') != 'tokens')} runs, tokenising "
            f"{tokens:.1f} s, evaluation {evaluation:.1f} s, data {results['data']['seconds']:.1f} s (runs shared "
            "with other arms or studies counted once here"
            + (f"; {resumed} run{'s' if resumed != 1 else ''} resumed after a stop, counted from the resume only"
               if resumed else "")
            + f"); total {train + tokens + evaluation:.1f} s, measured on whatever else the machine ran.{recorded} "
            f"{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}; this report written with "
            f"{m['torch_threads']} torch thread{'s' if m['torch_threads'] != 1 else ''}.", ""]
