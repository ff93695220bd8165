"""`magvit evaluate` on a tokenizer-stage checkpoint: reconstruction PSNR / SSIM (and FVD) to metrics.json."""

from __future__ import annotations

import json

from magvit.cli import main
from magvit.metrics.reconstruction import evaluate_reconstruction
from magvit.pipeline import load_tokenizer_weights
from magvit.data import make_eval_loader
from tests.helpers.cli import one_line_error
from tests.train.conftest import tiny_data, tokenizer_checkpoint  # noqa: F401 - fixtures


def test_evaluate_a_tokenizer_checkpoint_writes_reconstruction_metrics(tokenizer_checkpoint, tiny_data, tmp_path,  # noqa: F811
                                                                       capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(tokenizer_checkpoint), "--data", str(tiny_data / "val"), "--no_fvd",
            "--num_clips", "6", "--batch_size", "4", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tokenizer"] == {"name": "vq3d", "checkpoint": str(tokenizer_checkpoint), "weights": "ema"}
    assert saved["fvd_protocol"] is None and saved["reconstruction"]["fvd"] is None
    tokenizer, _, _ = load_tokenizer_weights(tokenizer_checkpoint)
    expected = evaluate_reconstruction(tokenizer.eval(), make_eval_loader(tiny_data / "val", 4), fvd_extractor=None,
                                       max_clips=6).scores
    assert saved["reconstruction"]["num_clips"] == 6
    assert saved["reconstruction"]["psnr"] == expected.psnr and saved["reconstruction"]["ssim"] == expected.ssim
    assert "reconstruction of vq3d (EMA weights" in printed and f"{expected.psnr:.2f}" in printed
    assert f"wrote {out}/metrics.json" in printed

    assert main([*argv[:-1], str(tmp_path / "raw"), "--no_ema"]) == 0
    raw = json.loads((tmp_path / "raw" / "metrics.json").read_text())
    assert raw["tokenizer"]["weights"] == "models"
    trained, _, section = load_tokenizer_weights(tokenizer_checkpoint, use_ema=False)
    assert section == "models"
    expected = evaluate_reconstruction(trained.eval(), make_eval_loader(tiny_data / "val", 4), fvd_extractor=None,
                                       max_clips=6).scores
    assert raw["reconstruction"]["psnr"] == expected.psnr


def test_decoding_flags_are_refused_for_a_tokenizer_checkpoint(tokenizer_checkpoint, tiny_data, capsys):  # noqa: F811
    argv = ["evaluate", "--checkpoint", str(tokenizer_checkpoint), "--data", str(tiny_data / "val"), "--no_fvd",
            "--tasks", "fp", "--steps", "4", "--precision", "bf16-mixed"]
    assert main(argv) == 2
    one_line_error(capsys, "is a tokenizer checkpoint: evaluate scores its reconstructions, which take no --tasks, "
                           "--steps, --precision (those decode")
