"""Quantizers under DDP: run under ``torchrun --nproc_per_node 2 ddp_quantizer.py OUT`` (as
``test_quantizer_distributed.py`` does), each rank feeds its share of fixed batches through DDP-wrapped
quantizers and saves what it saw to ``OUT/rank<r>.pt``. :func:`run_case` without a process group is the
one-process reference on the full batch."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from magvit.registry import get_tokenizer
from magvit.tokenizers.quantizer import LookupFreeQuantizer, QuantizerOutput, VectorQuantizer

#: the probes' input channels and latent grid length
IN_CHANNELS, LENGTH = 6, 8
#: the vq3d clips: 4 frames of 16 x 16 (one 1 x 4 x 4 token grid each at the tiny preset)
FRAMES, SIZE = 4, 16
#: the parts of a quantizer output compared between runs
PARTS = ("loss", "commitment_loss", "codebook_loss", "entropy_loss", "perplexity", "usage")


@attrs.frozen
class Case:
    """One comparison: a model (``"vq"``/``"lfq"`` probe or the tiny ``"vq3d"``), whether its quantizer syncs,
    and each rank's share of the full batch (the full batch is their sum)."""

    model: str
    sync: bool = True
    shares: tuple[int, ...] = (2, 2)


CASES: dict[str, Case] = {
    "vq": Case("vq"),
    "lfq": Case("lfq"),
    "vq_unequal": Case("vq", shares=(3, 1)),
    "lfq_unequal": Case("lfq", shares=(3, 1)),
    "vq_unsynced": Case("vq", sync=False),
    "lfq_unsynced": Case("lfq", sync=False),
    "vq3d": Case("vq3d"),
}


class Probe(nn.Module):
    """A 1x1 convolution to latents ``[N, D, LENGTH]``, then the quantizer. Its loss is the quantizer's plus
    a term of the straight-through output, so that every path of the gradient is exercised."""

    def __init__(self, quantizer: VectorQuantizer | LookupFreeQuantizer) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.proj = nn.Conv1d(IN_CHANNELS, quantizer.embedding_dim, 1)
        with torch.no_grad():
            self.proj.weight.normal_(0, 0.3, generator=generator)
            self.proj.bias.normal_(0, 0.1, generator=generator)
        self.quantizer = quantizer
        self.quantizer.reset_parameters(generator)

    def forward(self, x: Tensor) -> tuple[Tensor, QuantizerOutput]:
        out = self.quantizer(self.proj(x))
        return out.loss + out.quantized.pow(2).mean(), out


class Reconstruct(nn.Module):
    """The tiny 3D-VQ's pixel objective without the GAN and perceptual terms: L2 + the quantizer loss."""

    def __init__(self, sync: bool) -> None:
        super().__init__()
        self.tokenizer = get_tokenizer("vq3d", preset="tiny", resolution=SIZE, sync_across_ranks=sync)

    def forward(self, video: Tensor) -> tuple[Tensor, QuantizerOutput]:
        out = self.tokenizer(video)
        return F.mse_loss(out.recon, video) + out.quantizer.loss, out.quantizer


def build(case: Case) -> nn.Module:
    """The model of ``case``, initialised the same in every process, in float64 (so that the comparison
    measures the method, not the order of float32 sums)."""
    if case.model == "vq":
        return Probe(VectorQuantizer(8, 4, entropy_temperature=0.1, sync_across_ranks=case.sync)).double()
    if case.model == "lfq":
        return Probe(LookupFreeQuantizer(16, 4, entropy_temperature=1.0, sync_across_ranks=case.sync)).double()
    return Reconstruct(case.sync).double()


def full_batch(case: Case) -> Tensor:
    """The fixed full batch of ``case``: probe inputs ``[N, IN_CHANNELS, LENGTH]`` or clips in [0, 1]."""
    generator = torch.Generator().manual_seed(1)
    n = sum(case.shares)
    if case.model == "vq3d":
        return torch.rand(n, 3, FRAMES, SIZE, SIZE, generator=generator, dtype=torch.float64)
    return torch.randn(n, IN_CHANNELS, LENGTH, generator=generator, dtype=torch.float64)


def run_case(case: Case, rank: int, world: int) -> dict[str, Any]:
    """One forward and backward of ``case`` on this rank's share (the full batch when ``world == 1``).

    Each rank back-propagates its loss times ``world * n / N`` (1 for equal shares), so that DDP's average of
    the ranks' gradients of local means is the gradient of the global mean for unequal shares too.
    """
    batch = full_batch(case)
    if world == 1:
        local = batch
    else:
        start = sum(case.shares[:rank])
        local = batch[start:start + case.shares[rank]]
    model = build(case).train()
    wrapped = DistributedDataParallel(model) if world > 1 else model
    loss, out = wrapped(local)
    (loss * (world * local.shape[0] / batch.shape[0])).backward()
    parts = torch.stack([loss.detach()] + [getattr(out, name).double() for name in PARTS[1:]])
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return {"count": local.shape[0], "parts": parts, "tokens": out.tokens, "grads": grads}


def eval_record(case: Case, local: Tensor) -> dict[str, Any]:
    """An eval-mode forward pass on this rank alone: it must not wait on the other rank."""
    model = build(case).eval()
    with torch.no_grad():
        _, out = model(local)
    return {"tokens": out.tokens, "perplexity": out.perplexity, "usage": out.usage}


def main(out: str) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    results: dict[str, Any] = {name: run_case(case, rank, world) for name, case in CASES.items()}
    if rank == 0:
        results["eval"] = eval_record(CASES["vq"], full_batch(CASES["vq"])[:3])
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
