"""COMMIT generation of one clip (12 steps) with MagvitPipeline, B presets at 128 px (tiny at 32 px with --quick).

Task ``fp`` (frame prediction): the pipeline pads the condition video, the tokenizer encodes it, 12
transformer forwards decode the tokens (Algorithm 1), the tokenizer decodes them to pixels. Inside each
timed ``generate`` call the transformer forwards and the tokenizer's encode/decode are timed by wrappers,
so the split is of the same run:

    decode overhead = (wall - transformer forwards - tokenizer encode/decode) / wall
    tokenizer share = (tokenizer encode + decode) / wall

The COMMIT decoding time alone (the ``commit_decode`` call) is also recorded, for the AR comparison.
"""

from __future__ import annotations

import argparse
import time
from statistics import median as med
from collections.abc import Callable
from typing import Any

import torch

import magvit.pipeline as pipeline_module
from benchmarks.common import NUM_CLASSES, TASKS, Sizes, autocast, child_main, interleaved, maybe_compile, peak_rss_gb, sync
from magvit.kernels.malloc import release_before_decoding
from magvit.pipeline import MagvitPipeline

STEPS = 12


class Stopwatch:
    """Accumulates the wall time spent inside wrapped callables, per name."""

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            sync(self.dev)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.dev)
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    pipe = MagvitPipeline.from_preset(cfg.preset, tasks=list(TASKS), num_classes=NUM_CLASSES,
                                      resolution=cfg.resolution, frames=cfg.frames)
    pipe.transformer.to(dev)
    pipe.tokenizer.to(dev)
    release_before_decoding(pipe.tokenizer)  # as `magvit generate` does (magvit/kernels/malloc.py)
    maybe_compile(pipe.transformer, args.compile)
    watch = Stopwatch(dev)
    # Instance attributes shadow the methods: the pipeline's own calls go through the stopwatch.
    pipe.tokenizer.encode = watch.wrap("encode", pipe.tokenizer.encode)
    pipe.tokenizer.decode = watch.wrap("decode", pipe.tokenizer.decode)
    pipe.transformer.forward = watch.wrap("transformer", pipe.transformer.forward)
    pipeline_module.decode = watch.wrap("commit_decode", pipeline_module.decode)  # the decoding loop
    video = torch.rand(1, 3, cfg.frames, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(0))

    def generate(steps: int = STEPS) -> None:
        with autocast(dev, args.compile):
            pipe.generate("fp", video, steps=steps, generator=torch.Generator().manual_seed(0))

    # Warm-up: two steps touch every code path (pad, encode, forward, sampling, re-masking, decode).
    generate(steps=2)
    rss = peak_rss_gb()  # before any reference matmul: model + one generation
    runs = []

    def timed() -> None:
        generate()
        runs.append(dict(watch.seconds) | {"calls": dict(watch.calls)})

    timing = interleaved(timed, cfg, dev, cfg.slow_repeats, before=watch.reset)
    overheads, shares, ratios = [], [], []
    for sample, parts in zip(timing.samples, runs):
        wall = sample.seconds
        tokenizer = parts["encode"] + parts["decode"]
        overheads.append((wall - parts["transformer"] - tokenizer) / wall)
        shares.append(tokenizer / wall)
        ratios.append(parts["commit_decode"] * sample.peak_gflops)
        assert parts["calls"]["transformer"] == STEPS, parts["calls"]
    return {
        "decode_overhead_frac": max(0.0, med(overheads)),
        "tokenizer_frac": med(shares),
        "wall_seconds": timing.seconds,
        "commit_decode_seconds": med([r["commit_decode"] for r in runs]),
        # commit_decode seconds x the reference GFLOP/s measured next to it (load-neutral unit, see __main__)
        "commit_decode_peak_gflop": med(ratios),
        "peak_gflops": timing.peak_gflops,
        "parts": runs,
        "peak_rss_gb": rss,
        "generate_peak_rss_gb": rss,
        **timing.as_dict(),
    }


if __name__ == "__main__":
    child_main(measure)
