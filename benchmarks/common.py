"""Shared machinery of the benchmark children: sizes, the interleaved reference peak, timing, memory.

Every measurement runs in its own fresh Python process (``python -m benchmarks.<name>``) so that its
peak resident memory is its own. A child measures its workload and, right before every timed run, the
fp32 matmul rate (:func:`benchmarks.peak.matmul_gflops`); each run is divided by the peak measured next
to it, and the median of those per-run ratios is reported. On a shared, loaded machine this cancels most
of the load: when the other jobs slow the workload down they slow the matmul down too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
import torch

from benchmarks.peak import matmul_gflops

#: The ten tasks of the paper (SSv2 vocabulary: one prompt per task, 174 classes).
TASKS: tuple[str, ...] = ("fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp")
NUM_CLASSES = 174


@attrs.frozen
class Sizes:
    """What a run measures: B presets at 128 px (4x16x16 = 1024 tokens), or ``--quick``: tiny at 32 px (4x8x8)."""

    preset: str
    resolution: int
    frames: int = 16
    repeats: int = 3  # timed runs of a cheap workload (median)
    slow_repeats: int = 2  # timed runs of an expensive one (generation, training steps)
    peak_n: int = 2048  # reference matmul size
    peak_repeats: int = 3  # matmuls per reference measurement (median)
    ar_prefix: int = 64  # AR steps timed at each end of the sequence (the rest is extrapolated)
    threads: int | None = None  # intra-op threads; None = torch's default (all cores)


# One thread for --quick: on a loaded machine every multi-threaded op of a small model waits for a
# descheduled OpenMP worker (~10 ms per op), which would make the quick run take minutes.
QUICK = Sizes(preset="tiny", resolution=32, repeats=2, slow_repeats=1, peak_n=1024, peak_repeats=2, ar_prefix=32,
              threads=1)
FULL = Sizes(preset="B", resolution=128)


def sizes(quick: bool) -> Sizes:
    return QUICK if quick else FULL


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


# -- memory ---------------------------------------------------------------------------------------------


def proc_status_gb(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in GB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024 / 1e9  # kB
    except OSError:
        pass
    return None


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    peak = proc_status_gb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # kB on Linux


# -- interleaved timing ---------------------------------------------------------------------------------


@attrs.frozen
class Sample:
    """One timed run and the reference peak measured right before it."""

    seconds: float
    peak_gflops: float


@attrs.frozen
class Timing:
    samples: tuple[Sample, ...]

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def peak_gflops(self) -> float:
        return statistics.median(s.peak_gflops for s in self.samples)

    def fraction(self, flops: float) -> float:
        """Median over runs of ``(flops / seconds) / peak`` with the peak measured next to that run."""
        return statistics.median(flops / s.seconds / (s.peak_gflops * 1e9) for s in self.samples)

    def peak_seconds(self) -> float:
        """Median of ``seconds * peak``: wall time in units of "GFLOP at the reference rate" (load-neutral)."""
        return statistics.median(s.seconds * s.peak_gflops for s in self.samples)

    def as_dict(self) -> dict[str, Any]:
        return {"run_seconds": [s.seconds for s in self.samples], "run_peak_gflops": [s.peak_gflops for s in self.samples]}


def reference_dtype(dev: torch.device) -> torch.dtype:
    """The dtype of the reference matmul: float32 on the CPU (what runs there), bfloat16 on CUDA (what training
    runs there under ``bf16-mixed``), so that GPU results read as fractions of the bf16 peak."""
    return torch.bfloat16 if dev.type == "cuda" else torch.float32


def reference_peak(cfg: Sizes, dev: torch.device) -> float:
    return matmul_gflops(cfg.peak_n, repeats=cfg.peak_repeats, device=dev.type, dtype=reference_dtype(dev))


def interleaved(fn: Callable[[], object], cfg: Sizes, dev: torch.device, repeats: int,
                before: Callable[[], object] | None = None) -> Timing:
    """Time ``fn()`` ``repeats`` times, measuring the reference peak right before each run.

    ``before`` (untimed) runs before each timed run, e.g. to reset state.
    """
    samples = []
    for _ in range(repeats):
        peak = reference_peak(cfg, dev)
        if before is not None:
            before()
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        samples.append(Sample(time.perf_counter() - t0, peak))
    return Timing(tuple(samples))


# -- child entry point ----------------------------------------------------------------------------------


def child_main(measure: Callable[[Sizes, torch.device, argparse.Namespace], dict[str, Any]],
               argv: list[str] | None = None) -> None:
    """``[--quick] [--compile] [--threads N] --out FILE``: run ``measure``, write its dict as json.

    Each child module calls this under ``if __name__ == "__main__"``; the suite calls it in a process
    forked from a forkserver that has torch and magvit imported (a fresh process; no import cost).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dev = device()
    cfg = sizes(args.quick)
    if args.threads is not None:
        cfg = attrs.evolve(cfg, threads=args.threads)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    result = measure(cfg, dev, args)
    result["child_seconds"] = time.perf_counter() - t0
    result["child_final_rss_gb"] = peak_rss_gb()
    result["threads"] = torch.get_num_threads()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    sys.stdout.flush()


def run_module(module: str, argv: list[str]) -> None:
    """Forkserver target of the suite: ``child_main`` of module ``module``'s ``measure``."""
    child_main(importlib.import_module(module).measure, argv)


def maybe_compile(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile`` the module's ``forward`` in place (type, attributes and hooks unchanged) when ``enabled``.

    Compiling ``forward`` rather than the module lets a timer wrap the compiled call from outside.
    """
    if enabled:
        module.forward = torch.compile(module.forward)
    return module


def autocast(dev: torch.device, enabled: bool) -> Any:
    """bf16 autocast on CUDA with ``--compile``; fp32 on CPU (no autocast)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and dev.type == "cuda")

