"""Autoregressive decoding with a key/value cache (paper Table 6 baseline) on the causal transformer of
the same size as the COMMIT one (B; tiny with --quick), 1024 visual tokens, batch 1.

A full decode is 1024 steps of :func:`magvit.decoding.decode` with the ``ar`` sampler; only two segments of
``ar_prefix`` steps are timed: the first ones (empty cache) and the last ones (cache jumped to
N - ar_prefix). A step's cost is affine in the cache
length (weights: constant; attention: linear), so ``N x mean(per-step cost of both segments)`` is the
linear extrapolation of the full decode; the output says ``"extrapolated": true``.
"""

from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Any

import torch

from benchmarks.common import Sample, Sizes, Timing, child_main, peak_rss_gb, reference_peak, sync
from benchmarks.transformer_forward import build
from magvit.decoding import decode
from magvit.samplers import ARSampler


class _Stop(Exception):
    pass


def decode_segment(model: Any, start: int | None, count: int | None) -> float:
    """Seconds of the ``ar`` decoding: all of it (``start=None``), or ``count`` token steps at cache
    position ``start`` (the cache length is jumped there after the first token step; contents do not
    change the cost)."""
    original = model.step
    calls = 0

    def step(ids: torch.Tensor, cache: Any) -> torch.Tensor:
        nonlocal calls
        if start is not None and calls == count:  # `count` token steps after the start done
            raise _Stop
        if start is not None and calls == 0:
            cache.length += start
        logits = original(ids, cache)
        calls += 1
        return logits

    model.step = step
    dev = model.word.weight.device
    sync(dev)
    t0 = time.perf_counter()
    try:
        decode(model, ARSampler(), model.vocab.prompt_id("cg"), model.vocab.uncond_id, batch_size=1,
               generator=torch.Generator().manual_seed(0))
    except _Stop:
        pass
    finally:
        del model.step
    sync(dev)
    return time.perf_counter() - t0


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    model = build(cfg, dev, causal=True).eval()
    n = model.num_tokens
    prefix = cfg.ar_prefix

    def full_estimate() -> float:
        if prefix is None:
            return decode_segment(model, None, None)
        early = decode_segment(model, 0, prefix)
        late = decode_segment(model, n - prefix, prefix)
        return n * (early + late) / (2 * prefix)

    decode_segment(model, 0, 8)  # warm-up
    rss = peak_rss_gb()
    samples = []
    for _ in range(cfg.repeats):
        peak = reference_peak(cfg, dev)
        samples.append(Sample(full_estimate(), peak))
    timing = Timing(tuple(samples))
    return {
        "ar_seconds": timing.seconds,
        "ar_peak_gflop": timing.peak_seconds(),
        "extrapolated": prefix is not None,
        "timed_steps": n if prefix is None else 2 * prefix,
        "ms_per_step": 1e3 * median(s.seconds for s in samples) / n,
        "peak_gflops": timing.peak_gflops,
        "peak_rss_gb": rss,
        **timing.as_dict(),
    }


if __name__ == "__main__":
    child_main(measure)
