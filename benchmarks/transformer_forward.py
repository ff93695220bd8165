"""Transformer forward, B preset (tiny with --quick), batch 1 and 4, the full sequence 2 + 1024
(2 + 256 with --quick: the 4x8x8 tokens of a 32 px clip).

10-task, 174-class vocabulary (1024 codes + 174 classes + uncond + 10 prompts + [MASK]). FLOPs are the
analytic count of :func:`benchmarks.flops.transformer_forward_flops`.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.common import NUM_CLASSES, TASKS, Sizes, autocast, child_main, interleaved, maybe_compile, peak_rss_gb
from benchmarks.flops import transformer_forward_flops
from magvit.tokenizers import presets
from magvit.transformer import MaskedTransformer

BATCHES = (1, 4)


def num_tokens(cfg: Sizes) -> int:
    """t * h * w of the 3D-VQ preset at ``cfg.resolution`` (4 x 16 x 16 = 1024 for B at 128 px)."""
    mults = presets.channel_multipliers(cfg.preset, cfg.resolution)
    pools = len(mults) - 1
    return (cfg.frames // 2 ** sum(presets.temporal_downsample(mults))) * (cfg.resolution // 2**pools) ** 2


def build(cfg: Sizes, dev: torch.device, **overrides: Any) -> MaskedTransformer:
    """The preset transformer over the 10-task, 174-class vocabulary; codebook of the tokenizer preset."""
    return MaskedTransformer.from_preset(cfg.preset, codebook_size=presets.get_preset(cfg.preset).codebook_size,
                                         num_classes=NUM_CLASSES, prompts=TASKS, num_tokens=num_tokens(cfg),
                                         **overrides).to(dev)


def inputs(model: MaskedTransformer, batch: int, dev: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.codebook_size, (batch, model.num_tokens), generator=g)
    tokens[:, ::2] = model.vocab.mask_id  # half masked, as mid-decoding
    prompt = torch.full((batch,), model.vocab.prompt_id("fp"))
    label = torch.full((batch,), model.vocab.uncond_id)
    return tokens.to(dev), prompt.to(dev), label.to(dev)


def measure(cfg: Sizes, dev: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    model = maybe_compile(build(cfg, dev).eval(), args.compile)
    out: dict[str, Any] = {}
    for batch in BATCHES:
        x = inputs(model, batch, dev)

        def run() -> None:
            with torch.no_grad(), autocast(dev, args.compile):
                model(*x)

        run()  # warm-up (and compilation with --compile)
        if batch == BATCHES[0]:
            out["peak_rss_gb"] = peak_rss_gb()  # before any reference matmul
        timing = interleaved(run, cfg, dev, cfg.repeats)
        flops = transformer_forward_flops(model, batch)
        out[f"batch{batch}"] = {"flops": flops, "fraction": timing.fraction(flops), "seconds": timing.seconds,
                                "peak_gflops": timing.peak_gflops, **timing.as_dict()}
    out["transformer_forward_frac"] = min(out[f"batch{b}"]["fraction"] for b in BATCHES)
    return out


if __name__ == "__main__":
    child_main(measure)
