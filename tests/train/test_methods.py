"""Every conditioning-and-decoding method of paper Tables 5 and 6 end to end from the command line: a tiny
model trains a few steps from the shipped config with ``objective.method`` set, samples during training,
saves, and ``magvit generate`` / ``magvit evaluate`` decode its checkpoint with its own sampler."""

from __future__ import annotations

import json

import pytest

from magvit.cli import main
from magvit.pipeline import MagvitPipeline
from tests.train.conftest import FRAMES, SIZE

TINY = '{"num_layers": 1, "hidden_size": 32, "num_heads": 2, "mlp_dim": 64}'
#: the method of the config and the sampler (and architecture) it must give
METHODS = {"commit": ("commit", False, False), "latent": ("maskgit", False, False),
           "prefix": ("prefix", False, True), "ar": ("ar", True, False)}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_samples_saves_generates_and_evaluates(method, tiny_data, tokenizer_checkpoint, tmp_path):
    sampler, causal, prefix = METHODS[method]
    out = tmp_path / "run"
    assert main(["fit", "--config", "tiny/transformer", "--data.train", str(tiny_data / "train"),
                 "--data.batch_size", "2", "--trainer.max_steps", "2", "--trainer.sample_every", "2",
                 "--trainer.log_every", "1", "--trainer.out_dir", str(out), "--trainer.progress", "false",
                 "--model.init_args.tokenizer_checkpoint", str(tokenizer_checkpoint),
                 "--model.init_args.frames", str(FRAMES), "--model.init_args.resolution", str(SIZE),
                 "--model.init_args.tasks", "[fp, cg]", "--model.init_args.transformer_options", TINY,
                 "--model.init_args.objective.method", method]) == 0
    samples = sorted(p.name for p in (out / "samples").iterdir())
    assert samples == ["step0000002_cg.gif", "step0000002_fp.gif"]
    pipe = MagvitPipeline.from_checkpoint(out / "last.pt")
    assert pipe.sampler["name"] == sampler
    assert pipe.transformer.causal is causal and (pipe.transformer.segment is not None) is (prefix or causal)

    gif = tmp_path / "fp.gif"
    val = str(tiny_data / "val")
    assert main(["generate", "--checkpoint", str(out / "last.pt"), "--task", "fp", "--input", val, "--steps", "2",
                 "--out", str(gif)]) == 0
    assert gif.stat().st_size > 0
    assert main(["evaluate", "--checkpoint", str(out / "last.pt"), "--data", val, "--tasks", "fp", "--num_clips",
                 "2", "--no_fvd", "--steps", "2", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["decoding"]["sampler"]["name"] == sampler
