"""Activation checkpointing: the memory one training step saves with it and the time it costs.

Two workloads, each a forward + backward pass (no optimiser step: it is the same with and without):

* transformer: :class:`~magvit.transformer.MaskedTransformer` at the preset (B; tiny with ``--quick``), the
  masked-token loss of :func:`magvit.objective.token_loss` (task fp, COMMIT masking, dropout on) over batch 2
  of the ``2 + 1024`` sequence of a 16x128x128 clip, pre-tokenised; checkpointing runs each block under
  ``torch.utils.checkpoint``.
* tokenizer: the 3D-VQ at the preset, one 16x128x128 clip (32 px with ``--quick``), its L2 reconstruction loss
  plus the quantizer loss (no discriminator, no perceptual loss); checkpointing runs each encoder and decoder
  level under it.

Each workload builds two models from the same seed, one with ``activation_checkpointing=False`` and one with
``True``, in one process, with the allocator setting of ``magvit fit`` on the CPU
(:func:`magvit.kernels.malloc.keep_freed_memory`).

Memory: before a measured step the heap's free pages go back to the kernel
(:func:`magvit.kernels.malloc.release_freed_memory`), the resident set is read (weights and gradients of both
models, the inputs, the imported libraries) and the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``);
the step's figure is the peak resident set during the step above that base (on CUDA: the peak of
``torch.cuda.max_memory_allocated`` above the memory allocated before the step). The modes alternate and the median
over ``slow_repeats`` steps per mode (2 at B, 1 with ``--quick``) is reported.

Time: the two modes alternate step by step (off, on, off, on, ...) after an untimed step of each, with the
reference matmul rate measured right before every step (:func:`benchmarks.common.interleaved`); the overhead is
the ratio of the median step times, and also the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import attrs
import torch

from benchmarks.common import Sample, Sizes, Timing, child_main, interleaved, peak_rss_gb, proc_status_gb
from benchmarks.transformer_forward import build
from magvit.kernels.malloc import keep_freed_memory, release_freed_memory
from magvit.objective import token_loss
from magvit.registry import get_task, get_tokenizer
from magvit.tokenizers.losses import l2_loss

MODES = (False, True)  # activation_checkpointing off, on
TRANSFORMER_BATCH = 2


@attrs.frozen
class Workload:
    """One training step of a model built with activation checkpointing off (``steps[False]``) and on."""

    steps: dict[bool, Callable[[], None]]
    zero_grad: dict[bool, Callable[[], None]]
    parameters: int


def _rss_gb() -> float:
    """Resident set size now (``VmRSS``), or 0.0 where ``/proc`` is missing."""
    rss = proc_status_gb("VmRSS")
    return 0.0 if rss is None else rss


def _reset_peak_rss() -> bool:
    """Set the peak-RSS mark (``VmHWM``) to the current resident set; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _zero_grad(model: torch.nn.Module) -> Callable[[], None]:
    # in place, so that the gradients stay allocated and belong to the base, not to the step's peak
    return lambda: model.zero_grad(set_to_none=False)


