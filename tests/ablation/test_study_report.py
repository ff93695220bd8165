"""What a study's reader sees (magvit.ablation.report, magvit.ablation.plots), from hand-made results with the
keys and layout of the runner's ``results.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

import magvit.ablation.plots as plots
from magvit.ablation.plots import plot_study
from magvit.ablation.report import render_report
from magvit.ablation.stats import paired_difference
from magvit.ablation.study import Study, load_study
from magvit.metrics.evaluation import AVERAGED, TaskScores
from magvit.metrics.reconstruction import ReconstructionScores

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STUDY = """\
name: s
table: 5
primary_metric: {task: average, metric: psnr_generated, higher_is_better: true, why: The claim is on the average.}
base: {tokenizer: tiny/tokenizer, transformer: tiny/transformer}
arms:
  a: {}
  b: {transformer: {model.init_args.objective.method: latent}}
  c: {transformer: {model.init_args.objective.method: prefix}}
seeds: [0, 1]
seed_stages: [transformer]
evaluation: {tasks: [fp, fi]}
comparisons: [{better: a, worse: b}, {better: a, worse: b, task: fp}, {better: b, worse: c}]
paper: {metric: FVD on BAIR (lower is better), values: {a: {fp: 48, average: 33}, b: {fp: 74}}}
"""

TOKENIZERS = """\
name: tok
table: 7
primary_metric: {task: reconstruction, metric: psnr, higher_is_better: true, why: Reconstruction quality.}
base: {tokenizer: tiny/tokenizer}
arms: {x: {}, y: {tokenizer: {model.init_args.ema_decay: 0.5}}}
seeds: [0, 1]
comparisons: [{better: x, worse: y}]
paper: {metric: UCF-101 FVD, values: {x: {ucf: 58}}}
"""

#: psnr_generated of fp and fi per arm and seed (c has not finished seed 1)
GENERATED = {"a": {"0": (20.0, 24.0), "1": (22.0, 26.0)},
             "b": {"0": (17.0, 19.0), "1": (19.0, 23.0)},
             "c": {"0": (18.0, 20.0)}}
#: wall time of each training run and evaluation
TRAIN_SECONDS = {"a": {"0": 20.0, "1": 21.0}, "b": {"0": 30.0, "1": 31.0}, "c": {"0": 12.0, "1": 13.0}}
EVAL_SECONDS = {"a": {"0": 1.5, "1": 1.5}, "b": {"0": 2.0, "1": 2.0}, "c": {"0": 1.0, "1": 1.0}}
MACHINE = {"platform": "Linux-test", "processor": "x86_64", "cpu_count": 2, "torch_threads": 2, "python": "3.11.9",
           "torch": "2.5.1"}


def _study(tmp_path: Path, text: str = STUDY) -> Study:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return load_study(path)


def _task_scores(generated: float) -> dict[str, Any]:
    return attrs.asdict(TaskScores(psnr_generated=generated, psnr_trivial=generated - 5, psnr_condition=30.0,
                                   psnr_tokenizer_condition=31.0, psnr=generated + 2, ssim=0.5, fvd=None,
                                   num_clips=2))


def _scores(fp: float, fi: float) -> dict[str, dict[str, Any]]:
    """One evaluation's scores as the runner records them: each task's, and their average."""
    tasks = {"fp": _task_scores(fp), "fi": _task_scores(fi)}
    average = {k: None if tasks["fp"][k] is None else (tasks["fp"][k] + tasks["fi"][k]) / 2 for k in AVERAGED}
    return {**tasks, "average": average}


def _comparisons(study: Study, arms: dict[str, Any]) -> list[dict[str, Any]]:
    """The runner's comparison records: paired over the seeds both arms finished."""
    out = []
    for c in study.comparisons:
        task = c.task or study.primary.task
        seeds = [s for s in map(str, study.seeds) if s in arms[c.better] and s in arms[c.worse]]
        better = [arms[c.better][s]["scores"][task][study.primary.metric] for s in seeds]
        worse = [arms[c.worse][s]["scores"][task][study.primary.metric] for s in seeds]
        entry = {"better": c.better, "worse": c.worse, "task": task, "seeds": [int(s) for s in seeds],
                 "better_values": better, "worse_values": worse}
        if seeds:
            diff = paired_difference(better, worse, study.primary.higher_is_better)
            entry.update(attrs.asdict(diff), verdict=diff.verdict)
        else:
            entry.update(verdict="inconclusive", note="no seed has both arms' primary metric yet")
        out.append(entry)
    return out


