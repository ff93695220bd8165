"""3D-VQ encode and decode, B preset at 16x128x128 (tiny at 16x32x32 with --quick), batch 1.

FLOPs: conv (and dense) FLOPs counted analytically by forward hooks during the warm-up call
(:class:`benchmarks.flops.ConvFlops`, ``2 k^3 C_in C_out`` per output voxel); the quantizer's
nearest-code search (``2 n K D``, 0.06 % of the B total) and GroupNorm/swish are not counted.
"""

from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Any

import torch

from benchmarks.common import Sizes, child_main, peak_rss_gb, reference_peak, sync
from benchmarks.flops import ConvFlops
from magvit.registry import get_tokenizer


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    tok = get_tokenizer("vq3d", preset=cfg.preset, resolution=cfg.resolution).to(dev).eval()
    video = torch.rand(1, 3, cfg.frames, cfg.resolution, cfg.resolution,
                       generator=torch.Generator().manual_seed(0)).to(dev)

    def timed(fn: Any, *a: Any) -> tuple[float, Any]:
        sync(dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = fn(*a)
        sync(dev)
        return time.perf_counter() - t0, out

    enc_count, dec_count = ConvFlops(), ConvFlops()
    with enc_count.count(tok.encoder):
        _, tokens = timed(tok.encode, video)
    with dec_count.count(tok.decoder):
        timed(tok.decode, tokens)
    rss = peak_rss_gb()
    runs = []
    for _ in range(cfg.repeats):
        peak = reference_peak(cfg, dev)
        te, _ = timed(tok.encode, video)
        td, _ = timed(tok.decode, tokens)
        runs.append({"peak_gflops": peak, "encode_seconds": te, "decode_seconds": td})
    fe, fd = enc_count.flops, dec_count.flops
    frac = lambda flops, seconds, peak: flops / seconds / (peak * 1e9)  # noqa: E731
    return {
        "encode_flops": fe,
        "decode_flops": fd,
        "encode_frac": median(frac(fe, r["encode_seconds"], r["peak_gflops"]) for r in runs),
        "decode_frac": median(frac(fd, r["decode_seconds"], r["peak_gflops"]) for r in runs),
        "vq_frac": median(frac(fe + fd, r["encode_seconds"] + r["decode_seconds"], r["peak_gflops"]) for r in runs),
        "runs": runs,
        "peak_rss_gb": rss,
    }


if __name__ == "__main__":
    child_main(measure)
