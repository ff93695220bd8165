"""The training data stream of ``magvit fit``: webdataset shards -> :class:`~magvit.data.VideoBatch`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from magvit.data import make_loader
from magvit.train.distributed import DistInfo


@attrs.frozen
class DataConfig:
    """Where the training clips come from.

    Attributes:
        train: a shard folder (with ``meta.json``, as written by ``magvit data shards/synthetic``), a shard
            brace pattern, or a list of shard paths.
        batch_size: clips per micro-batch per process.
        num_workers: reader processes per training process (0 reads in the training process).
        shuffle_buffer: samples held for shuffling.
        resampled: draw shards with replacement (an endless stream cut into ``batches_per_epoch`` blocks);
            ``None`` means on under torchrun, where every rank must see the same number of batches.
        batches_per_epoch: batches per epoch in resampled mode (default 1000).
        seed: seed of the data order.
    """

    train: str = "data/synthetic/train"
    batch_size: int = 8
    num_workers: int = 0
    shuffle_buffer: int = 1000
    resampled: bool | None = None
    batches_per_epoch: int | None = None
    seed: int = 0


def make_data(cfg: DataConfig, info: DistInfo) -> Callable[[int], Iterable[Any]]:
    """``epoch -> iterable of batches``, deterministic in ``epoch`` (what the trainer's resume relies on)."""
    resampled = info.distributed if cfg.resampled is None else cfg.resampled
    loader = make_loader(
        cfg.train, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
        resampled=resampled, batches_per_epoch=(cfg.batches_per_epoch or 1000) if resampled else cfg.batches_per_epoch,
        drop_last=True, shuffle_buffer=cfg.shuffle_buffer,
    )

    def epoch_stream(epoch: int) -> Iterable[Any]:
        loader.set_epoch(epoch)
        return loader

    return epoch_stream
