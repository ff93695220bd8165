"""Fixtures of the trainer tests: small synthetic datasets, a tokenizer-stage checkpoint and its token cache."""

from pathlib import Path

import pytest

from magvit.data import write_synthetic
from magvit.train.data import DataConfig, make_data
from magvit.train.distributed import DistInfo
from magvit.train.tokenize import tokenize_shards
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
    Trainer(stage, make_data(DataConfig(train=str(tiny_data / "train"), batch_size=2), DistInfo()), cfg).fit()
    return out / "last.pt"


#: The clips of :func:`sharded`: three shards of 8, 8 and 4 clips.
SHARDED_CLIPS, SHARD_SIZE = 20, 8


@pytest.fixture(scope="session")
def sharded(tmp_path_factory) -> Path:
    """A clip dataset of three shards (the token cache's rank-split and resume tests need several)."""
    out = tmp_path_factory.mktemp("sharded")
    write_synthetic(out, num_clips=SHARDED_CLIPS, num_val_clips=2, frames=FRAMES, size=SIZE, num_classes=8, seed=1,
                    shard_size=SHARD_SIZE)
    return out / "train"


@pytest.fixture(scope="session")
def sharded_tokens(sharded, tokenizer_checkpoint, tmp_path_factory) -> Path:
    """:func:`sharded` tokenised for every task. The encoder's kernels round by batch size, so exact agreement
    is checked at the same batch size (4, which divides the shards, so the cache's per-shard batches are the
    clip loader's batches)."""
    out = tmp_path_factory.mktemp("tokens")
    report = tokenize_shards(tokenizer_checkpoint, sharded, out, tasks="all", batch_size=4)
    assert report.complete and report.num_written == SHARDED_CLIPS
    return out