def _results(study: Study, generated: dict[str, dict[str, tuple[float, float]]] = GENERATED,
             smoke: bool = False) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {"tokenizer-t": {"stage": "tokenizer", "key": "t", "seconds": 10.0},
                                       "tokens-k": {"stage": "tokens", "key": "k", "seconds": 2.5}}
    arms: dict[str, dict[str, Any]] = {arm: {} for arm in study.arms}  # as the runner: every arm, maybe no seed
    for arm, seeds in generated.items():
        for seed, (fp, fi) in seeds.items():
            name = f"transformer-{arm}{seed}"
            runs[name] = {"stage": "transformer", "key": f"{arm}{seed}", "seconds": TRAIN_SECONDS[arm][seed]}
            scores = _scores(fp, fi)
            arms[arm][seed] = {"runs": {"tokenizer": "tokenizer-t", "tokens": "tokens-k", "transformer": name},
                               "scores": scores, "repeats": {t: [scores[t]] for t in ("fp", "fi")},
                               "eval_seconds": EVAL_SECONDS[arm][seed]}
    complete = all(str(s) in arms[arm] for arm in study.arms for s in study.seeds)
    return {"study": study.name, "table": study.table, "file": study.path, "smoke": smoke, "complete": complete,
            "primary_metric": attrs.asdict(study.primary), "seeds": study.seeds,
            "seed_stages": list(study.seed_stages), "data": {"spec": attrs.asdict(study.data), "seconds": 0.5},
            "evaluation": attrs.asdict(study.evaluation), "machine": MACHINE, "runs": runs, "arms": arms,
            "comparisons": _comparisons(study, arms), "paper": attrs.asdict(study.paper), "this_invocation": []}


def _tokenizer_results(study: Study) -> dict[str, Any]:
    psnr = {"x": {"0": 30.0, "1": 32.0}, "y": {"0": 29.0}}
    arms = {arm: {seed: {"runs": {"tokenizer": f"tokenizer-{arm}{seed}"},
                         "scores": {"reconstruction": attrs.asdict(ReconstructionScores(psnr=value, ssim=0.75,
                                                                                        fvd=None, num_clips=2))},
                         "repeats": {}, "eval_seconds": 1.0}
                  for seed, value in seeds.items()}
            for arm, seeds in psnr.items()}
    runs = {f"tokenizer-{arm}{seed}": {"stage": "tokenizer", "seconds": 5.0} for arm in psnr for seed in psnr[arm]}
    return {"study": study.name, "table": study.table, "file": study.path, "smoke": True, "complete": False,
            "primary_metric": attrs.asdict(study.primary), "seeds": study.seeds,
            "seed_stages": list(study.seed_stages), "data": {"seconds": 1.0},
            "evaluation": attrs.asdict(study.evaluation), "machine": MACHINE, "runs": runs, "arms": arms,
            "comparisons": [], "paper": attrs.asdict(study.paper)}


def _section(report: str, title: str) -> list[str]:
    """The lines of the report from ``title`` up to the next heading."""
    lines = report.splitlines()
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start:end]


def test_the_report_heads_with_the_study_and_its_primary_metric(tmp_path):
    study = _study(tmp_path)
    lines = render_report(study, _results(study)).splitlines()
    assert lines[:6] == [
        "# Study s (paper Table 5)", "",
        "Primary metric (pre-registered): `psnr_generated` of `average`, higher is better. "
        "The claim is on the average.", "",
        "Seeds: [0, 1] (varying the transformer). Cells are mean ± sample std over seeds.", ""]


