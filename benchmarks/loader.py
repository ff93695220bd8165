"""The data reader: clips/s from webdataset shards into float ``[B, 3, 16, H, W]`` batches.

A small synthetic set (:func:`magvit.data.write_synthetic`, ``size=128``; 32 with --quick) is written
to a temporary folder, then read epoch by epoch with :func:`magvit.data.make_loader` as the trainer
does (shuffled, batch 4) in this process (``num_workers=0``: one core; workers would add cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Sizes, child_main, interleaved, peak_rss_gb
from magvit.data import make_loader, write_synthetic

BATCH = 4


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    clips = 32 if cfg.preset == "tiny" else 64
    with tempfile.TemporaryDirectory(prefix="magvit-bench-") as tmp:
        t0 = time.perf_counter()
        write_synthetic(tmp, num_clips=clips, num_val_clips=1, frames=cfg.frames, size=cfg.resolution,
                        shard_size=16)
        write_seconds = time.perf_counter() - t0
        shard_bytes = sum(p.stat().st_size for p in (Path(tmp) / "train").glob("*.tar"))
        loader = make_loader(Path(tmp) / "train", BATCH, shuffle=True, num_workers=0)
        seen = 0

        def epoch() -> None:
            nonlocal seen
            seen = 0
            for batch in loader:
                seen += batch.video.shape[0]  # the batch is fully decoded to float here

        epoch()  # warm-up (page cache)
        rss = peak_rss_gb()
        timing = interleaved(epoch, cfg, dev, cfg.repeats)
    assert seen == clips, (seen, clips)
    return {"clips": clips, "clips_per_second": clips / timing.seconds,
            "clips_per_peak_gflop": clips / timing.peak_seconds(), "shard_mb": shard_bytes / 1e6,
            "write_seconds": write_seconds, "peak_gflops": timing.peak_gflops, "peak_rss_gb": rss,
            **timing.as_dict()}


if __name__ == "__main__":
    child_main(measure)
