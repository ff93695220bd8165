"""Ingest a folder of real videos into webdataset clip shards (``magvit data shards``).

Folder layout (UCF-101 / SSv2 style)::

    src/<class name>/**/<video>.<mp4|avi|webm|mkv|gif|mov|m4v|mpg|mpeg>

* **Labelled** -- if any immediate sub-folder of ``src`` contains a video (at any depth), every such
  sub-folder is a class; classes are numbered in sorted name order (UCF-101's ``classInd`` order, from 0).
  A video lying directly in ``src`` next to class folders has no class: it is skipped and reported.
* **Flat** -- if no sub-folder contains a video, every video directly in ``src`` belongs to the single
  class ``"unlabeled"`` (label 0) and ``meta.json`` records ``labelled: false``. Use this for
  unconditional tasks; class-conditional tasks need a labelled folder.

Each video is decoded with PyAV (short side resized to ``size`` inside FFmpeg, then centre-cropped),
cut into clips (:mod:`magvit.data.clips`) and written in sorted path order. A file that cannot be decoded,
or is shorter than one clip, is skipped and listed -- with its reason -- in the returned report and in
``meta.json``; ingestion never stops for one bad file. A file that decodes fewer frames than its header
states (cut short, but readable up to the cut) gives the clips of the frames that decode, and is named
in a warning, the report and ``meta.json`` (``truncated``). Files without a video extension are listed as
``ignored``. Hidden files and folders (leading ``.``) are not looked at.

``store="video"`` keeps the resized video instead of cutting clips: each video becomes one or more H.264
segments of at most ``max_segment_frames`` frames (:mod:`magvit.data.video_store`), and the reader cuts a
clip from each at a new start every epoch. Skipping, truncation and ordering are the same.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from tqdm import tqdm

from magvit.data.clips import clip_span, clip_starts, cut_clip
from magvit.data.paths import local_path
from magvit.data.shard_format import (
    CLIP_EXT,
    INFO_EXT,
    LABEL_EXT,
    STORES,
    VIDEO_EXT,
    DatasetMeta,
    ShardInfo,
    ShortVideo,
    SkippedFile,
    VideoStore,
    sample_key,
    write_meta,
)
from magvit.data.shards import ShardSink, dataset_folder
from magvit.data.video_io import READ_EXTENSIONS, VideoReadError, decode_video
from magvit.data.video_store import encode_segment, segment_bounds
from magvit.errors import InputError, MagvitError

__all__ = ["UNLABELED", "IngestReport", "VideoSource", "find_videos", "write_shards"]

#: The class name of every video of a flat folder.
UNLABELED = "unlabeled"


@attrs.frozen
class VideoSource:
    """One video to ingest: its path and class name."""

    path: Path
    class_name: str


@attrs.frozen
class SourceListing:
    """What :func:`find_videos` found under a source folder."""

    videos: tuple[VideoSource, ...]
    class_names: tuple[str, ...]
    labelled: bool
    skipped: tuple[SkippedFile, ...]
    ignored: tuple[str, ...]


@attrs.frozen
class IngestReport:
    """The outcome of :func:`write_shards` (also recorded in ``out/meta.json``)."""

    out: str
    num_videos: int
    num_clips: int
    shards: tuple[ShardInfo, ...]
    class_names: tuple[str, ...]
    clips_per_class: dict[str, int]
    labelled: bool
    skipped: tuple[SkippedFile, ...]
    ignored: tuple[str, ...]
    truncated: tuple[ShortVideo, ...] = ()
    store: str = "frames"

    def __str__(self) -> str:
        used = self.num_videos - len(self.skipped)
        what = "clips" if self.store == "frames" else "video segments (the reader cuts a new clip of each every epoch)"
        lines = [
            f"wrote {self.num_clips} {what} from {used} of {self.num_videos} videos into {len(self.shards)} "
            f"shards in {self.out}",
            f"{len(self.class_names)} classes"
            + ("" if self.labelled else " (flat folder: every clip has label 0, 'unlabeled')"),
        ]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} files without a video extension (listed in meta.json)")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} videos:")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped]
        if self.truncated:
            lines.append(f"{len(self.truncated)} videos decoded fewer frames than their header states (truncated "
                         "files?); their clips were cut from the frames that decoded:")
            lines += [f"  {s}" for s in self.truncated]
        return "\n".join(lines)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _walk(folder: Path, root: Path) -> Iterable[Path]:
    return (p for p in sorted(folder.rglob("*")) if p.is_file() and not _is_hidden(p, root))


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in READ_EXTENSIONS


def find_videos(src: str | os.PathLike[str]) -> SourceListing:
    """List the videos under ``src`` with their classes (see the module docstring for the layout rules).

    Raises:
        MagvitError: ``src`` is missing, not a folder, or holds no video file.
    """
    root = local_path(src, "source folder", use="reads videos from")
    if not root.exists():
        raise MagvitError(f"source folder {root} does not exist; pass a folder of videos (src/<class>/<video>)")
    if not root.is_dir():
        raise MagvitError(f"source {root} is not a folder; pass a folder of videos (src/<class>/<video>)")
    files = list(_walk(root, root))
    ignored = tuple(p.relative_to(root).as_posix() for p in files if not _is_video(p))
    videos = [p for p in files if _is_video(p)]
    if not videos:
        raise MagvitError(
            f"no video files ({', '.join(READ_EXTENSIONS)}) under {root}; expected {root}/<class>/<video> "
            f"or a flat folder of videos ({len(files)} other files found)"
        )
    nested = [p for p in videos if p.parent != root]
    loose = [p for p in videos if p.parent == root]
    if not nested:
        listing = tuple(VideoSource(p, UNLABELED) for p in loose)
        return SourceListing(listing, (UNLABELED,), False, (), ignored)
    class_of = {p: p.relative_to(root).parts[0] for p in nested}
    skipped = tuple(
        SkippedFile(p.relative_to(root).as_posix(), "not inside a class sub-folder (the source has class folders)")
        for p in loose
    )
    listing = tuple(VideoSource(p, class_of[p]) for p in nested)
    return SourceListing(listing, tuple(sorted(set(class_of.values()))), True, skipped, ignored)


def _check_settings(frames: int, size: int, stride: int, clips_per_video: int | None, shard_size: int,
                    store: str, max_segment_frames: int) -> None:
    span = clip_span(frames, stride)  # validates frames and stride
    if size < 1:
        raise InputError(f"size must be a positive number of pixels, got {size}")
    if clips_per_video is not None and clips_per_video < 1:
        raise InputError(f"clips_per_video must be >= 1 or None (all non-overlapping clips), got {clips_per_video}")
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1 clip per shard, got {shard_size}")
    if store not in STORES:
        raise InputError(f"store must be one of {', '.join(STORES)}, got {store!r}")
    if store == "video":
        if size % 2:
            raise InputError(f"store='video' writes yuv420p H.264, which needs an even size; got size={size}")
        if clips_per_video is not None:
            raise InputError("clips_per_video applies to store='frames'; store='video' keeps whole videos and the "
                             "reader cuts one clip of each per epoch")
        if max_segment_frames < span:
            raise InputError(f"max_segment_frames must be at least one clip ({span} frames: frames={frames}, "
                             f"stride={stride}), got {max_segment_frames}")


def _clip_samples(index: int, rel: str, decoded: np.ndarray, label: int, starts: list[int], frames: int,
                  stride: int) -> Iterator[dict[str, Any]]:
    for clip_index, start in enumerate(starts):
        yield {
            "__key__": sample_key(index, clip_index),
            CLIP_EXT: cut_clip(decoded, start, frames=frames, stride=stride),
            LABEL_EXT: label,
            INFO_EXT: {"source": rel, "clip": clip_index, "start": start},
        }


def _segment_samples(index: int, rel: str, decoded: np.ndarray, label: int, bounds: list[tuple[int, int]],
                     store: VideoStore) -> Iterator[dict[str, Any]]:
    for segment, (start, stop) in enumerate(bounds):
        yield {
            "__key__": sample_key(index, segment),
            VIDEO_EXT: encode_segment(decoded[start:stop], store),
            LABEL_EXT: label,
            INFO_EXT: {"source": rel, "segment": segment, "start": start, "frames": stop - start},
        }


def write_shards(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    frames: int = 16,
    size: int = 64,
    stride: int = 1,
    clips_per_video: int | None = None,
    shard_size: int = 1000,
    overwrite: bool = False,
    progress: bool = False,
    store: str = "frames",
    max_segment_frames: int = 300,
) -> IngestReport:
    """Decode every video under ``src``, cut clips (or keep video segments) and write webdataset shards plus
    ``meta.json`` to ``out``.

    Args:
        src: folder of videos, ``src/<class>/**/<video>`` or flat (module docstring).
        out: output folder (created); must not already hold a dataset unless ``overwrite``.
        frames: frames per clip.
        size: clips are ``size x size``: short side resized to ``size``, then centre-cropped.
        stride: take every ``stride``-th frame (1 = consecutive frames).
        clips_per_video: clips per video, evenly spaced; ``None`` = all non-overlapping clips.
        shard_size: clips per shard (the last shard may hold fewer). At 16x64x64 a clip is 196 KB.
        overwrite: replace a dataset already in ``out``.
        progress: show a tqdm progress bar over videos.
        store: ``frames`` -- each sample is a uint8 clip, fixed here; ``video`` -- each sample is an H.264 mp4
            of the resized video (``size`` must be even), and the reader cuts a ``frames``-frame clip of it at a
            new start every epoch (:mod:`magvit.data.video_store`).
        max_segment_frames: with ``store="video"``, a longer video is split into several samples of at most
            this many frames (at least one clip each). At 25 fps, 300 frames are 12 s: most clips of
            UCF-101, Kinetics or SSv2 stay whole.

    Returns:
        :class:`IngestReport` (printable) with counts, classes and every skipped file with its reason.

    Raises:
        MagvitError: ``src`` is missing or holds no videos, ``out`` already holds a dataset, or no video
            yielded a clip (the message lists why each was skipped).
    """
    _check_settings(frames, size, stride, clips_per_video, shard_size, store, max_segment_frames)
    video_store = VideoStore(max_segment_frames=max_segment_frames, stride=stride) if store == "video" else None
    local_path(out, "output folder", use="writes data to")  # before anything is read
    root = Path(src)
    listing = find_videos(root)
    with dataset_folder(out, overwrite=overwrite) as out_dir:
        label_of = {name: i for i, name in enumerate(listing.class_names)}
        skipped = list(listing.skipped)
        truncated: list[ShortVideo] = []
        counts: Counter[str] = Counter()
        span = clip_span(frames, stride)
        with ShardSink(out_dir, shard_size=shard_size) as sink:
            for index, video in enumerate(tqdm(listing.videos, desc="ingest", unit="video", disable=not progress)):
                rel = video.path.relative_to(root).as_posix()
                try:
                    video_file = decode_video(video.path, size=size)
                except (VideoReadError, OSError) as exc:
                    skipped.append(SkippedFile(rel, f"unreadable: {exc}"))
                    continue
                decoded = video_file.frames
                if video_file.short:
                    assert video_file.header_frames is not None
                    truncated.append(ShortVideo(rel, video_file.header_frames, len(decoded)))
                    warnings.warn(f"data: {truncated[-1]} (truncated file?); ingesting the frames that decode",
                                  stacklevel=2)
                label = label_of[video.class_name]
                if video_store is None:
                    starts = clip_starts(len(decoded), frames=frames, stride=stride, clips_per_video=clips_per_video)
                    samples = _clip_samples(index, rel, decoded, label, starts, frames, stride)
                    count = len(starts)
                else:
                    bounds = segment_bounds(len(decoded), span, max_segment_frames)
                    samples = _segment_samples(index, rel, decoded, label, bounds, video_store)
                    count = len(bounds)
                if not count:
                    reason = (f"too short: {len(decoded)} frames, one clip needs {span} (frames={frames}, "
                              f"stride={stride})")
                    skipped.append(SkippedFile(rel, reason))
                    continue
                for sample in samples:
                    sink.write(sample)
                counts[video.class_name] += count
        shards = sink.shards
        if not shards:
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:10])
            more = f" (and {len(skipped) - 10} more)" if len(skipped) > 10 else ""
            raise MagvitError(f"no clip could be cut from the {len(listing.videos)} videos under {root}: "
                              f"{reasons}{more}")
        meta = DatasetMeta(
            class_names=listing.class_names,
            clip_shape=(frames, size, size, 3),
            shards=shards,
            clips_per_class={name: counts[name] for name in listing.class_names},
            labelled=listing.labelled,
            settings={
                "src": str(root.resolve()),
                "frames": frames,
                "size": size,
                "stride": stride,
                "clips_per_video": clips_per_video,
                "shard_size": shard_size,
            },
            skipped=tuple(skipped),
            truncated=tuple(truncated),
            ignored=listing.ignored,
            created_by="magvit.data.write_shards",
            store=store,
            video=video_store,
        )
        write_meta(out_dir, meta)
    return IngestReport(
        out=str(out_dir),
        num_videos=len(listing.videos) + len(listing.skipped),
        num_clips=meta.num_clips,
        shards=meta.shards,
        class_names=meta.class_names,
        clips_per_class=meta.clips_per_class,
        labelled=meta.labelled,
        skipped=meta.skipped,
        ignored=meta.ignored,
        truncated=meta.truncated,
        store=meta.store,
    )
