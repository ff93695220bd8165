"""Streaming shards into training and evaluation batches (:class:`~magvit.batch.ClipBatch`) with webdataset.

The pipeline (one per epoch, built from webdataset's own stages)::

    shard list (SimpleShardList, seeded shard shuffle | ResampledShards)
      -> wds.split_by_node -> wds.split_by_worker          (finite mode only)
      -> shard_samples(handler=recorder)                   (local files only; webdataset's tar parsing)
      -> wds.shuffle(buffer, rng seeded by (seed, epoch, rank, worker))
      -> wds.map(decode, handler=recorder)
      -> wds.batched(batch_size, collate -> rows)          (the consumer makes each a ClipBatch)

What a sample holds is the loader's :class:`SampleCodec`: clips here (:func:`make_loader`), tokens for the
token cache (:func:`magvit.train.token_cache.make_token_loader`); every other stage is shared, so both
shuffle, split and resume alike.

A dataset of stored videos (``store: video`` in its ``meta.json``; :mod:`magvit.data.video_store`) is
decoded with PyAV in the stage ``decode``, so inside the DataLoader workers: each sample gives a clip of the
dataset's ``clip_shape`` whose first frame is drawn from a generator seeded by ``(seed, epoch, sample key)``
(``clip_start="random"``, training) -- the same clips for the same epoch whatever the ranks and workers,
other clips in other epochs (a resampled stream that draws a sample twice in one epoch gets the same clip
twice) -- or the first frames of the video (``clip_start="first"``, evaluation: no seek, and the clip a
``frames`` dataset would hold at start 0).

Modes:

* **finite** (default, ``resampled=False``): one pass over the shards per ``iter(loader)``. Shards are
  split over ranks (``wds.split_by_node``: ``RANK``/``WORLD_SIZE`` from torchrun, else the initialised
  ``torch.distributed`` group) and over DataLoader workers (``wds.split_by_worker``), so every sample
  is read exactly once per epoch across all processes. Have at least ``world_size * num_workers``
  shards, or some processes get none.
* **evaluation** (:func:`make_eval_loader`): finite, no shuffling, partial last batch kept: every sample
  of a held-out set exactly once, in a fixed order (sorted shards, file order within a shard).
* **resampled** (``resampled=True``): an infinite stream; each rank/worker draws shards with
  replacement (``wds.ResampledShards``) from an RNG seeded by ``(seed, epoch, rank, worker)``. Use it for
  DDP training (no rank ever runs dry) with ``batches_per_epoch`` to give every rank the same number of
  steps.

Resume: the order of everything is a pure function of ``(seed, epoch, rank, worker, num_workers)``.
``iter(loader)`` uses :attr:`ShardLoader.epoch` and then advances it; a resumed run passes
``start_epoch`` = the epoch it stopped in (finite mode: that epoch is replayed from its start, in the
same order) or, for a resampled stream, any counter it checkpointed (e.g. the number of completed
``batches_per_epoch`` blocks), which gives a fresh but reproducible continuation.

Corrupt data never stops an epoch: unreadable shards, truncated tars and undecodable samples are handed to
a :class:`SkipRecorder` (a webdataset handler), which records *what* (shard, key) and *why*, once per
lost sample (a tar cut inside a sample is that sample, named); the skips travel with the stream (also out
of worker processes) and are collected in :attr:`ShardLoader.report`. An epoch that yields no sample at
all is an error.

Only data is read: shard paths must be local (:func:`magvit.data.paths.local_path`; webdataset's ``pipe:``
and network URLs are refused) and a sample's members are parsed only as the formats magvit writes -- the
clip's ``.npy`` header is checked to be uint8 (never an object array, so nothing is unpickled) and the
label is ASCII digits. Other members (``.pyd``, ``.pickle``, ...) are never decoded.

Copies: a clip's ``.npy`` bytes are wrapped without copying (``np.frombuffer``); collation copies them
once into a uint8 batch, which is what leaves a worker process (4x less inter-process traffic than
float); the consumer converts it to float ``[B, C, T, H, W]`` in one pass.
"""

from __future__ import annotations

import io
import os
import random
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
import av
import numpy as np
import torch
import webdataset as wds
from torch import Tensor

