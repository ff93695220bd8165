"""The on-disk format of a magvit clip dataset (shared by ingestion, synthetic data, reader and inspect).

A dataset is a folder holding

* ``shard-000000.tar``, ``shard-000001.tar``, ... -- webdataset tar shards. Each sample ``<key>`` is
  three members:

  - ``<key>.npy``  the clip, uint8 ``[T, H, W, 3]`` (numpy ``.npy``, uncompressed: reading is a memcpy);
  - ``<key>.cls``  the class index as ASCII digits;
  - ``<key>.json`` where it came from: ``{"source": relative path or generator, "clip": clip index
    within the source, "start": first frame}``.

  That is the ``frames`` store (the default). In the ``video`` store (``meta.json`` has ``"store": "video"``)
  a sample is a stored video instead, from which the reader cuts a clip of ``clip_shape`` at a new start
  every epoch (:mod:`magvit.data.video_store`):

  - ``<key>.mp4``  a segment of a source video, resized at ingestion, H.264 (see :class:`VideoStore`);
  - ``<key>.cls``  the class index;
  - ``<key>.json`` ``{"source": relative path, "segment": segment index within the source, "start": its
    first frame in the source, "frames": its length}``.

* ``meta.json`` -- :class:`DatasetMeta`: class names, clip shape, per-shard and per-class counts, the
  settings that produced it and every skipped input with its reason. It is written last, so a folder
  without it is an interrupted write, not a dataset. A ``meta.json`` without ``store`` is a ``frames``
  dataset; a ``frames`` dataset's ``meta.json`` does not name its store at all.

A shard being written is named ``shard-NNNNNN.tar.partial`` and only renamed when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from magvit.data.atomic import write_text_atomic
from magvit.data.paths import local_path
from magvit.errors import MagvitError

__all__ = [
    "CLIP_EXT",
    "FORMAT",
    "FORMAT_VERSION",
    "INFO_EXT",
    "LABEL_EXT",
    "META_NAME",
    "SHARD_GLOB",
    "SHARD_PATTERN",
    "STORES",
    "VIDEO_EXT",
    "DatasetMeta",
    "ShardInfo",
    "ShortVideo",
    "SkippedFile",
    "VideoStore",
    "list_shard_files",
    "read_meta",
    "sample_key",
    "write_meta",
]

FORMAT = "magvit-clips"
FORMAT_VERSION = 1
SHARD_PATTERN = "shard-%06d.tar"
SHARD_GLOB = "shard-*.tar"
META_NAME = "meta.json"
CLIP_EXT, LABEL_EXT, INFO_EXT = "npy", "cls", "json"
VIDEO_EXT = "mp4"
#: What a sample holds: a fixed clip (``frames``) or a video segment to cut a clip from (``video``).
STORES: tuple[str, ...] = ("frames", "video")


def sample_key(source_index: int, clip_index: int) -> str:
    """The webdataset key of clip ``clip_index`` of source ``source_index`` (no dots: they end a key)."""
    return f"{source_index:07d}-{clip_index:04d}"


@attrs.frozen
class SkippedFile:
    """An input that produced no clips, and why."""

    path: str
    reason: str


@attrs.frozen
class ShortVideo:
    """An input that decoded fewer frames than its header states (a truncated file): its clips were cut from
    the frames that decoded."""

    path: str
    header_frames: int
    decoded_frames: int

    def __str__(self) -> str:
        return f"{self.path}: header says {self.header_frames} frames, decoded {self.decoded_frames}"


@attrs.frozen
class ShardInfo:
    """One complete shard: file name (relative to the dataset folder) and number of clips."""

    name: str
    num_clips: int


def _tuple_of(cls: type) -> Any:
    return lambda items: tuple(item if isinstance(item, cls) else cls(**item) for item in items)



def record_from_json(cls: type[Any], text: str, fmt: str, version: int) -> Any:
    """The attrs record ``cls`` of a ``meta.json`` text whose ``format`` and ``version`` must be ``fmt`` and
    ``version`` (:class:`ValueError` otherwise); keys that are not fields of ``cls`` are ignored."""
    body = json.loads(text)
    if not isinstance(body, Mapping) or body.get("format") != fmt:
        raise ValueError(f"not a {fmt} meta.json (format={body.get('format') if isinstance(body, Mapping) else None!r})")
    if body.get("version") != version:
        raise ValueError(f"format version {body.get('version')} is not supported (expected {version})")
    fields = {f.name for f in attrs.fields(cls)}
    return cls(**{k: v for k, v in body.items() if k in fields})

def _check_store(instance: Any, attribute: Any, value: str) -> None:
    if value not in STORES:
        raise ValueError(f"store must be one of {', '.join(STORES)}, got {value!r}")


@attrs.frozen
class VideoStore:
    """How the samples of a ``store: video`` dataset hold their videos, and how a clip is cut from one.

    Attributes:
        max_segment_frames: a source video longer than this is split into several samples (segments) of at most
            this many frames (:func:`magvit.data.video_store.segment_bounds`).
        stride: a clip takes every ``stride``-th frame of its segment.
        codec, pix_fmt, crf, keyframe_interval: the H.264 encoding of the segments (libx264 settings).
        fps: the nominal frame rate of the segments (a clip is cut by frame index; the rate is not used).
    """

    max_segment_frames: int
    stride: int = 1
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    crf: int = 18
    keyframe_interval: int = 32
    fps: int = 25


def _video_store(value: Any) -> VideoStore | None:
    return value if value is None or isinstance(value, VideoStore) else VideoStore(**value)


@attrs.frozen
class DatasetMeta:
    """The contents of ``meta.json``.

    Attributes:
        class_names: class ``i`` is ``class_names[i]``.
        clip_shape: ``(T, H, W, 3)`` of every clip.
        shards: the shards in order, with their clip counts.
        clips_per_class: number of clips of each class name.
        labelled: False when the labels carry no information (a flat folder of videos: all class 0).
        settings: the arguments that produced the dataset (frames, size, stride, seed, ...).
        skipped: inputs that produced no clips, with reasons.
        truncated: inputs that decoded fewer frames than their header states (ingested as far as they decode).
        ignored: files under the source that are not videos (by extension), listed for the record.
        created_by: the function that wrote the dataset.
        store: ``frames`` (each sample is a clip of ``clip_shape``) or ``video`` (each sample is a video segment;
            the reader cuts a clip of ``clip_shape`` from it, and the shard counts are segments).
        video: the encoding and cutting settings of a ``video`` store (None for ``frames``).
    """

    class_names: tuple[str, ...] = attrs.field(converter=tuple)
    clip_shape: tuple[int, int, int, int] = attrs.field(converter=tuple)
    shards: tuple[ShardInfo, ...] = attrs.field(converter=_tuple_of(ShardInfo))
    clips_per_class: dict[str, int] = attrs.field(converter=dict)
    labelled: bool = True
    settings: dict[str, Any] = attrs.field(factory=dict, converter=dict)
    skipped: tuple[SkippedFile, ...] = attrs.field(default=(), converter=_tuple_of(SkippedFile))
    truncated: tuple[ShortVideo, ...] = attrs.field(default=(), converter=_tuple_of(ShortVideo))
    ignored: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    created_by: str = ""
    store: str = attrs.field(default="frames", validator=_check_store)
    video: VideoStore | None = attrs.field(default=None, converter=_video_store)

    def __attrs_post_init__(self) -> None:
        if (self.store == "video") != (self.video is not None):
            raise ValueError(f"a {self.store} store {'needs' if self.store == 'video' else 'takes no'} video settings")

    @property
    def num_clips(self) -> int:
        return sum(s.num_clips for s in self.shards)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        body = {"format": FORMAT, "version": FORMAT_VERSION, "num_clips": self.num_clips, **attrs.asdict(self)}
        if self.store == "frames":
            # A missing store means frames: a frames dataset's meta.json does not depend on the store fields.
            del body["store"], body["video"]
        return json.dumps(body, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DatasetMeta:
        return record_from_json(cls, text, FORMAT, FORMAT_VERSION)


def write_meta(folder: str | os.PathLike[str], meta: DatasetMeta) -> Path:
    """Write ``folder/meta.json`` atomically."""
    return write_text_atomic(Path(folder) / META_NAME, meta.to_json())


def read_meta(folder: str | os.PathLike[str]) -> DatasetMeta:
    """Read ``folder/meta.json``.

    Raises:
        MagvitError: a URL instead of a local folder, or the folder or its meta.json is missing or unreadable
            (with what to do).
    """
    folder = local_path(folder)
    path = folder / META_NAME
    if not folder.is_dir():
        raise MagvitError(f"dataset folder {folder} does not exist")
    if not path.is_file():
        splits = sorted(p.name for p in folder.iterdir() if (p / META_NAME).is_file())
        hint = (
            f"it holds the splits {', '.join(splits)}: pass one of {', '.join(str(folder / s) for s in splits)}"
            if splits
            else "write one with magvit.data.write_shards / write_synthetic (`magvit data shards|synthetic`); "
            "shards without meta.json are the remains of an interrupted write"
        )
        raise MagvitError(f"{folder} is not a magvit clip dataset (no {META_NAME}); {hint}")
    try:
        return DatasetMeta.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as exc:
        raise MagvitError(f"{path} is not a valid magvit dataset description: {exc}") from exc


def list_shard_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The complete shards in ``folder``, sorted (``.partial`` files of an interrupted write are not listed)."""
    return sorted(Path(folder).glob(SHARD_GLOB))
