"""The training data stream of ``magvit fit``: webdataset shards -> batches.

The batches are :class:`~magvit.batch.ClipBatch` records: by default with the clips of ``DataConfig.train``.
A stage may supply its own stream through a ``data(cfg, info)`` method returning ``epoch -> batches`` (or
None for the default): the transformer stage does so when it trains from token shards
(:func:`make_token_data`), with the same batch size, workers, shuffling and resampling settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from magvit.batch import ClipBatch
from magvit.data import ShardLoader, make_loader, read_meta
from magvit.data.shard_format import META_NAME
from magvit.train.distributed import DistInfo
from magvit.train.settings import DataConfig
from magvit.train.token_cache import make_token_loader


def _loader_options(cfg: DataConfig, info: DistInfo) -> dict[str, Any]:
    """The reader settings shared by clip and token streams."""
    resampled = info.distributed if cfg.resampled is None else cfg.resampled
    return {
        "shuffle": True, "seed": cfg.seed, "num_workers": cfg.num_workers, "resampled": resampled,
        "batches_per_epoch": (cfg.batches_per_epoch or 1000) if resampled else cfg.batches_per_epoch,
        "drop_last": True, "shuffle_buffer": cfg.shuffle_buffer,
    }


def _per_epoch(loader: ShardLoader) -> Callable[[int], Iterable[ClipBatch]]:
    def epoch_stream(epoch: int) -> Iterable[ClipBatch]:
        loader.set_epoch(epoch)
        return loader

    return epoch_stream


def make_data(cfg: DataConfig, info: DistInfo, stage: Any = None) -> Callable[[int], Iterable[ClipBatch]]:
    """``epoch -> iterable of batches``, deterministic in ``epoch`` (what the trainer's resume relies on).

    ``stage``: when given and it has a ``data(cfg, info)`` method that returns a stream, that stream is used;
    otherwise the clip folder's ``meta.json`` is checked against the stage (:func:`check_stage_against_data`).
    """
    custom = getattr(stage, "data", None)
    stream = custom(cfg, info) if callable(custom) else None
    if stream is not None:
        return stream
    loader = make_loader(cfg.train, cfg.batch_size, **_loader_options(cfg, info))
    if stage is not None:
        check_stage_against_data(stage, cfg.train)
    return _per_epoch(loader)


def check_stage_against_data(stage: Any, train: str) -> None:
    """Refuse a clip folder the stage cannot train on (clip size, class count), from its ``meta.json``.

    Brace patterns and shard lists carry no ``meta.json``; they are checked as clips are read.
    """
    check = getattr(stage, "check_data", None)
    folder = Path(train)
    if not callable(check) or not (folder / META_NAME).is_file():
        return
    meta = read_meta(folder)
    t, h, w = meta.clip_shape[:3]
    check((t, h, w), meta.num_classes, str(folder))


def make_token_data(cfg: DataConfig, info: DistInfo, folder: str, *, tasks: Sequence[str],
                    video: bool) -> Callable[[int], Iterable[ClipBatch]]:
    """``epoch -> iterable of`` :class:`~magvit.batch.ClipBatch` with tokens, from a token-shard folder."""
    return _per_epoch(make_token_loader(folder, cfg.batch_size, tasks=tasks, video=video, **_loader_options(cfg, info)))