from magvit.batch import ClipBatch
from magvit.data.paths import local_path
from magvit.data.shard_format import CLIP_EXT, LABEL_EXT, VIDEO_EXT, VideoStore, list_shard_files, read_meta
from magvit.data.video_io import frames_to_video
from magvit.data.video_store import CLIP_STARTS, clip_start, read_clip
from magvit.errors import InputError, MagvitError

__all__ = [
    "ReadReport",
    "Rows",
    "SampleCodec",
    "ShardLoader",
    "SkipRecorder",
    "SkippedSample",
    "check_loader_options",
    "decode_clip",
    "make_eval_loader",
    "make_loader",
    "resolve_shards",
    "shard_samples",
]


class Rows(Protocol):
    """A collated batch still in its storage dtypes (uint8 frames, int16 tokens): what leaves a worker
    process, a quarter of the float batch or less. The consumer makes it a :class:`~magvit.batch.ClipBatch`."""

    label: Tensor

    def to_batch(self) -> ClipBatch: ...


@runtime_checkable
class EpochDecoder(Protocol):
    """A decode function whose items depend on the epoch (a clip cut from a stored video at a start drawn per
    epoch): ``at_epoch(epoch)`` gives that epoch's decode function."""

    def __call__(self, sample: dict[str, Any]) -> Any: ...

    def at_epoch(self, epoch: int) -> Callable[[dict[str, Any]], Any]: ...


@attrs.frozen
class SampleCodec:
    """What a loader reads from each shard sample.

    Attributes:
        decode: raw sample (``{"__key__", "__url__", "<ext>": bytes}``) -> item; raises
            :class:`CorruptSample` for a sample it cannot read (the sample is skipped and reported).
        collate: a list of items -> :class:`Rows`.

    Both are module-level callables or instances of module-level classes, so that the pipeline pickles into
    DataLoader worker processes.
    """

    decode: Callable[[dict[str, Any]], Any]
    collate: Callable[[list[Any]], Rows]

    def decoder(self, epoch: int) -> Callable[[dict[str, Any]], Any]:
        """The decode function of ``epoch``: ``decode.at_epoch(epoch)`` for an :class:`EpochDecoder`, else
        ``decode``."""
        return self.decode.at_epoch(epoch) if isinstance(self.decode, EpochDecoder) else self.decode


@attrs.frozen
class SkippedSample:
    """A sample or shard that was skipped while reading: which shard, which key (if known), why."""

    shard: str
    key: str | None
    reason: str


