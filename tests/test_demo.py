"""`magvit demo --train` end to end with two training steps per stage (the real run takes ~2 h 15 min)."""

import json

import attrs

from magvit import checkpoint
from magvit.demo import run_demo
from magvit.metrics.evaluation import TaskScores


def test_demo_trains_evaluates_and_writes_the_page(tmp_path):
    index = run_demo(str(tmp_path), train=True, eval_clips=2, fvd=False,
                     train_overrides={"trainer.max_steps": 2, "trainer.progress": False, "trainer.tensorboard": False,
                                      "data.batch_size": 2},
                     train_clips=24)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["timings"]) == ["data", "pipeline", "evaluation", "grids"]  # no fvd_setup without FVD
    # each figure is rounded to 0.1 s: the phases' sum may exceed the rounded total by half a step per term
    assert 0 < sum(metrics["timings"].values()) <= metrics["seconds"] + 0.05 * (len(metrics["timings"]) + 1)
    assert set(metrics["tasks"]) == {"fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"}
    for name, scores in metrics["tasks"].items():
        assert set(attrs.fields_dict(TaskScores)) <= set(scores) and scores["num_clips"] == 2  # every table column
        assert (scores["psnr_condition"] is None) == (name == "cg")
        assert (tmp_path / "grids" / f"{name}.gif").stat().st_size > 0
        assert (tmp_path / "grids" / f"{name}.mp4").stat().st_size > 0
    assert metrics["tokenizer_psnr"] > 0 and (tmp_path / "train" / "pipeline.pt").exists()
    # the transformer trained from token shards made once from all training clips
    tokens = json.loads((tmp_path / "train" / "tokens" / "meta.json").read_text())
    assert tokens["complete"] and sum(s["num_clips"] for s in tokens["shards"]) == 24
    assert tokens["batch_size"] == 2  # encoded in batches of the training batch size (bit-identical losses)
    # trained through magvit.train.fit with the settings `magvit fit` would record for the same overrides
    run = checkpoint.load(tmp_path / "train" / "transformer" / "last.pt")["run_config"]
    assert run["data"] == {**run["data"], "train": str(tmp_path / "data" / "train"), "batch_size": 2}
    assert run["trainer"]["max_steps"] == 2 and run["trainer"]["out_dir"] == str(tmp_path / "train" / "transformer")
    assert run["model"]["init_args"]["token_shards"] == str(tmp_path / "train" / "tokens") and run["resume"] is False
    page = (tmp_path / "index.html").read_text()
    assert str(tmp_path / "index.html") == index and "grids/opd.gif" in page and "<table>" in page


def test_the_shipped_pipeline_is_what_the_tiny_configs_train():
    """`magvit demo` loads magvit/assets/demo/pipeline.pt; `magvit demo --train` must rebuild that model."""
    import yaml

    from magvit import registry
    from magvit.configs import config_dir
    from magvit.demo import SHIPPED, TEN_TASKS

    cfg = checkpoint.load(SHIPPED, "cpu")["model_config"]
    tok_args = yaml.safe_load((config_dir() / "tiny/tokenizer.yaml").read_text())["model"]["init_args"]
    built = registry.get_tokenizer(tok_args["tokenizer"], preset=tok_args["preset"], resolution=tok_args["resolution"],
                                   **tok_args.get("tokenizer_options", {}))
    # Options added after the shipped model was saved are absent from its config: they must be at their
    # default, which computes what the shipped model computed (activation_checkpointing only changes what the
    # backward pass stores; sync_across_ranks only acts in training under a process group of several ranks).
    added = {"activation_checkpointing": False, "sync_across_ranks": True}
    rebuilt = {k: v for k, v in built.config.items() if not (k in added and k not in cfg["tokenizer"]["config"])}
    assert all(built.config[k] == v for k, v in added.items())
    assert cfg["tokenizer"] == {"name": tok_args["tokenizer"], "config": rebuilt}
    tr_args = yaml.safe_load((config_dir() / "tiny/transformer.yaml").read_text())["model"]["init_args"]
    assert {k: cfg["transformer"][k] for k in tr_args["transformer_options"]} == tr_args["transformer_options"]
    assert [t["name"] for t in cfg["tasks"]] == tr_args["tasks"] == TEN_TASKS
