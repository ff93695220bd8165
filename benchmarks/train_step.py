"""One training step of each stage, as FLOP/s fractions of the reference peak.

* tokenizer: generator step (3D-VQ forward, L2 + quantizer + adversarial loss through the discriminator,
  backward, optimiser step) then discriminator step (real and fake clips in one pass, R1 penalty with a
  double backward, optimiser step); batch 1 clip of 16x128x128 (B; tiny at 32 px with --quick), no
  perceptual loss file.
* transformer: masked-token step of :func:`magvit.objective.token_loss` (task fp, COMMIT masking,
  dropout on) + backward + optimiser step, batch 2, pre-tokenised (the frozen tokenizer's encode is not
  in it).

Both use the trainer's optimiser (:func:`magvit.train.optim.make_optimizer`: fused AdamW where PyTorch has it)
and, on the CPU, the allocator setting of ``magvit fit`` (:func:`magvit.kernels.malloc.keep_freed_memory`).

The fraction uses the model-FLOPs convention ``3 x forward FLOPs`` (forward + 2x for backward) with
forward FLOPs counted analytically (conv hooks / the transformer formula). The tokenizer step really
executes more than that (the R1 penalty differentiates twice through the discriminator), so the
count of ``torch.utils.flop_counter.FlopCounterMode`` over the warm-up step is reported too
(``executed_frac``).

Both warm up with :data:`WARMUP_STEPS` untimed steps: the first creates the optimiser state (AdamW's
moments: 0.7 GB for the B transformer) and the second still grows the heap around it. Measured at B, 6
steps in one process: 10.8 s for the second step, 8.5-8.9 s for every later one; the steady state is what
a training run spends its time in.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import TASKS, Sizes, autocast, child_main, interleaved, maybe_compile, peak_rss_gb
from benchmarks.flops import ConvFlops, transformer_forward_flops
from benchmarks.transformer_forward import build
from magvit.kernels.malloc import keep_freed_memory
from magvit.objective import token_loss
from magvit.registry import get_task, get_tokenizer
from magvit.tokenizers.discriminator import build_discriminator
from magvit.tokenizers.objective import VQGANObjective
from magvit.train.optim import OptimConfig, make_optimizer
from magvit.train.tokenizer_stage import TOKENIZER_OPTIM

TRANSFORMER_BATCH = 2
WARMUP_STEPS = 2


def tokenizer_step(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    if dev.type == "cpu":
        keep_freed_memory()  # as `magvit fit` does on the CPU (magvit/kernels/malloc.py)
    tok = get_tokenizer("vq3d", preset=cfg.preset, resolution=cfg.resolution).to(dev).train()
    disc = build_discriminator(cfg.preset, cfg.resolution, cfg.frames).to(dev).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no perceptual weights": expected, no file on a benchmark machine
        objective = VQGANObjective(tok, disc)
    opt_g = make_optimizer(tok, TOKENIZER_OPTIM)  # the trainer's optimiser (fused AdamW where available)
    opt_d = make_optimizer(disc, TOKENIZER_OPTIM)
    video = torch.rand(1, 3, cfg.frames, cfg.resolution, cfg.resolution,
                       generator=torch.Generator().manual_seed(0)).to(dev)

    def step() -> None:
        loss, recon, _ = objective.generator_loss(video, 0)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        d_loss, _ = objective.discriminator_loss(video, recon.detach(), 0)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

    forward = ConvFlops()
    with forward.count(tok, disc), FlopCounterMode(display=False) as executed:
        step()  # the first warm-up step, counted
    for _ in range(WARMUP_STEPS - 1):
        step()
    rss = peak_rss_gb()
    timing = interleaved(step, cfg, dev, cfg.slow_repeats)
    model_flops = 3 * forward.flops
    return {"forward_flops": forward.flops, "model_flops": model_flops, "executed_flops": executed.get_total_flops(),
            "frac": timing.fraction(model_flops), "executed_frac": timing.fraction(executed.get_total_flops()),
            "seconds": timing.seconds, "peak_gflops": timing.peak_gflops, "peak_rss_gb": rss, **timing.as_dict()}


def transformer_step(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    if dev.type == "cpu":
        keep_freed_memory()  # as `magvit fit` does on the CPU (magvit/kernels/malloc.py)
    model = maybe_compile(build(cfg, dev).train(), args.compile)
    opt = make_optimizer(model, OptimConfig(lr=1e-4, betas=(0.9, 0.96), weight_decay=0.045))  # the authors'
    b, n = TRANSFORMER_BATCH, model.num_tokens
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.codebook_size, (b, n), generator=g).to(dev)
    cond_tokens = torch.randint(0, model.codebook_size, (b, n), generator=g).to(dev)
    cond_mask = torch.zeros(b, n, dtype=torch.bool, device=dev)
    cond_mask[:, : n // 4] = True  # fp with one condition frame: the first latent frame of 4
    task = get_task("fp")
    assert task.prompt in TASKS

    def step() -> None:
        with autocast(dev, args.compile):
            out = token_loss(model, tokens, cond_tokens, cond_mask, None, task, g)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    for _ in range(WARMUP_STEPS):
        step()
    rss = peak_rss_gb()
    timing = interleaved(step, cfg, dev, cfg.slow_repeats)
    model_flops = 3 * transformer_forward_flops(model, b)
    return {"batch": b, "model_flops": model_flops, "frac": timing.fraction(model_flops), "seconds": timing.seconds,
            "clips_per_second": b / timing.seconds,
            # clips/s divided by the reference GFLOP/s next to it: load-neutral, compared with the reader's
            "clips_per_peak_gflop": b / timing.peak_seconds(),
            "peak_gflops": timing.peak_gflops, "peak_rss_gb": rss, **timing.as_dict()}