@attrs.frozen
class ReadReport:
    """What a loader has delivered and skipped so far (summed over epochs)."""

    samples: int
    batches: int
    skipped: tuple[SkippedSample, ...]

    def __str__(self) -> str:
        lines = [f"read {self.samples} clips in {self.batches} batches, skipped {len(self.skipped)}"]
        lines += [f"  {s.shard}{'#' + s.key if s.key else ''}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


class CorruptSample(MagvitError):
    """A sample that cannot be decoded; carries its shard and key for the report."""

    def __init__(self, shard: str, key: str | None, reason: str) -> None:
        super().__init__(f"{shard}#{key}: {reason}")
        self.shard, self.key, self.reason = shard, key, reason


@attrs.frozen
class _SkipNotice:
    """Skips recorded upstream, forwarded through the stream (and out of DataLoader workers)."""

    skipped: tuple[SkippedSample, ...]


class SkipRecorder:
    """A webdataset exception handler that records the failure and continues with the next item."""

    def __init__(self) -> None:
        self._pending: list[SkippedSample] = []

    def __call__(self, exn: BaseException) -> bool:
        if isinstance(exn, CorruptSample):
            record = SkippedSample(exn.shard, exn.key, exn.reason)
        else:
            # webdataset appends the shard url to the args, or (inside a tar) the open file to the message.
            strings = [a for a in exn.args[1:] if isinstance(a, str)]
            first = str(exn.args[0]) if exn.args else ""
            named = re.search(r"name='([^']+)'", first)
            shard = strings[-1] if strings else (named.group(1) if named else "unknown shard")
            first = first.split(" @ <")[0]
            record = SkippedSample(shard, None, f"{type(exn).__name__}: {first}")
        self._pending.append(record)
        warnings.warn(f"data: skipped {record.shard} {record.key or ''}: {record.reason}", stacklevel=2)
        return True

    def drain(self) -> tuple[SkippedSample, ...]:
        pending, self._pending = tuple(self._pending), []
        return pending


def _read_error(exn: BaseException) -> str:
    # tar_file_iterator appends " @ <the open file>" to the message: the shard is named separately.
    return f"{type(exn).__name__}: {str(exn).split(' @ <')[0]}"


def _tagged(files: Iterator[dict[str, Any]], url: str, last_key: list[str | None]) -> Iterator[dict[str, Any]]:
    for member in files:
        member["__url__"] = url
        last_key[0] = wds.tariterators.base_plus_ext(member["fname"])[0]
        yield member


def shard_samples(src: Iterator[dict[str, Any]], handler: Callable[[BaseException], bool]) -> Iterator[dict[str, Any]]:
    """The samples of each shard ``{"url": path}`` of ``src``: webdataset's ``tarfile_to_samples``, except that

    * a shard is opened as a local file (:func:`~magvit.data.paths.local_path`), never through webdataset's
      ``gopen`` (whose ``pipe:`` urls run shell commands);
    * a shard that cannot be read to its end is one :class:`CorruptSample` for ``handler``: a read error
      ends the shard, and the sample being read when it happened (a truncated tar's last one, whose members
      are only partly there) is dropped and named once, instead of a read error counted at each level of
      webdataset's tar iterators plus the partial sample as a further skip.
    """
    for item in src:
        url = str(item["url"])
        path = local_path(url)  # refused, not skipped: a URL in a shard list is never opened
        last_key: list[str | None] = [None]
        try:
            with open(path, "rb") as stream:
                # Default handlers re-raise: the first error of a shard lands in the except below.
                files = _tagged(wds.tariterators.tar_file_iterator(stream), url, last_key)
                yield from wds.tariterators.group_by_keys(files)
        except Exception as exn:  # noqa: BLE001 - any unreadable shard is skipped and reported
            key = last_key[0]
            reason = _read_error(exn) if key is None else f"the shard breaks off in this sample ({_read_error(exn)})"
            if not handler(CorruptSample(url, key, reason)):
                break


def decode_clip(sample: dict[str, Any], expected_shape: tuple[int, ...] | None, num_classes: int | None) -> dict[str, Any]:
    """Decode one raw sample to ``{"clip": uint8 array [T, H, W, 3], "label": int, "key": str}``.

    The clip array wraps the sample's bytes without copying. Raises :class:`CorruptSample` on any problem.
    """
    key, shard = sample.get("__key__"), str(sample.get("__url__", "?"))
    try:
        raw = sample[CLIP_EXT]
        header = io.BytesIO(raw)
        version = np.lib.format.read_magic(header)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(header)
        if dtype != np.uint8 or fortran or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"clip must be uint8 C-order [T, H, W, 3], got {dtype} {shape}")
        if expected_shape is not None and tuple(shape) != tuple(expected_shape):
            raise ValueError(f"clip shape {tuple(shape)} differs from the dataset's {tuple(expected_shape)}")
        clip = np.frombuffer(raw, dtype=np.uint8, count=int(np.prod(shape)), offset=header.tell()).reshape(shape)
        label = int(sample[LABEL_EXT])
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise ValueError(f"label {label} outside [0, {num_classes})")
    except KeyError as exc:
        if exc.args[0] == CLIP_EXT and VIDEO_EXT in sample:
            raise CorruptSample(shard, key, f"a stored video (.{VIDEO_EXT}), not a clip: read it through its "
                                "dataset folder, whose meta.json gives the clip to cut") from exc
        raise CorruptSample(shard, key, f"missing member .{exc.args[0]}") from exc
    except (ValueError, TypeError, EOFError) as exc:
        raise CorruptSample(shard, key, f"{type(exc).__name__}: {exc}") from exc
    return {"clip": clip, "label": label, "key": key}


@attrs.frozen
class _FrameBatch:
    """A collated batch still in uint8 ``[B, T, H, W, 3]``: 4x smaller than float to pass out of a worker."""

    frames: Tensor
    label: Tensor
    keys: tuple[str, ...]

    def to_batch(self) -> ClipBatch:
        return ClipBatch(label=self.label, keys=self.keys, video=frames_to_video(self.frames))


