"""`magvit demo --train` end to end with two training steps per stage (the real run takes ~65 min)."""

import json

from magvit.demo import run_demo


def test_demo_trains_evaluates_and_writes_the_page(tmp_path):
    index = run_demo(str(tmp_path), train=True, eval_clips=2, fvd=False,
                     train_overrides=["--trainer.max_steps", "2", "--trainer.progress", "false",
                                      "--trainer.tensorboard", "false", "--data.batch_size", "2"],
                     train_clips=24)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"}
    for name, scores in metrics["tasks"].items():
        assert {"psnr_generated", "psnr_baseline", "psnr_condition", "ssim", "fvd"} <= set(scores)
        assert (scores["psnr_condition"] is None) == (name == "cg")
        assert (tmp_path / "grids" / f"{name}.gif").stat().st_size > 0
        assert (tmp_path / "grids" / f"{name}.mp4").stat().st_size > 0
    assert metrics["tokenizer_psnr"] > 0 and (tmp_path / "train" / "pipeline.pt").exists()
    # the transformer trained from token shards made once from all training clips
    tokens = json.loads((tmp_path / "train" / "tokens" / "meta.json").read_text())
    assert tokens["complete"] and sum(s["num_clips"] for s in tokens["shards"]) == 24
    page = (tmp_path / "index.html").read_text()
    assert str(tmp_path / "index.html") == index and "grids/opd.gif" in page and "<table>" in page
