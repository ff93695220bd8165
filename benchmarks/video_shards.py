"""The two shard stores side by side: bytes per clip, and reader clips/s on one core.

The same synthetic videos (:func:`magvit.data.synthetic_clips`, ``VIDEOS`` videos of ``VIDEO_FRAMES`` frames,
written as lossless ``.mkv``) are ingested twice with :func:`magvit.data.write_shards` at 16 frames and the
suite's resolution (128 px; 32 with ``--quick``): ``store="frames"`` (every non-overlapping uint8 clip) and
``store="video"`` (one H.264 member per video). Bytes per clip are the shard bytes over the clips of that
footage: the stored clips for ``frames``, ``VIDEO_FRAMES / 16`` per video for ``video`` (what the same footage
holds in 16-frame clips).

Reading is what one DataLoader worker does -- the loader's own pipeline (:meth:`ShardLoader.pipeline`: shard
parsing, shuffle buffer, per-sample decode, uint8 collation), iterated in this process with one thread, epoch
after epoch (for ``video``, each epoch cuts a new clip per video). The float conversion that follows in the
consumer process is not a worker's and is not timed. Rates are given per wall second and per CPU second of
this process (``time.process_time``): on a loaded machine the second is the cost of a clip on one core.

    python -m benchmarks --only video_shards --json FILE      # in the suite (128 px)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Sizes, child_main, peak_rss_gb
from magvit.data import make_loader, write_shards
from magvit.data.synthetic import synthetic_clips
from magvit.data.video_io import write_video

FRAMES = 16
BATCH = 8


def _footage(cfg: Sizes) -> tuple[int, int]:
    """(videos, frames per video): 16 videos of 96 frames at full size, 4 of 48 with --quick."""
    return (4, 48) if cfg.preset == "tiny" else (16, 96)


def _read(folder: Path, epochs: int) -> dict[str, float]:
    """Iterate ``epochs`` epochs of the loader's pipeline (a worker's work) in this process."""
    loader = make_loader(folder, BATCH, shuffle=True, seed=0, num_workers=0, shuffle_buffer=100)
    for _ in loader.pipeline(0):  # warm-up: page cache, codec initialisation
        pass
    clips = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(1, epochs + 1):
        for rows in loader.pipeline(epoch):
            clips += len(getattr(rows, "label", ()))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"clips": clips, "wall_seconds": wall, "cpu_seconds": cpu, "clips_per_second": clips / wall,
            "clips_per_cpu_second": clips / cpu}


def _store(src: Path, out: Path, size: int, store: str, epochs: int, footage_clips: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    report = write_shards(src, out, frames=FRAMES, size=size, store=store, shard_size=64)
    write_seconds = time.perf_counter() - t0
    nbytes = sum(p.stat().st_size for p in out.glob("shard-*.tar"))
    return {"samples": report.num_clips, "shard_bytes": nbytes, "bytes_per_clip": nbytes / footage_clips,
            "write_seconds": write_seconds, **_read(out, epochs)}


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)  # one worker = one core
    videos, length = _footage(cfg)
    clips, _ = synthetic_clips(videos, frames=length, size=cfg.resolution, num_classes=4)
    footage_clips = videos * (length // FRAMES)
    with tempfile.TemporaryDirectory(prefix="magvit-bench-") as tmp:
        src = Path(tmp) / "src"
        for i, clip in enumerate(clips):
            write_video(src / f"{i:03d}.mkv", clip)
        result: dict[str, Any] = {"videos": videos, "video_frames": length, "size": cfg.resolution,
                                  "clip_frames": FRAMES, "raw_bytes_per_clip": FRAMES * cfg.resolution**2 * 3}
        # the video store yields one clip per video and epoch: in 3 * (clips per video) epochs it reads as many
        # clips as the frames store in 3 epochs; the frames store, much faster, reads 10
        result["frames"] = _store(src, Path(tmp) / "frames", cfg.resolution, "frames", 10, footage_clips)
        result["video"] = _store(src, Path(tmp) / "video", cfg.resolution, "video", 3 * (length // FRAMES),
                                 footage_clips)
    result["bytes_ratio"] = result["frames"]["bytes_per_clip"] / result["video"]["bytes_per_clip"]
    # at batch 256 and an assumed 0.5 s per step (benchmarks/README.md): 512 clips/s
    result["workers_for_512_clips_per_second"] = {
        store: 512 / result[store]["clips_per_cpu_second"] for store in ("frames", "video")}
    result["peak_rss_gb"] = peak_rss_gb()
    return result


if __name__ == "__main__":
    child_main(measure)
