"""Kill-and-resume: a run SIGKILLed at any point and resumed reaches the same losses as an uninterrupted run."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.conftest import FRAMES, SIZE

STEPS = 12


def fit_args(data: Path, tokenizer: Path, out: Path) -> list[str]:
    model = {
        "class_path": "magvit.train.transformer_stage.TransformerStage",
        "init_args": {
            "tokenizer_checkpoint": str(tokenizer),
            "preset": "tiny",
            "num_classes": 8,
            "tasks": ["fp", "opc", "cg"],
            "frames": FRAMES,
            "resolution": SIZE,
            "transformer_options": {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "mlp_dim": 128},
            "optim": {"lr": 1e-3, "warmup_steps": 3},
        },
    }
    return [
        sys.executable, "-m", "magvit.cli", "fit", "--model", json.dumps(model),
        "--data.train", str(data / "train"), "--data.batch_size", "4",
        "--trainer.max_steps", str(STEPS), "--trainer.ckpt_every", "1", "--trainer.log_every", "1",
        "--trainer.out_dir", str(out), "--trainer.progress", "false", "--trainer.tensorboard", "false",
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def losses(out: Path) -> dict[int, float]:
    """The logged transformer loss of every step (the resume drops the rows of the steps it replays)."""
    rows = {}
    with (out / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row["name"] == "transformer/loss":
                rows[int(row["step"])] = float(row["value"])
    return rows


def test_sigkill_then_resume_matches_uninterrupted(tiny_data, tokenizer_checkpoint, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(fit_args(tiny_data, tokenizer_checkpoint, whole), env=ENV, check=True, capture_output=True)

    proc = subprocess.Popen(fit_args(tiny_data, tokenizer_checkpoint, killed), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill somewhere after step 5 (mid-step or mid-checkpoint)
        if (killed / "metrics.csv").exists() and max(losses(killed), default=0) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(killed)) < STEPS, "the run finished before it could be killed"
    resumed = subprocess.run(fit_args(tiny_data, tokenizer_checkpoint, killed) + ["--resume", "true"],
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr

    assert not list(killed.glob(".last.pt.*.tmp")), "a temp file of the killed writer was left behind"
    a, b = losses(whole), losses(killed)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    with (killed / "metrics.csv").open() as f:  # the replayed steps' rows were dropped on resume: no step twice
        logged = [(row["step"], row["name"]) for row in csv.DictReader(f)]
    assert len(logged) == len(set(logged))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
