"""`magvit ablate`: the four shipped studies as smoke runs into one folder (sharing their common runs), resume,
and one arm and seed re-run in a fresh folder reproducing its recorded metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import magvit.ablation.runner as runner
from magvit.cli import main
from magvit.configs import config_dir

STUDIES = config_dir() / "ablations"
TABLE5_ARMS = ["commit", "latent", "prefix", "commit_no_refine", "commit_no_refine_no_recons"]
MT8 = ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd"]


class Counter:
    """Wraps a function of :mod:`magvit.ablation.runner` and records each call's result."""

    def __init__(self, fn):
        self.fn, self.results = fn, []

    def __call__(self, *args, **kwargs):
        result = self.fn(*args, **kwargs)
        self.results.append(result)
        return result


def _run(monkeypatch, study: str, out: Path, *extra: str) -> dict[str, Counter]:
    calls = {name: Counter(getattr(runner, name)) for name in ("fit", "evaluate_tasks", "evaluate_reconstruction",
                                                             "tokenize_shards", "evaluate_token_likelihood")}
    for name, counter in calls.items():
        monkeypatch.setattr(runner, name, counter)
    assert main(["ablate", str(STUDIES / f"{study}.yaml"), "--out", str(out), "--smoke", *extra]) == 0
    return calls


def _results(out: Path, study: str) -> dict:
    return json.loads((out / f"{study}-smoke" / "results.json").read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict[str, dict[str, int]]]:
    """Smoke runs of the four studies into one folder, in the order of the README: how many trainings,
    tokenisations and evaluations each ran."""
    out = tmp_path_factory.mktemp("ablations")
    counts = {}
    with pytest.MonkeyPatch.context() as mp:
        for study in ("table5", "table4", "table6", "table7"):
            calls = _run(mp, study, out)
            counts[study] = {name: len(c.results) for name, c in calls.items()}
    return out, counts


