"""The reference row: the fp32 matmul rate on its own (a fresh process, nothing else loaded)."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import Sizes, child_main, peak_rss_gb, reference_peak


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    rates = [reference_peak(cfg, dev) for _ in range(cfg.repeats)]
    return {"matmul_gflops": sorted(rates)[len(rates) // 2], "samples": rates, "n": cfg.peak_n,
            "threads": torch.get_num_threads(), "peak_rss_gb": peak_rss_gb()}


if __name__ == "__main__":
    child_main(measure)