def test_an_unfinished_study_lists_the_seeds_each_arm_finished(tmp_path):
    study = _study(tmp_path)
    results = _results(study)
    assert results["complete"] is False
    assert ("**Incomplete: the study is still running.** Seeds finished per arm: a [0, 1], b [0, 1], c [0]."
            in render_report(study, results).splitlines())
    finished = _results(study, {**GENERATED, "c": {**GENERATED["c"], "1": (20.0, 22.0)}})
    assert finished["complete"] is True
    assert not any(line.startswith("**Incomplete") for line in render_report(study, finished).splitlines())


def test_a_smoke_run_says_its_numbers_are_not_a_result(tmp_path):
    study = _study(tmp_path)
    assert ("Seeds: [0, 1] (varying the transformer). Cells are mean ± sample std over seeds. "
            "**Smoke run: a few training steps, not a result.**"
            in render_report(study, _results(study, smoke=True)).splitlines())


def test_the_paper_numbers_stand_beside_ours(tmp_path):
    study = _study(tmp_path)
    assert _section(render_report(study, _results(study)), "## Ours beside the paper's") == [
        "## Ours beside the paper's", "",
        "Paper: FVD on BAIR (lower is better). Ours: `psnr_generated` (higher is better), mean ± sample std over "
        "seeds.", "",
        "| arm | paper fp | paper average | ours fp | ours average |",
        "|---|---|---|---|---|",
        "| a | 48 | 33 | 21.000 ± 1.414 | 23.000 ± 1.414 |",
        "| b | 74 | - | 18.000 ± 1.414 | 19.500 ± 2.121 |",
        "| c | - | - | 18.000 ± 0.000 (n=1) | 19.000 ± 0.000 (n=1) |",
        ""]


def test_the_primary_metric_per_task_is_mean_and_sample_std_over_seeds(tmp_path):
    study = _study(tmp_path)
    assert _section(render_report(study, _results(study)), "## `psnr_generated` per task") == [
        "## `psnr_generated` per task", "",
        "| arm | fp | fi | average |",
        "|---|---|---|---|",
        "| a | 21.000 ± 1.414 | 25.000 ± 1.414 | 23.000 ± 1.414 |",
        "| b | 18.000 ± 1.414 | 21.000 ± 2.828 | 19.500 ± 2.121 |",
        # an arm that has not finished every seed says over how many its cell is
        "| c | 18.000 ± 0.000 (n=1) | 20.000 ± 0.000 (n=1) | 19.000 ± 0.000 (n=1) |",
        ""]


def test_every_metric_of_the_average_is_tabulated(tmp_path):
    study = _study(tmp_path)
    assert _section(render_report(study, _results(study)), "## Every metric of `average`") == [
        "## Every metric of `average`", "",
        "| arm | psnr_generated | psnr_trivial | psnr | ssim | fvd |",
        "|---|---|---|---|---|---|",
        "| a | 23.000 ± 1.414 | 18.000 ± 1.414 | 25.000 ± 1.414 | 0.500 ± 0.000 | - |",
        "| b | 19.500 ± 2.121 | 14.500 ± 2.121 | 21.500 ± 2.121 | 0.500 ± 0.000 | - |",
        "| c | 19.000 ± 0.000 (n=1) | 14.000 ± 0.000 (n=1) | 21.000 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) | - |",
        ""]


def test_the_comparisons_show_the_paired_interval_and_verdict(tmp_path):
    study = _study(tmp_path)
    # a - b on the average: 4 and 3 (mean 3.5, s sqrt(0.5)); t_{0.975, 1} = tan(0.475 pi) = 12.706, so the
    # half-width is 12.706 * sqrt(0.5) / sqrt(2) = 6.353. On fp: 3 and 3 (no spread). b - c: seed 0 only.
    assert _section(render_report(study, _results(study)),
                    "## Comparisons (paired over seeds, 95% Student-t interval of the difference)")[2:] == [
        "Difference = first arm - second arm in `psnr_generated`; the claim is the paper's ordering.", "",
        "| claim | task | seeds | mean difference | 95% interval | verdict |",
        "|---|---|---|---|---|---|",
        "| a > b | `average` | 2 | 3.500 | [-2.853, 9.853] | inconclusive |",
        "| a > b | `fp` | 2 | 3.000 | [3.000, 3.000] | reproduced |",
        "| b > c | `average` | 1 | -1.000 | - | inconclusive |",
        ""]


