"""`magvit ablate`: the shipped Table 5 study as a smoke run, its resume, the paired interval, bad study files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import magvit.ablate as ablate
from magvit.ablate import paired_difference
from magvit.cli import main
from magvit.configs import config_dir
from tests.helpers.cli import one_line_error

TABLE5 = config_dir() / "ablations" / "table5.yaml"
ARMS = ["commit", "latent", "prefix", "commit_no_refine", "commit_no_refine_no_recons"]
MT8 = ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd"]


class Counter:
    """Wraps a function of :mod:`magvit.ablate` and records each call's result."""

    def __init__(self, fn):
        self.fn, self.results = fn, []

    def __call__(self, *args, **kwargs):
        result = self.fn(*args, **kwargs)
        self.results.append(result)
        return result


def _run(monkeypatch, out: Path) -> tuple[Counter, Counter]:
    fits, evals = Counter(ablate.fit), Counter(ablate.evaluate_tasks)
    monkeypatch.setattr(ablate, "fit", fits)
    monkeypatch.setattr(ablate, "evaluate_tasks", evals)
    assert main(["ablate", str(TABLE5), "--out", str(out), "--smoke"]) == 0
    return fits, evals


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, int, int]:
    """One smoke run of the Table 5 study: its folder and how many trainings and evaluations it ran."""
    out = tmp_path_factory.mktemp("table5")
    with pytest.MonkeyPatch.context() as mp:
        fits, evals = _run(mp, out)
    return out, len(fits.results), len(evals.results)


def test_smoke_run_trains_shared_runs_once_and_scores_every_arm(smoke):
    out, fits, evals = smoke
    results = json.loads((out / "results.json").read_text())
    assert results["study"] == "table5" and results["table"] == 5 and results["smoke"] is True
    assert results["seeds"] == [0, 1]  # a smoke run keeps the first two seeds
    assert set(results["machine"]) >= {"platform", "cpu_count", "torch"}
    # one tokenizer per seed shared by all five arms, one transformer per arm and seed
    stages = sorted(r["stage"] for r in results["runs"].values())
    assert stages == ["tokenizer"] * 2 + ["transformer"] * 10
    assert fits == 12 and evals == 10
    assert list(results["arms"]) == ARMS
    for arm, seeds in results["arms"].items():
        assert list(seeds) == ["0", "1"]
        for seed, entry in seeds.items():
            assert list(entry["scores"]) == [*MT8, "average"]
            assert all(math.isfinite(entry["scores"][t]["psnr_generated"]) for t in MT8)
            assert entry["scores"]["fp"]["num_clips"] == 2 and entry["scores"]["fp"]["fvd"] is None
            tokenizer = results["runs"][entry["runs"]["tokenizer"]]
            transformer = results["runs"][entry["runs"]["transformer"]]
            assert tokenizer["config"]["trainer"]["seed"] == int(seed) and tokenizer["step"] == 2
            init = transformer["config"]["model"]["init_args"]
            assert init["seed"] == int(seed) and transformer["config"]["data"]["seed"] == int(seed)
            assert init["tokenizer_checkpoint"] == f"OUT/runs/{entry['runs']['tokenizer']}/last.pt"
            method = {"latent": "latent", "prefix": "prefix"}.get(arm, "commit")
            assert init["objective"]["method"] == method
            weights = init["objective"]["weights"]
            assert weights["refine"] == (0.0 if arm.startswith("commit_no_refine") else None)
            assert weights["recons"] == (0.0 if arm == "commit_no_refine_no_recons" else None)
    assert [(c["better"], c["worse"]) for c in results["comparisons"]] == [
        ("commit", "latent"), ("commit", "prefix"), ("prefix", "latent"), ("commit", "commit_no_refine"),
        ("commit_no_refine", "commit_no_refine_no_recons")]
    for c in results["comparisons"]:
        arms = results["arms"]
        assert c["better_values"] == [arms[c["better"]][s]["scores"]["average"]["psnr_generated"] for s in "01"]
        assert c["n"] == 2 and c["low"] <= c["mean"] <= c["high"]
        assert c["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    report = (out / "report.md").read_text()
    assert report.startswith("# Study table5 (paper Table 5)")
    assert "| commit > latent |" in report and "95% Student-t interval" in report and "Smoke run" in report
    assert all(f"| {arm} |" in report for arm in ARMS)


def test_a_second_run_retrains_and_rescores_nothing(smoke, monkeypatch):
    out, _, _ = smoke
    before = json.loads((out / "results.json").read_text())
    fits, evals = _run(monkeypatch, out)
    assert fits.results == [] and evals.results == []
    after = json.loads((out / "results.json").read_text())
    assert after["arms"] == before["arms"] and after["runs"] == before["runs"] and after["this_invocation"] == []


def test_an_unfinished_training_resumes_from_its_checkpoint(smoke, monkeypatch):
    out, _, _ = smoke
    results = json.loads((out / "results.json").read_text())
    name = results["arms"]["prefix"]["1"]["runs"]["transformer"]
    (out / "runs" / name / "done.json").unlink()  # as if killed after its last checkpoint
    fits, evals = _run(monkeypatch, out)
    assert len(fits.results) == 1 and not fits.results[0].trained  # resumed at max_steps: nothing to redo
    assert evals.results == []  # its evaluation had finished
    record = json.loads((out / "runs" / name / "done.json").read_text())
    assert record["resumed"] is True and record["step"] == 2


def test_paired_difference_is_the_student_t_interval():
    d = paired_difference([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])  # differences 2, 3, 4: mean 3, s 1
    # t_{0.975, 2} in closed form: for 2 degrees of freedom the quantile of p is (2p - 1) / sqrt(2 p (1 - p))
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3)
    assert (d.mean, d.std, d.n) == (3.0, 1.0, 3)
    assert d.low == pytest.approx(3 - half, abs=1e-12) and d.high == pytest.approx(3 + half, abs=1e-12)
    assert d.verdict == "reproduced"
    lower = paired_difference([1.0, 1.0, 1.0], [3.0, 4.0, 5.0], higher_is_better=False)  # e.g. FVD
    assert lower.mean == 3.0 and lower.verdict == "reproduced"
    assert paired_difference([1.0, 1.0, 1.0], [3.0, 4.0, 5.0]).verdict == "not reproduced"
    assert paired_difference([1.0, 2.0], [1.5, 1.5]).verdict == "inconclusive"
    single = paired_difference([2.0], [1.0])
    assert (single.low, single.high, single.verdict) == (None, None, "inconclusive")


