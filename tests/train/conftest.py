"""Fixtures of the trainer tests: a small synthetic dataset and a tokenizer-stage checkpoint."""

from pathlib import Path

import pytest

from magvit.data import write_synthetic
from magvit.train.data import DataConfig, make_data
from magvit.train.tokenizer_stage import TokenizerStage
from magvit.train.trainer import Trainer, TrainerConfig

FRAMES, SIZE = 8, 32


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """32 training clips of 8x32x32 in 8 classes (``/train``, ``/val``)."""
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, num_clips=32, num_val_clips=8, frames=FRAMES, size=SIZE, num_classes=8, seed=0)
    return out


@pytest.fixture(scope="session")
def tokenizer_checkpoint(tiny_data, tmp_path_factory) -> Path:
    """A tiny 3D-VQ trained for one step by the real tokenizer stage (its EMA is what stage two loads)."""
    out = tmp_path_factory.mktemp("tokenizer")
    stage = TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES)
    cfg = TrainerConfig(max_steps=1, log_every=1, out_dir=str(out), progress=False, tensorboard=False)
    Trainer(stage, make_data(DataConfig(train=str(tiny_data / "train"), batch_size=2), _single()), cfg).fit()
    return out / "last.pt"


def _single():
    from magvit.train.distributed import DistInfo

    return DistInfo()