def test_secondary_metrics_get_their_tables_and_paired_intervals(tmp_path):
    from magvit.ablation.runner import secondary_comparisons

    study = _study(tmp_path, STUDY + "secondary_metrics: [{metric: ssim, higher_is_better: false, why: Spread.}]\n")
    results = _results(study)
    for arm, shift in (("a", 0.0), ("b", 0.1)):  # b's ssim is 0.1 above a's on every seed and task
        for entry in results["arms"][arm].values():
            for scores in entry["scores"].values():
                scores["ssim"] += shift
    results["secondary_comparisons"] = secondary_comparisons(study, results["arms"])
    lines = render_report(study, results).splitlines()
    section = lines[lines.index("## Secondary metrics"):lines.index("## Wall time and machine")]
    assert section[4:] == [
        "### `ssim` (lower is better)", "", "Spread.", "",
        "| arm | fp | fi | average |", "|---|---|---|---|",
        "| a | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.500 ± 0.000 |",
        "| b | 0.600 ± 0.000 | 0.600 ± 0.000 | 0.600 ± 0.000 |",
        "| c | 0.500 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) |", "",
        "| claim | task | seeds | mean difference | 95% interval | on this metric |", "|---|---|---|---|---|---|",
        "| a > b | `average` | 2 | 0.1000 | [0.1000, 0.1000] | reproduced |",
        "| a > b | `fp` | 2 | 0.1000 | [0.1000, 0.1000] | reproduced |",
        "| b > c | `average` | 1 | -0.1000 | - | inconclusive |", ""]
    assert "## Secondary metrics" not in render_report(_study(tmp_path), _results(_study(tmp_path)))


def test_a_comparison_without_values_has_no_numbers(tmp_path):
    study = _study(tmp_path)
    results = _results(study)
    results["comparisons"] = [{"better": "a", "worse": "c", "task": "fi", "seeds": [], "better_values": [],
                               "worse_values": [], "verdict": "inconclusive",
                               "note": "no seed has both arms' primary metric yet"}]
    assert "| a > c | `fi` | 0 | - | - | inconclusive |" in render_report(study, results).splitlines()


def test_lower_is_better_is_said_and_the_difference_sign_flipped(tmp_path):
    study = _study(tmp_path)
    study = attrs.evolve(study, primary=attrs.evolve(study.primary, higher_is_better=False))
    lines = render_report(study, _results(study)).splitlines()
    assert ("Primary metric (pre-registered): `psnr_generated` of `average`, lower is better. "
            "The claim is on the average.") in lines
    assert ("Difference = first arm - second arm in `psnr_generated`, sign-flipped so that > 0 favours the first "
            "arm; the claim is the paper's ordering.") in lines


def test_wall_times_sum_the_runs_the_evaluations_and_the_data(tmp_path):
    study = _study(tmp_path)
    # training 10 (tokenizer) + 20 + 21 + 30 + 31 + 12; evaluation 1.5 + 1.5 + 2 + 2 + 1
    assert _section(render_report(study, _results(study)), "## Wall time and machine") == [
        "## Wall time and machine", "",
        "Training 124.0 s over 6 runs, tokenising 2.5 s, evaluation 8.0 s, data 0.5 s (runs shared with other "
        "arms or studies counted once here); total 134.5 s, measured on whatever else the machine ran. "
        "Linux-test, 2 CPUs, torch 2.5.1; this report written with 2 torch threads.", ""]


def test_resumed_runs_and_the_threads_each_run_recorded_are_said(tmp_path):
    study = _study(tmp_path)
    results = _results(study)
    results["machine"] = {**MACHINE, "torch_threads": 1}  # written by an invocation with one thread
    for name, run in results["runs"].items():
        run["machine"] = MACHINE  # trained with two
    results["runs"]["transformer-a0"]["resumed"] = True
    line = _section(render_report(study, results), "## Wall time and machine")[2]
    assert "(runs shared with other arms or studies counted once here; 1 run resumed after a stop, counted from " \
           "the resume only)" in line
    assert line.endswith("Runs recorded with 2 torch threads. Linux-test, 2 CPUs, torch 2.5.1; this report written "
                         "with 1 torch thread.")


