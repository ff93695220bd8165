"""Video data for magvit: file I/O, folder ingestion, synthetic data, webdataset shards and their reader.

Conventions (the same throughout magvit): uint8 ``[T, H, W, 3]`` frames at the I/O edge (files and shards); float
``[B, 3, T, H, W]`` in [0, 1] everywhere else. The shard format is described in
:mod:`magvit.data.shard_format`.

* :func:`read_video` / :func:`write_video` -- PyAV video files (:mod:`.video_io`)
* :func:`write_shards` -- a folder of videos -> shards + meta.json (:mod:`.ingest`); with ``store="video"`` the
  shards keep H.264 video segments and the reader cuts a new clip every epoch (:mod:`.video_store`)
* :func:`write_synthetic` / :func:`synthetic_clips` -- the built-in labelled moving-shapes data (:mod:`.synthetic`);
  :func:`write_synthetic_videos` writes them as a folder of video files
* :func:`make_loader` / :func:`make_eval_loader` -> :class:`ShardLoader` of :class:`~magvit.batch.ClipBatch`
  batches (:mod:`.reader`)
* :func:`inspect_shards` / :func:`write_sample_grid` (:mod:`.inspect`), :func:`save_clip_grid` (:mod:`.grid`)
"""

from magvit.data.grid import clip_grid, save_clip_grid
from magvit.data.ingest import IngestReport, find_videos, write_shards
from magvit.data.inspect import ShardReport, inspect_shards, write_sample_grid
from magvit.data.reader import ReadReport, ShardLoader, SkippedSample, make_eval_loader, make_loader
from magvit.data.shard_format import DatasetMeta, SkippedFile, read_meta
from magvit.data.synthetic import SyntheticReport, SyntheticSpec, synthetic_clips, write_synthetic, write_synthetic_videos
from magvit.data.video_io import VideoReadError, frames_to_video, read_video, video_to_frames, write_video

__all__ = [
    "DatasetMeta",
    "IngestReport",
    "ReadReport",
    "ShardLoader",
    "ShardReport",
    "SkippedFile",
    "SkippedSample",
    "SyntheticReport",
    "SyntheticSpec",
    "VideoReadError",
    "clip_grid",
    "find_videos",
    "frames_to_video",
    "inspect_shards",
    "make_eval_loader",
    "make_loader",
    "read_meta",
    "read_video",
    "save_clip_grid",
    "synthetic_clips",
    "video_to_frames",
    "write_sample_grid",
    "write_shards",
    "write_synthetic",
    "write_synthetic_videos",
    "write_video",
]