def test_table5_trains_one_tokenizer_and_one_set_of_tokens_for_every_arm(smoke):
    out, counts = smoke
    results = _results(out, "table5")
    assert results["study"] == "table5" and results["table"] == 5 and results["smoke"] is True
    assert results["complete"] is True and results["seeds"] == [0, 1]  # a smoke run keeps the first two seeds
    assert results["seed_stages"] == ["transformer"]
    assert set(results["machine"]) >= {"platform", "cpu_count", "torch"}
    # every run records the machine and thread count it was trained (tokenised) with
    assert all(r["machine"]["torch_threads"] >= 1 for r in results["runs"].values())
    stages = sorted(r["stage"] for r in results["runs"].values())
    assert stages == ["tokenizer"] + ["tokens"] + ["transformer"] * 10
    assert counts["table5"] == {"fit": 11, "evaluate_tasks": 10, "evaluate_reconstruction": 0, "tokenize_shards": 1,
                                "evaluate_token_likelihood": 10}
    assert list(results["arms"]) == TABLE5_ARMS
    for arm, seeds in results["arms"].items():
        assert list(seeds) == ["0", "1"]
        for seed, entry in seeds.items():
            assert list(entry["scores"]) == [*MT8, "average"]
            assert all(math.isfinite(entry["scores"][t]["psnr_generated"]) for t in MT8)
            # the held-out token metrics beside the decoding's scores, and their mean over the tasks
            nll = [entry["scores"][t]["token_nll"] for t in MT8]
            assert all(n > 0 for n in nll) and entry["scores"]["average"]["token_nll"] == pytest.approx(sum(nll) / 8)
            assert 0 <= entry["scores"]["average"]["token_accuracy"] <= 1
            assert entry["scores"]["fp"]["num_clips"] == 2 and entry["scores"]["fp"]["fvd"] is None
            tokenizer = results["runs"][entry["runs"]["tokenizer"]]
            transformer = results["runs"][entry["runs"]["transformer"]]
            assert tokenizer["config"]["trainer"]["seed"] == 0 and tokenizer["step"] == 2  # the seed varies
            init = transformer["config"]["model"]["init_args"]  # only the transformer
            assert init["seed"] == int(seed) and transformer["config"]["data"]["seed"] == int(seed)
            assert init["tokenizer_checkpoint"] == f"OUT/runs/{entry['runs']['tokenizer']}/last.pt"
            assert init["token_shards"] == f"OUT/tokens/{entry['runs']['tokens'].removeprefix('tokens-')}"
            assert init["tasks"] == MT8
            method = {"latent": "latent", "prefix": "prefix"}.get(arm, "commit")
            assert init["objective"]["method"] == method
            weights = init["objective"]["weights"]
            assert weights["refine"] == (0.0 if arm.startswith("commit_no_refine") else None)
            assert weights["recons"] == (0.0 if arm == "commit_no_refine_no_recons" else None)
    tokens = results["runs"][results["arms"]["commit"]["0"]["runs"]["tokens"]]
    assert "unc" in tokens["cached_tasks"] and set(MT8) <= set(tokens["cached_tasks"])
    claims = [(c["better"], c["worse"], c["task"]) for c in results["comparisons"]]
    assert claims[:3] == [("commit", "latent", "average"), ("commit", "prefix", "average"), ("commit", "latent", "fp")]
    for c in results["comparisons"]:
        arms = results["arms"]
        assert c["better_values"] == [arms[c["better"]][s]["scores"][c["task"]]["psnr_generated"] for s in "01"]
        assert c["n"] == 2 and c["low"] <= c["mean"] <= c["high"]
        assert c["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    secondary = results["secondary_comparisons"]
    assert [m["metric"] for m in results["secondary_metrics"]] == ["token_nll", "token_accuracy"]
    assert len(secondary) == 2 * len(results["comparisons"])
    for c in secondary:
        arms = results["arms"]
        assert c["better_values"] == [arms[c["better"]][s]["scores"][c["task"]][c["metric"]] for s in "01"]
        assert c["higher_is_better"] == (c["metric"] == "token_accuracy") and c["n"] == 2
    report = (out / "table5-smoke" / "report.md").read_text()
    assert "## Secondary metrics" in report and "### `token_nll` (lower is better)" in report
    assert report.startswith("# Study table5 (paper Table 5)")
    assert "| commit > latent | `average` |" in report and "Smoke run" in report
    assert "| commit | 48 | 33 |" in report  # the paper's numbers beside ours
    assert (out / "table5-smoke" / "primary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_studies_in_one_folder_share_their_common_runs(smoke):
    out, counts = smoke
    t4, t5, t6, t7 = (_results(out, f"table{n}") for n in (4, 5, 6, 7))
    # table 4's multi-task arm is table 5's commit arm; table 6's commit and maskgit are table 5's commit and latent
    for seed in "01":
        assert t4["arms"]["multi_task"][seed]["runs"] == t5["arms"]["commit"][seed]["runs"]
        assert t6["arms"]["commit"][seed]["runs"] == t5["arms"]["commit"][seed]["runs"]
        assert t6["arms"]["maskgit"][seed]["runs"] == t5["arms"]["latent"][seed]["runs"]
        assert t4["arms"]["multi_task"][seed]["scores"] == t5["arms"]["commit"][seed]["scores"]
    assert counts["table4"] == {"fit": 4, "evaluate_tasks": 4, "evaluate_reconstruction": 0, "tokenize_shards": 0,
                                "evaluate_token_likelihood": 4}
    # table 6: the ar arm, and the 2D-VQ with its own tokens and latent-masking transformer; every arm is scored
    # anew (on fp alone)
    assert counts["table6"] == {"fit": 5, "evaluate_tasks": 8, "evaluate_reconstruction": 0, "tokenize_shards": 1,
                                "evaluate_token_likelihood": 8}
    # an autoregressive model factorises the clip otherwise: no first-step token metrics
    assert t6["arms"]["ar"]["0"]["scores"]["fp"]["token_nll"] is None
    assert t6["arms"]["maskgit_2d"]["0"]["scores"]["fp"]["token_nll"] > 0
    assert "## Secondary metrics" not in (out / "table6-smoke" / "report.md").read_text()  # none registered
    # table 7: seed 0's 3D-VQ and 2D-VQ are table 6's tokenizers, seed 1's are new; both inflations per seed
    assert counts["table7"] == {"fit": 6, "evaluate_tasks": 0, "evaluate_reconstruction": 8, "tokenize_shards": 0,
                                "evaluate_token_likelihood": 0}
    assert t7["arms"]["vq3d"]["0"]["runs"]["tokenizer"] == t5["arms"]["commit"]["0"]["runs"]["tokenizer"]
    assert t7["arms"]["vq2d"]["0"]["runs"]["tokenizer"] == t6["arms"]["maskgit_2d"]["0"]["runs"]["tokenizer"]
    assert t6["arms"]["maskgit_2d"]["1"]["runs"]["tokenizer"] == t6["arms"]["maskgit_2d"]["0"]["runs"]["tokenizer"]


def test_an_inflated_arm_starts_from_its_own_seeds_2d_tokenizer(smoke):
    out, _ = smoke
    results = _results(out, "table7")
    assert results["seed_stages"] == ["tokenizer", "transformer"]
    for seed in "01":
        vq2d = results["arms"]["vq2d"][seed]["runs"]["tokenizer"]
        assert results["runs"][vq2d]["config"]["trainer"]["seed"] == int(seed)
        for arm, mode in (("vq3d_central", "central"), ("vq3d_average", "average")):
            run = results["runs"][results["arms"][arm][seed]["runs"]["tokenizer"]]
            init_from = run["config"]["model"]["init_args"]["init_from"]
            assert init_from == {"checkpoint": f"OUT/runs/{vq2d}/last.pt", "inflation": mode}
        scores = results["arms"]["vq3d_central"][seed]["scores"]["reconstruction"]
        assert math.isfinite(scores["psnr"]) and scores["num_clips"] == 2
    assert "## Every metric of `reconstruction`" in (out / "table7-smoke" / "report.md").read_text()


def test_a_second_run_retrains_and_rescores_nothing(smoke, monkeypatch):
    out, _ = smoke
    before = _results(out, "table6")
    calls = _run(monkeypatch, "table6", out)
    assert all(c.results == [] for c in calls.values())
    after = _results(out, "table6")
    assert after["arms"] == before["arms"] and after["runs"] == before["runs"] and after["this_invocation"] == []


def test_an_unfinished_training_resumes_from_its_checkpoint(smoke, monkeypatch):
    out, _ = smoke
    name = _results(out, "table5")["arms"]["prefix"]["1"]["runs"]["transformer"]
    (out / "runs" / name / "done.json").unlink()  # as if killed after its last checkpoint
    calls = _run(monkeypatch, "table5", out)
    assert len(calls["fit"].results) == 1 and not calls["fit"].results[0].trained  # at max_steps: nothing to redo
    assert calls["evaluate_tasks"].results == []  # its evaluations had finished
    assert calls["evaluate_token_likelihood"].results == []
    record = json.loads((out / "runs" / name / "done.json").read_text())
    assert record["resumed"] is True and record["step"] == 2


def test_one_arm_and_seed_rerun_in_a_fresh_folder_reproduce_their_metrics(smoke, tmp_path, monkeypatch):
    out, _ = smoke
    recorded = _results(out, "table5")["arms"]["latent"]["1"]
    calls = _run(monkeypatch, "table5", tmp_path, "--arms", '["latent"]', "--seeds", "[1]")
    assert len(calls["fit"].results) == 2 and len(calls["evaluate_tasks"].results) == 1  # tokenizer, transformer
    assert len(calls["evaluate_token_likelihood"].results) == 1
    again = _results(tmp_path, "table5")
    assert again["complete"] is False and list(again["arms"]["latent"]) == ["1"]
    assert again["arms"]["latent"]["1"]["runs"] == recorded["runs"]  # the same configs, by hash
    assert again["arms"]["latent"]["1"]["scores"] == recorded["scores"]  # bit for bit
    assert "Incomplete" in (tmp_path / "table5-smoke" / "report.md").read_text()


def test_a_selected_seed_keeps_the_other_finished_seeds_in_the_results(smoke, monkeypatch):
    out, _ = smoke
    calls = _run(monkeypatch, "table4", out, "--seeds", "[1]")
    assert all(c.results == [] for c in calls.values())
    assert list(_results(out, "table4")["arms"]["fp_only"]) == ["0", "1"]


def test_an_override_the_parser_does_not_know_is_refused_before_anything_trains(tmp_path, capsys):
    from tests.helpers.cli import one_line_error

    study = (STUDIES / "table4.yaml").read_text().replace(
        "      model.init_args.tasks: [fp]\n", "      model.init_args.tasks: [fp]\n      model.init_args.nope: 1\n")
    path = tmp_path / "study.yaml"
    path.write_text(study)
    assert main(["ablate", str(path), "--out", str(tmp_path / "out"), "--smoke"]) == 2
    one_line_error(capsys, "nope")
    assert not (tmp_path / "out" / "runs").exists()


def test_settings_that_leave_the_results_unchanged_are_not_part_of_a_runs_key():
    def key(config):
        return runner._hash(runner._hashed_part(config))

    run = {"model": {"class_path": "S", "init_args": {"preset": "tiny"}}, "trainer": {"seed": 0}, "data": {}}
    watched = {"model": {"class_path": "S", "init_args": {"preset": "tiny", "activation_checkpointing": True}},
               "trainer": {"seed": 0, "log_every": 5, "ckpt_every": 7, "out_dir": "x", "progress": True},
               "data": {}, "resume": True, "device": "cpu"}
    assert key(watched) == key(run)
    assert key({**run, "trainer": {"seed": 1}}) != key(run)
    assert key({**run, "model": {"class_path": "S", "init_args": {"preset": "B"}}}) != key(run)


def test_trainer_precision_is_part_of_a_runs_key_unless_at_its_default():
    def key(config):
        return runner._hash(runner._hashed_part(config))

    run = {"model": {"class_path": "S", "init_args": {"preset": "tiny"}}, "trainer": {"seed": 0}, "data": {}}
    assert key({**run, "trainer": {"seed": 0, "precision": "32"}}) == key(run)
    assert key({**run, "trainer": {"seed": 0, "precision": "bf16-mixed"}}) != key(run)