def collate_clips(samples: list[dict[str, Any]]) -> _FrameBatch:
    """Stack decoded samples (one copy into the uint8 batch); the float conversion happens in the consumer."""
    frames = torch.from_numpy(np.stack([s["clip"] for s in samples]))
    labels = torch.tensor([s["label"] for s in samples], dtype=torch.long)
    return _FrameBatch(frames, labels, tuple(s["key"] for s in samples))


class _ClipDecoder:
    """:func:`decode_clip` with the expected clip shape: from meta.json, else fixed by the first good sample
    (so that one odd-shaped sample is skipped instead of breaking the batch)."""

    def __init__(self, clip_shape: tuple[int, ...] | None, num_classes: int | None) -> None:
        self.clip_shape, self.num_classes = clip_shape, num_classes

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        decoded = decode_clip(sample, self.clip_shape, self.num_classes)
        if self.clip_shape is None:
            self.clip_shape = decoded["clip"].shape
        return decoded


@attrs.frozen
class _VideoClipDecoder:
    """A clip of ``clip_shape`` cut from a sample's stored video (``.mp4``): at a start drawn from
    ``(seed, epoch, key)`` (``clip_start="random"``) or at its first frame (``"first"``)."""

    clip_shape: tuple[int, ...]
    store: VideoStore
    num_classes: int | None
    clip_start: str
    seed: int
    epoch: int = 0

    def at_epoch(self, epoch: int) -> _VideoClipDecoder:
        return attrs.evolve(self, epoch=epoch)

    def _start(self, key: str, num_starts: int) -> int:
        return 0 if self.clip_start == "first" else clip_start(self.seed, self.epoch, key, num_starts)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key, shard = str(sample.get("__key__")), str(sample.get("__url__", "?"))
        try:
            clip = read_clip(sample[VIDEO_EXT], frames=self.clip_shape[0], stride=self.store.stride,
                             start_of=lambda num_starts: self._start(key, num_starts))
            if clip.shape != tuple(self.clip_shape):
                raise ValueError(f"clip shape {clip.shape} differs from the dataset's {tuple(self.clip_shape)}")
            label = int(sample[LABEL_EXT])
            if label < 0 or (self.num_classes is not None and label >= self.num_classes):
                raise ValueError(f"label {label} outside [0, {self.num_classes})")
        except KeyError as exc:
            raise CorruptSample(shard, key, f"missing member .{exc.args[0]}") from exc
        except (ValueError, TypeError, EOFError, av.FFmpegError) as exc:
            raise CorruptSample(shard, key, f"{type(exc).__name__}: {exc}") from exc
        return {"clip": clip, "label": label, "key": key}


# -- pipeline stages: module-level so that a pipeline pickles into spawned DataLoader workers ---------


def _worker_seed(seed: int, epoch: int) -> int:
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    return wds.utils.make_seed(seed, epoch, rank, worker)


def _seeded_shuffle(src: Iterator[Any], bufsize: int, initial: int, seed: int, epoch: int) -> Iterator[Any]:
    # The rank and worker are only known inside the process that iterates, so the RNG is made here.
    rng = random.Random(_worker_seed(seed, epoch))
    return wds.shuffle(bufsize, initial, rng=rng)(src)


def _with_notices(src: Iterator[Rows], recorder: SkipRecorder) -> Iterator[Rows | _SkipNotice]:
    for batch in src:
        pending = recorder.drain()
        if pending:
            yield _SkipNotice(pending)
        yield batch
    pending = recorder.drain()
    if pending:
        yield _SkipNotice(pending)


# -- sources ----------------------------------------------------------------------------------------


@attrs.frozen
class _Source:
    urls: tuple[str, ...]
    clip_shape: tuple[int, ...] | None
    num_classes: int | None
    num_clips: int | None
    video: VideoStore | None = None