def transformer_workload(cfg: Sizes, dev: torch.device) -> Workload:
    models = {on: build(cfg, dev, activation_checkpointing=on).train() for on in MODES}
    b, n = TRANSFORMER_BATCH, models[False].num_tokens
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, models[False].codebook_size, (b, n), generator=g).to(dev)
    cond_tokens = torch.randint(0, models[False].codebook_size, (b, n), generator=g).to(dev)
    cond_mask = torch.zeros(b, n, dtype=torch.bool, device=dev)
    cond_mask[:, : n // 4] = True  # fp with one condition frame: the first latent frame of 4
    task = get_task("fp")

    def step(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            # the same masks in both modes: the step's randomness from a fixed seed
            g = torch.Generator().manual_seed(1)
            token_loss(model, tokens, cond_tokens, cond_mask, None, task, g).loss.backward()

        return run

    return Workload({on: step(m) for on, m in models.items()}, {on: _zero_grad(m) for on, m in models.items()},
                    sum(p.numel() for p in models[False].parameters()))


def tokenizer_workload(cfg: Sizes, dev: torch.device) -> Workload:
    models = {on: get_tokenizer("vq3d", preset=cfg.preset, resolution=cfg.resolution,
                                activation_checkpointing=on).to(dev).train() for on in MODES}
    video = torch.rand(1, 3, cfg.frames, cfg.resolution, cfg.resolution,
                       generator=torch.Generator().manual_seed(0)).to(dev)

    def step(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            out = model(video)
            (l2_loss(video, out.recon) + out.quantizer.loss).backward()

        return run

    return Workload({on: step(m) for on, m in models.items()}, {on: _zero_grad(m) for on, m in models.items()},
                    sum(p.numel() for p in models[False].parameters()))


def _warm_up(work: Workload) -> None:
    """One untimed step per mode: the first step of a process initialises kernels and grows the heap."""
    for on in MODES:
        work.zero_grad[on]()
        work.steps[on]()


def _memory(work: Workload, cfg: Sizes, dev: torch.device) -> dict[str, Any] | None:
    """Peak memory of a step above the base before it, per mode (GB): resident set on the CPU, allocated
    memory on CUDA; None where the CPU peak cannot be reset."""
    peaks: dict[bool, list[float]] = {on: [] for on in MODES}
    base = 0.0
    for _ in range(cfg.slow_repeats):
        for on in MODES:
            work.zero_grad[on]()
            if dev.type == "cuda":
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated() / 1e9
                torch.cuda.reset_peak_memory_stats()
                work.steps[on]()
                torch.cuda.synchronize()
                peaks[on].append(torch.cuda.max_memory_allocated() / 1e9 - base)
                continue
            release_freed_memory()
            base = _rss_gb()
            if not _reset_peak_rss():
                return None
            work.steps[on]()
            peaks[on].append(peak_rss_gb() - base)
    off, on = (statistics.median(peaks[m]) for m in MODES)
    return {"off_gb": off, "on_gb": on, "saved_gb": off - on, "saved_frac": (off - on) / off, "base_gb": base,
            "off_samples_gb": peaks[False], "on_samples_gb": peaks[True]}


def _time(work: Workload, cfg: Sizes, dev: torch.device) -> dict[str, Any]:
    samples: dict[bool, list[Sample]] = {on: [] for on in MODES}
    for _ in range(cfg.repeats):
        for on in MODES:
            samples[on] += interleaved(work.steps[on], cfg, dev, 1, before=work.zero_grad[on]).samples
    off, on = (Timing(tuple(samples[m])) for m in MODES)
    pairs = [b.seconds / a.seconds for a, b in zip(off.samples, on.samples, strict=True)]
    return {"off_seconds": off.seconds, "on_seconds": on.seconds, "overhead_frac": on.seconds / off.seconds - 1,
            "pair_overhead_frac": statistics.median(pairs) - 1,
            # seconds x reference GFLOP/s measured next to each step: load changes between steps cancel
            "load_neutral_overhead_frac": on.peak_seconds() / off.peak_seconds() - 1,
            "off": off.as_dict(), "on": on.as_dict()}


def _measure_workload(build_workload: Callable[[Sizes, torch.device], Workload], cfg: Sizes,
                      dev: torch.device) -> dict[str, Any]:
    work = build_workload(cfg, dev)
    _warm_up(work)
    rss = peak_rss_gb()  # the process's peak so far: the memory phase resets the mark
    memory = _memory(work, cfg, dev)
    _warm_up(work)  # the memory phase gave the heap back: grow it again before timing
    return {"parameters": work.parameters, "memory": memory, "time": _time(work, cfg, dev),
            "warm_peak_rss_gb": rss}


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    if dev.type == "cpu":
        keep_freed_memory()  # as `magvit fit` does on the CPU (magvit/kernels/malloc.py)
    out: dict[str, Any] = {"preset": cfg.preset, "resolution": cfg.resolution,
                           "transformer_batch": TRANSFORMER_BATCH, "tokenizer_batch": 1}
    out["transformer"] = _measure_workload(transformer_workload, cfg, dev)
    out["tokenizer"] = _measure_workload(tokenizer_workload, cfg, dev)
    # the process's peak: the larger of the marks before each memory phase and the one since the last reset
    out["peak_rss_gb"] = max(peak_rss_gb(), *(out[k]["warm_peak_rss_gb"] for k in ("transformer", "tokenizer")))
    return out


if __name__ == "__main__":
    child_main(measure)
