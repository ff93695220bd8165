"""Fixtures of the fault suite: a tiny dataset and one-step tokenizer and transformer runs.

The fault suite runs each failure a user or an attacker can cause and asserts the exact outcome:
exit code, one error line, files intact, nothing lost or executed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from magvit.cli import main
from magvit.data import write_synthetic

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FRAMES, SIZE = 16, 32


def fit_args(config: str, data: Path | str, out_dir: Path | str, *extra: str) -> list[str]:
    """``magvit fit`` of a tiny config for one step, quiet."""
    return ["fit", "--config", str(CONFIGS / config), "--data.train", str(data), "--data.batch_size", "2",
            "--trainer.max_steps", "1", "--trainer.out_dir", str(out_dir), "--trainer.progress", "false",
            "--trainer.tensorboard", "false", *extra]


def transformer_args(tokenizer: Path | str, data: Path | str, out_dir: Path | str, *extra: str) -> list[str]:
    return fit_args("tiny/transformer.yaml", data, out_dir, "--model.init_args.tokenizer_checkpoint",
                    str(tokenizer), *extra)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """16 training and 4 held-out clips of 16x32x32 in 8 classes (``/train``, ``/val``)."""
    root = tmp_path_factory.mktemp("fault-synthetic")
    write_synthetic(root, num_clips=16, num_val_clips=4, frames=FRAMES, size=SIZE)
    return root


@pytest.fixture(scope="session")
def tokenizer_run(synthetic, tmp_path_factory) -> Path:
    """A tiny tokenizer run of one step: ``out/last.pt``."""
    out = tmp_path_factory.mktemp("fault-runs") / "tokenizer"
    assert main(fit_args("tiny/tokenizer.yaml", synthetic / "train", out)) == 0
    return out


@pytest.fixture(scope="session")
def transformer_run(synthetic, tokenizer_run, tmp_path_factory) -> Path:
    """A tiny transformer run of one step over :func:`tokenizer_run`: ``out/last.pt``."""
    out = tmp_path_factory.mktemp("fault-runs") / "transformer"
    assert main(transformer_args(tokenizer_run / "last.pt", synthetic / "train", out)) == 0
    return out