def resolve_shards(source: str | os.PathLike[str] | Sequence[str]) -> _Source:
    """Shard paths (and, for a dataset folder, its meta.json facts) from a folder, a brace pattern or a list.

    Every path must be local (:func:`~magvit.data.paths.local_path`), also after brace expansion.

    Raises:
        MagvitError: a URL (``pipe:``, ``http:``, ...), a folder without meta.json or shards, or an empty list.
    """
    if isinstance(source, (str, os.PathLike)):
        local_path(source)
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        meta = read_meta(source)
        files = list_shard_files(source)
        listed = {s.name for s in meta.shards}
        missing = sorted(listed - {f.name for f in files})
        if missing:
            raise MagvitError(f"{source}: meta.json lists shards that are missing: {', '.join(missing)}")
        urls = tuple(str(f) for f in files if f.name in listed)
        return _Source(urls, tuple(meta.clip_shape), meta.num_classes, meta.num_clips, meta.video)
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if not any(ch in text for ch in "{:") and not Path(text).exists():
            raise MagvitError(f"dataset {text} does not exist; pass a dataset folder, a shard file or a brace pattern")
        urls = tuple(wds.shardlists.expand_urls(text))
    else:
        urls = tuple(str(u) for u in source)
    for url in urls:
        local_path(url)
    if not urls:
        raise MagvitError("no shards given; pass a dataset folder, a brace pattern or a list of .tar files")
    return _Source(urls, None, None, None)


# -- the loader -------------------------------------------------------------------------------------