def test_the_report_links_the_plots_it_is_given(tmp_path):
    study = _study(tmp_path)
    report = render_report(study, _results(study), ["primary.png", "tasks.png"])
    assert report.endswith("## Plots\n\n![primary.png](primary.png)\n![tasks.png](tasks.png)\n")


def test_a_study_with_no_finished_seed_says_so(tmp_path):
    study = _study(tmp_path)
    results = _results(study, {})
    report = render_report(study, results)
    assert report.endswith("| c | - | - | - | - |\n\nNo arm has finished a seed yet.\n")
    lines = report.splitlines()
    assert "**Incomplete: the study is still running.** Seeds finished per arm: a [], b [], c []." in lines
    assert "| a | 48 | 33 | - | - |" in lines  # the paper's numbers, with no numbers of ours yet
    assert plot_study(study, results, tmp_path / "plots") == []
    assert not (tmp_path / "plots").exists()


def test_a_tokenizer_study_reports_reconstructions(tmp_path):
    study = _study(tmp_path, TOKENIZERS)
    lines = render_report(study, _tokenizer_results(study)).splitlines()
    # the paper's columns are set beside our reconstruction score, whatever the paper names its column
    assert "| arm | paper ucf | ours ucf |" in lines
    assert "| x | 58 | 31.000 ± 1.414 |" in lines and "| y | - | 29.000 ± 0.000 (n=1) |" in lines
    assert _section("\n".join(lines), "## Every metric of `reconstruction`")[2:6] == [
        "| arm | psnr | ssim | fvd |", "|---|---|---|---|",
        "| x | 31.000 ± 1.414 | 0.750 ± 0.000 | - |",
        "| y | 29.000 ± 0.000 (n=1) | 0.750 ± 0.000 (n=1) | - |"]
    assert "Seeds: [0, 1] (varying the tokenizer and transformer). Cells are mean ± sample std over seeds. " \
           "**Smoke run: a few training steps, not a result.**" in lines


def _assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 0 and height > 0
        image.verify()


def test_plots_of_a_multi_task_study(tmp_path):
    pytest.importorskip("matplotlib")
    study = _study(tmp_path)
    folder = tmp_path / "plots"
    paths = plot_study(study, _results(study), folder)
    assert paths == [folder / "primary.png", folder / "tasks.png"]
    assert sorted(p.name for p in folder.iterdir()) == ["primary.png", "tasks.png"]  # no temporary file left
    for path in paths:
        _assert_png(path)


def test_a_single_task_study_has_no_per_task_plot(tmp_path):
    pytest.importorskip("matplotlib")
    study = _study(tmp_path, STUDY.replace("tasks: [fp, fi]", "tasks: [fp]"))
    results = _results(study)
    for seeds in results["arms"].values():
        for entry in seeds.values():
            entry["scores"] = {"fp": entry["scores"]["fp"], "average": entry["scores"]["fp"]}
    paths = plot_study(study, results, tmp_path)
    assert paths == [tmp_path / "primary.png"]
    _assert_png(paths[0])


def test_a_tokenizer_study_plots_its_reconstructions(tmp_path):
    pytest.importorskip("matplotlib")
    study = _study(tmp_path, TOKENIZERS)
    paths = plot_study(study, _tokenizer_results(study), tmp_path / "plots")
    assert paths == [tmp_path / "plots" / "primary.png"]
    _assert_png(paths[0])


def test_without_matplotlib_there_are_no_plots_and_the_report_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "_figure_classes", lambda: None)
    study = _study(tmp_path)
    results = _results(study)
    paths = plot_study(study, results, tmp_path / "plots")
    assert paths == []
    assert not (tmp_path / "plots").exists()
    report = render_report(study, results, [p.name for p in paths])
    assert report.endswith("## Plots\n\nNone: matplotlib is not installed (`pip install 'magvit[plots]'`).\n")
