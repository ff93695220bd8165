"""Child: :func:`benchmarks.token_cache.token_cache_speedup` (written by the data engineer) in the suite.

Its figure is already a ratio of interleaved runs (token shards vs on-the-fly tokenisation), so no
reference peak is needed. At B size one measured step per mode keeps the suite's run time bounded.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import Sizes, child_main, peak_rss_gb


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.token_cache import token_cache_speedup

    if cfg.preset == "tiny":
        result = token_cache_speedup(preset="tiny", resolution=cfg.resolution, batch_size=4, steps=2)
    else:
        result = token_cache_speedup(preset=cfg.preset, resolution=cfg.resolution, batch_size=2, steps=1)
    return {"token_cache_speedup": result["speedup"], "result": result, "peak_rss_gb": peak_rss_gb()}


if __name__ == "__main__":
    child_main(measure)