@attrs.define
class ShardLoader:
    """An iterable of :class:`~magvit.batch.ClipBatch`; each ``iter()`` is one epoch (see the module docstring).

    ``codec`` says what a sample holds (clips: :func:`make_loader`; tokens:
    :func:`magvit.train.token_cache.make_token_loader`); shard order, splitting, shuffling and skipping are
    the same for every codec.
    """

    source: _Source
    batch_size: int
    shuffle: bool
    seed: int
    num_workers: int
    resampled: bool
    batches_per_epoch: int | None
    drop_last: bool
    shuffle_buffer: int
    codec: SampleCodec
    epoch: int = 0
    _samples: int = 0
    _batches: int = 0
    _skipped: list[SkippedSample] = attrs.field(factory=list)

    @property
    def report(self) -> ReadReport:
        """Samples and batches delivered and every skip recorded so far."""
        return ReadReport(self._samples, self._batches, tuple(self._skipped))

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter()`` reads (like ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def pipeline(self, epoch: int) -> wds.DataPipeline:
        """The webdataset pipeline of ``epoch`` (yields batches and skip notices)."""
        recorder = SkipRecorder()
        urls = list(self.source.urls)
        if self.resampled:
            stages: list[Any] = [wds.ResampledShards(urls, seed=wds.utils.make_seed(self.seed, epoch), deterministic=True)]
        else:
            # Every rank shuffles the shard list identically (seed, epoch), then takes its own slice.
            shard_seed = wds.utils.make_seed(self.seed, epoch) if self.shuffle else None
            stages = [wds.SimpleShardList(urls, seed=shard_seed), wds.split_by_node, wds.split_by_worker]
        stages.append(wds.pipelinefilter(shard_samples)(recorder))
        if self.shuffle:
            initial = min(self.shuffle_buffer, max(1, self.shuffle_buffer // 10))
            stages.append(wds.pipelinefilter(_seeded_shuffle)(self.shuffle_buffer, initial, self.seed, epoch))
        stages += [
            wds.map(self.codec.decoder(epoch), handler=recorder),
            wds.batched(self.batch_size, collation_fn=self.codec.collate, partial=not self.drop_last),
            wds.pipelinefilter(_with_notices)(recorder),
        ]
        return wds.DataPipeline(*stages)

    def _stream(self, epoch: int) -> Iterator[Rows | _SkipNotice]:
        pipeline = self.pipeline(epoch)
        if self.num_workers == 0:
            return iter(pipeline)
        loader = wds.WebLoader(pipeline, batch_size=None, shuffle=False, num_workers=self.num_workers)
        return iter(loader)

    def __iter__(self) -> Iterator[ClipBatch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        delivered = 0
        for item in self._stream(epoch):
            if isinstance(item, _SkipNotice):
                self._skipped.extend(item.skipped)
                continue
            delivered += 1
            self._batches += 1
            self._samples += len(item.label)
            yield item.to_batch()
            if self.batches_per_epoch is not None and delivered >= self.batches_per_epoch:
                return
        if delivered == 0:
            # Under DDP a rank without data would hang the others: an empty epoch is always an error.
            _, world, _, _ = wds.utils.pytorch_worker_info()
            reasons = "; ".join(f"{s.shard}: {s.reason}" for s in self._skipped[:3])
            raise MagvitError(
                f"epoch {epoch} delivered no batch from {len(self.source.urls)} shards (world size {world}, "
                f"batch_size {self.batch_size}, drop_last {self.drop_last}); {len(self._skipped)} skipped so far"
                f"{': ' + reasons if reasons else ''}. Check the data with magvit.data.inspect_shards, or use "
                "at least one shard per rank"
            )


def make_loader(
    source: str | os.PathLike[str] | Sequence[str],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    resampled: bool = False,
    batches_per_epoch: int | None = None,
    drop_last: bool = False,
    shuffle_buffer: int = 1000,
    start_epoch: int = 0,
    clip_start: str = "random",
) -> ShardLoader:
    """A loader of :class:`~magvit.batch.ClipBatch` with ``video`` (float ``[B, 3, T, H, W]`` in [0, 1]) and
    ``label`` (long ``[B]``).

    Args:
        source: a dataset folder (with ``meta.json``; clip shape and labels are then validated), a shard
            path or brace pattern (``"data/shard-{000000..000009}.tar"``), or a list of shard paths.
        batch_size: clips per batch.
        shuffle: shuffle shard order and samples (a buffer of ``shuffle_buffer`` raw samples per worker).
        seed: base seed; the order is a function of (seed, epoch, rank, worker).
        num_workers: DataLoader worker processes (0 = read in this process).
        resampled: infinite stream drawing shards with replacement (DDP training).
        batches_per_epoch: stop each ``iter()`` after this many batches (required with ``resampled``).
        drop_last: drop a final partial batch.
        shuffle_buffer: samples held for shuffling (memory: ``shuffle_buffer`` x clip bytes per worker).
        start_epoch: the epoch of the first ``iter()`` (resume).
        clip_start: for a dataset of stored videos (``store: video``), where a sample's clip starts:
            ``random`` -- drawn from ``(seed, epoch, sample key)``, new every epoch; ``first`` -- the video's
            first frames. A ``frames`` dataset's clips are fixed, and this has no effect.

    Raises:
        InputError: bad sizes, ``resampled`` without ``batches_per_epoch``, or an unknown ``clip_start``.
        MagvitError: the source has no dataset.
    """
    check_loader_options(batch_size, num_workers, shuffle_buffer, resampled, batches_per_epoch)
    if clip_start not in CLIP_STARTS:
        raise InputError(f"clip_start must be one of {', '.join(CLIP_STARTS)}, got {clip_start!r}")
    source_info = resolve_shards(source)
    decode: Callable[[dict[str, Any]], Any]
    if source_info.video is None:
        decode = _ClipDecoder(source_info.clip_shape, source_info.num_classes)
    else:
        assert source_info.clip_shape is not None  # a video store is a dataset folder, whose meta.json gives it
        decode = _VideoClipDecoder(source_info.clip_shape, source_info.video, source_info.num_classes, clip_start,
                                   seed)
    return ShardLoader(
        source=source_info,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        num_workers=num_workers,
        resampled=resampled,
        batches_per_epoch=batches_per_epoch,
        drop_last=drop_last,
        shuffle_buffer=shuffle_buffer,
        codec=SampleCodec(decode, collate_clips),
        epoch=start_epoch,
    )


def check_loader_options(batch_size: int, num_workers: int, shuffle_buffer: int, resampled: bool,
                         batches_per_epoch: int | None) -> None:
    """Refuse reader settings no loader can use (one :class:`InputError` naming the setting)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0 or shuffle_buffer < 1:
        raise InputError(f"num_workers must be >= 0 and shuffle_buffer >= 1, got {num_workers} and {shuffle_buffer}")
    if resampled and batches_per_epoch is None:
        raise InputError("a resampled stream is infinite: pass batches_per_epoch (batches per iter(loader))")
    if batches_per_epoch is not None and batches_per_epoch < 1:
        raise InputError(f"batches_per_epoch must be >= 1 or None, got {batches_per_epoch}")


def make_eval_loader(
    source: str | os.PathLike[str] | Sequence[str], batch_size: int, *, num_workers: int = 0
) -> ShardLoader:
    """A held-out set read deterministically: no shuffling, every sample exactly once, last batch kept; from a
    dataset of stored videos, each video's first frames (``clip_start="first"``).

    Under torchrun each rank reads a disjoint subset of shards (together: all of them).
    """
    return make_loader(source, batch_size, shuffle=False, num_workers=num_workers, drop_last=False,
                       clip_start="first")