def _study(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return str(path)


GOOD = """
name: s
table: 5
primary_metric: {task: fp, metric: psnr_generated, higher_is_better: true, why: test}
base: {tokenizer: tiny/tokenizer, transformer: tiny/transformer}
arms: {a: {}, b: {transformer: {model.init_args.objective.method: latent}}}
seeds: [0]
comparisons: [{better: a, worse: b}]
"""


@pytest.mark.parametrize(("old", "new", "fragments"), [
    ("seeds: [0]", "", ("missing key 'seeds'",)),
    ("seeds: [0]", "seeds: [zero]", ("seeds must be a non-empty list of integers",)),
    ("worse: b", "worse: c", ("comparisons[0] names arm 'c'",)),
    ("table: 5", "table: 5\ncolour: red", ("unknown keys ['colour']",)),
    ("latent}", "latent, model.init_args.nope: 1}", ("nope",)),
])
def test_a_bad_study_is_one_error_line(tmp_path, capsys, old, new, fragments):
    path = _study(tmp_path, GOOD.replace(old, new))
    assert main(["ablate", path, "--out", str(tmp_path / "out"), "--smoke"]) == 2
    one_line_error(capsys, *fragments)
    assert not (tmp_path / "out" / "runs").exists()  # refused before anything trained


TOKENIZERS = """
name: tokenizers
table: 7
primary_metric: {task: reconstruction, metric: psnr, higher_is_better: true, why: test}
base: {tokenizer: tiny/tokenizer}
arms: {ema: {}, faster_ema: {tokenizer: {model.init_args.ema_decay: 0.5}}}
seeds: [0, 1]
comparisons: [{better: ema, worse: faster_ema}]
"""


def test_a_tokenizer_study_scores_reconstructions(tmp_path):
    assert main(["ablate", _study(tmp_path, TOKENIZERS), "--out", str(tmp_path / "out"), "--smoke"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(r["stage"] for r in results["runs"].values()) == ["tokenizer"] * 4
    for seeds in results["arms"].values():
        for entry in seeds.values():
            assert list(entry["runs"]) == ["tokenizer"]
            scores = entry["scores"]["reconstruction"]
            assert math.isfinite(scores["psnr"]) and scores["num_clips"] == 2 and scores["fvd"] is None
    assert results["comparisons"][0]["n"] == 2
    assert "## Every metric of `reconstruction`" in (tmp_path / "out" / "report.md").read_text()
