"""Vector quantizers of the tokenizers (MAGVIT paper Sec. 3.1; the authors' ``videogvt/models/vqvae.py``).

* :class:`VectorQuantizer` (``"vq"``, the paper's): nearest code by squared L2, straight-through
  gradients ``q = x + sg(q - x)``, loss ``0.25 mean((sg(q) - x)^2) + 1.0 mean((q - sg(x))^2)
  + 0.1 entropy``; codebook init ``variance_scaling(1, 'fan_in', 'uniform')``.
* :class:`LookupFreeQuantizer` (``"lfq"``, MAGVIT-v2, Yu et al. 2024, Sec. 3.1): each latent channel is
  quantized to its sign, the token is the binary number of the signs, ``codebook_size = 2^dim``.

Both report ``perplexity`` (exp of the entropy of code usage in the batch) and ``usage`` (fraction of
codes used) so that codebook collapse is visible in the training logs.

Data parallel training (``sync_across_ranks``, on by default): under an initialised process group of more
than one rank and in training mode, "the batch" of the batch statistics is the global batch of all ranks, so
that a model trained on W ranks of B clips sees the entropy loss and the logs of one batch of W x B clips.
The entropy loss's mean distribution is the sum of ``p`` over all ranks divided by the global count
(:func:`batch_mean`), and ``perplexity``/``usage`` come from the summed code histogram. Per-sample terms
(commitment, codebook, per-sample entropy) stay local means, as every other loss under DDP. In eval mode
nothing is exchanged, so ranks that tokenise different amounts of data never wait on each other.

Precision: the forward pass runs with autocast off and the latents upcast to at least float32
(:func:`compute_dtype`), so distances, the nearest-code search, the losses and the entropy are float32
under bf16/fp16 autocast too; the straight-through output is returned in the input's dtype.
Why: the nearest-code search compares squared distances that often differ only in the third significant
digit, below the precision of bf16 (8 significant bits), and the entropy loss takes a softmax of the
distances scaled by 1/temperature = 100, so a rounding error of a distance is multiplied by 100 inside an
exponential.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.errors import InputError
from magvit.precision import autocast_off
from magvit.limits import check_bool

QUANTIZERS: tuple[str, ...] = ("vq", "lfq")


@attrs.frozen
class QuantizerOutput:
    """Result of quantizing latents ``[N, D, *grid]``.

    Attributes:
        quantized: straight-through quantized latents, same shape as the input.
        tokens: long code ids ``[N, *grid]``.
        loss: the total quantizer loss (weights applied), a scalar with gradient.
        commitment_loss, codebook_loss, entropy_loss: the unweighted parts (detached scalars).
        perplexity: exp(entropy of the batch's code histogram), detached.
        usage: fraction of the codebook used in the batch, detached.
    """

    quantized: Tensor
    tokens: Tensor
    loss: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor
    entropy_loss: Tensor
    perplexity: Tensor
    usage: Tensor


def _channels_last(z: Tensor) -> Tensor:
    """``[N, D, *grid]`` -> ``[N * prod(grid), D]`` (row-major over the grid)."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def _channels_first(flat: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`_channels_last` for a tensor shaped like ``like``."""
    n, d, *grid = like.shape
    return flat.reshape(n, *grid, d).movedim(-1, 1)


def syncs_across_ranks(module: nn.Module) -> bool:
    """Whether ``module`` (a quantizer) takes its batch statistics over all ranks in this call: its
    ``sync_across_ranks`` is on, it is in training mode and a process group of more than one rank is up."""
    return (
        bool(getattr(module, "sync_across_ranks", False))
        and module.training
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` whose backward all-reduces (sums) the incoming gradient over ranks, as
    ``torch.distributed.nn.functional.all_reduce`` (deprecated in the pinned torch) does.

    Why this, with DDP's gradient averaging, gives exactly the full-batch gradient: let ``S = sum_r S_r`` be
    the all-reduced sum of the ranks' local sums ``S_r`` and ``L(S)`` a term every rank computes from it (the
    same value on every rank), with ``g = dL/dS``. Each of the W ranks back-propagates ``g``; the backward
    sums them, so the gradient reaching ``S_r`` on rank r is ``W g``, and rank r's parameter gradient is
    ``W g dS_r/dtheta``. DDP (and FSDP) average parameter gradients over the W ranks:
    ``(1/W) sum_r W g dS_r/dtheta = g dS/dtheta``, the gradient of ``L`` computed on one process holding the
    whole batch. This holds for unequal local batch sizes too. A gather without this backward (gradient
    through the local part only) would give ``g dS/dtheta / W``.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def batch_mean(x: Tensor, across_ranks: bool = False) -> Tensor:
    """Mean of ``x`` over dim 0; with ``across_ranks``, over the rows of all ranks of the default process
    group (the differentiable sum over ranks divided by the summed row count; local counts may differ)."""
    if not across_ranks:
        return x.mean(0)
    count = torch.tensor(x.shape[0], dtype=torch.int64, device=x.device)
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return _SumOverRanks.apply(x.sum(0)) / count.to(x.dtype)


def code_histogram(tokens: Tensor, codebook_size: int, across_ranks: bool = False) -> Tensor:
    """Float64 count of each code in ``tokens`` (summed over the ranks with ``across_ranks``)."""
    counts = torch.bincount(tokens.reshape(-1), minlength=codebook_size).double()
    if across_ranks:
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return counts


def usage_stats(tokens: Tensor, codebook_size: int, across_ranks: bool = False) -> tuple[Tensor, Tensor]:
    """``(perplexity, usage)`` of the code histogram of ``tokens`` (:func:`code_histogram`), detached."""
    counts = code_histogram(tokens, codebook_size, across_ranks)
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return entropy.exp().float(), (counts > 0).float().mean()


def entropy_loss(logits: Tensor, across_ranks: bool = False) -> Tensor:
    """Mean per-sample entropy minus entropy of the batch-mean distribution (``losses.entropy_loss``).

    Minimising it makes each latent commit to one code (low per-sample entropy) while the batch spreads
    over many codes (high marginal entropy), which fights codebook collapse. With ``across_ranks`` the
    batch-mean distribution is over the global batch (:func:`batch_mean`); the per-sample term stays the
    local mean, as every other loss under DDP (its averaged gradient is the global mean's when the ranks'
    batches are equal).
    """
    log_p = F.log_softmax(logits, dim=-1)
    p = log_p.exp()
    per_sample = -(p * log_p).sum(-1).mean()
    avg_p = batch_mean(p, across_ranks)
    marginal = -(avg_p * torch.log(avg_p.clamp_min(1e-30))).sum()
    return per_sample - marginal


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the quantizers compute in for latents of ``dtype``: at least float32 (bf16/fp16 -> float32)."""
    return torch.promote_types(dtype, torch.float32)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour VQ with a learned ``[codebook_size, embedding_dim]`` codebook (``vqvae.VectorQuantizer``).

    Args:
        codebook_size, embedding_dim: the codebook shape (1024 x 256 for B and L).
        commitment_cost: weight of ``mean((sg(q) - x)^2)`` (0.25).
        codebook_weight: weight of ``mean((q - sg(x))^2)`` (``embedding_loss_ratio``, 1.0).
        entropy_weight: weight of :func:`entropy_loss` (0.1); 0 skips its computation.
        entropy_temperature: affinity ``-distance / temperature`` (0.01).
        sync_across_ranks: in training mode under a process group of more than one rank, take the entropy
            loss's batch-mean distribution and ``perplexity``/``usage`` over the global batch (module
            docstring). The codebook's gradient needs nothing here: DDP/FSDP reduce it as any parameter's.
    """

    def __init__(
        self,
        codebook_size: int,
        embedding_dim: int,
        *,
        commitment_cost: float = 0.25,
        codebook_weight: float = 1.0,
        entropy_weight: float = 0.1,
        entropy_temperature: float = 0.01,
        sync_across_ranks: bool = True,
    ) -> None:
        super().__init__()
        if codebook_size < 2 or embedding_dim < 1:
            raise InputError(f"need codebook_size >= 2 and embedding_dim >= 1, got {codebook_size}, {embedding_dim}")
        self.codebook_size = codebook_size
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        self.codebook_weight = codebook_weight
        self.entropy_weight = entropy_weight
        self.entropy_temperature = entropy_temperature
        self.sync_across_ranks = check_bool(type(self).__name__, "sync_across_ranks", sync_across_ranks)
        self.codebook = nn.Parameter(torch.empty(codebook_size, embedding_dim))

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """``variance_scaling(1.0, 'fan_in', 'uniform')``, as ``vqvae.VectorQuantizer``.

        Flax takes fan_in from axis -2 of a 2D array, i.e. the codebook size, so the bound is
        ``sqrt(3 / codebook_size)``.
        """
        bound = math.sqrt(3.0 / self.codebook_size)
        with torch.no_grad():
            self.codebook.uniform_(-bound, bound, generator=generator)

    def distances(self, flat: Tensor) -> Tensor:
        """Squared L2 distances ``[M, codebook_size]`` from ``flat`` ``[M, D]`` to every code, in ``flat``'s
        dtype (a codebook held in bf16, as under FSDP's mixed precision, is upcast)."""
        codebook = self.codebook.to(flat.dtype)
        return (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ codebook.t()
            + codebook.pow(2).sum(1)[None, :]
        )

    def forward(self, z: Tensor) -> QuantizerOutput:
        across_ranks = syncs_across_ranks(self)
        with autocast_off(z.device):  # the nearest-code search and the entropy need float32 (module docstring)
            flat = _channels_last(z).to(compute_dtype(z.dtype))
            distance = self.distances(flat)
            tokens_flat = distance.argmin(1)
            q_flat = F.embedding(tokens_flat, self.codebook.to(flat.dtype))
            commitment = (q_flat.detach() - flat).pow(2).mean()
            codebook = (q_flat - flat.detach()).pow(2).mean()
            if self.entropy_weight > 0:
                ent = entropy_loss(-distance / self.entropy_temperature, across_ranks)
            else:
                ent = distance.new_zeros(())
            loss = self.commitment_cost * commitment + self.codebook_weight * codebook + self.entropy_weight * ent
            q = _channels_first(flat + (q_flat - flat).detach(), z).to(z.dtype)  # straight-through estimator
            perplexity, usage = usage_stats(tokens_flat, self.codebook_size, across_ranks)
        tokens = tokens_flat.reshape(z.shape[0], *z.shape[2:])
        return QuantizerOutput(
            q, tokens, loss, commitment.detach(), codebook.detach(), ent.detach(), perplexity, usage
        )

    def lookup(self, tokens: Tensor) -> Tensor:
        """Code vectors of ``tokens`` ``[N, *grid]`` as latents ``[N, D, *grid]``."""
        return F.embedding(tokens, self.codebook).movedim(-1, 1)


class LookupFreeQuantizer(nn.Module):
    """Lookup-free quantization (MAGVIT-v2 Sec. 3.1): ``q = sign(z)``, token = binary number of signs.

    The entropy penalty ``E[H(p(z))] - H(E[p(z)])`` uses ``p(c | z) ~ exp(-|z - c|^2 / temperature)``
    over the implicit codebook ``{-1, 1}^D``. Because the distance splits over channels, ``p`` factorises
    into independent bits: the per-sample entropy is the exact sum of per-bit entropies; the batch
    entropy is approximated by the sum of per-bit marginal entropies (MAGVIT-v2's factorisation).
    There is no codebook to learn, hence no codebook loss. ``sync_across_ranks`` as for
    :class:`VectorQuantizer`: the per-bit marginals and the code histogram are then over the global batch.
    """

    def __init__(
        self,
        codebook_size: int,
        embedding_dim: int,
        *,
        commitment_cost: float = 0.25,
        entropy_weight: float = 0.1,
        entropy_temperature: float = 0.01,
        sync_across_ranks: bool = True,
    ) -> None:
        super().__init__()
        bits = int(round(math.log2(codebook_size))) if codebook_size > 1 else 0
        if codebook_size < 2 or 2**bits != codebook_size or embedding_dim != bits:
            raise InputError(
                f"lfq needs codebook_size = 2^embedding_dim (a power of two), got codebook_size={codebook_size}, "
                f"embedding_dim={embedding_dim}"
            )
        self.codebook_size = codebook_size
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        self.entropy_weight = entropy_weight
        self.entropy_temperature = entropy_temperature
        self.sync_across_ranks = check_bool(type(self).__name__, "sync_across_ranks", sync_across_ranks)
        self.register_buffer("bit_values", 2 ** torch.arange(bits), persistent=False)

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """No parameters: the codebook is implicit."""

    def forward(self, z: Tensor) -> QuantizerOutput:
        across_ranks = syncs_across_ranks(self)
        with autocast_off(z.device):  # sigmoid(4 z / 0.01) and its entropies in float32 (module docstring)
            flat = _channels_last(z).to(compute_dtype(z.dtype))
            bits = flat > 0
            q_flat = bits.to(flat.dtype) * 2 - 1
            commitment = (q_flat - flat).pow(2).mean()
            if self.entropy_weight > 0:
                # Per bit, |z - 1|^2 - |z + 1|^2 = -4z, so logit(bit = 1) = 4 z / temperature.
                p1 = torch.sigmoid(4 * flat / self.entropy_temperature)
                per_sample = _binary_entropy(p1).sum(-1).mean()
                marginal = _binary_entropy(batch_mean(p1, across_ranks)).sum()
                ent = per_sample - marginal
            else:
                ent = flat.new_zeros(())
            loss = self.commitment_cost * commitment + self.entropy_weight * ent
            q = _channels_first(flat + (q_flat - flat).detach(), z).to(z.dtype)
            tokens_flat = (bits.long() * self.bit_values).sum(-1)
            perplexity, usage = usage_stats(tokens_flat, self.codebook_size, across_ranks)
        return QuantizerOutput(
            q,
            tokens_flat.reshape(z.shape[0], *z.shape[2:]),
            loss,
            commitment.detach(),
            flat.new_zeros(()),
            ent.detach(),
            perplexity,
            usage,
        )

    def lookup(self, tokens: Tensor) -> Tensor:
        """``tokens`` ``[N, *grid]`` -> their ``+-1`` sign vectors ``[N, D, *grid]``."""
        bits = (tokens[..., None] // self.bit_values) % 2
        return (bits.float() * 2 - 1).movedim(-1, 1)


def _binary_entropy(p: Tensor) -> Tensor:
    """Entropy (nats) of a Bernoulli(p), elementwise."""
    q = 1 - p
    return -(p * torch.log(p.clamp_min(1e-30)) + q * torch.log(q.clamp_min(1e-30)))


def build_quantizer(
    kind: str,
    codebook_size: int,
    embedding_dim: int,
    *,
    commitment_cost: float,
    entropy_weight: float,
    entropy_temperature: float,
    codebook_weight: float = 1.0,
    sync_across_ranks: bool = True,
) -> VectorQuantizer | LookupFreeQuantizer:
    """Build the quantizer named ``kind`` (``"vq"`` or ``"lfq"``)."""
    if kind == "vq":
        return VectorQuantizer(
            codebook_size,
            embedding_dim,
            commitment_cost=commitment_cost,
            codebook_weight=codebook_weight,
            entropy_weight=entropy_weight,
            entropy_temperature=entropy_temperature,
            sync_across_ranks=sync_across_ranks,
        )
    if kind == "lfq":
        return LookupFreeQuantizer(
            codebook_size,
            embedding_dim,
            commitment_cost=commitment_cost,
            entropy_weight=entropy_weight,
            entropy_temperature=entropy_temperature,
            sync_across_ranks=sync_across_ranks,
        )
    raise InputError(f"quantizer must be one of {QUANTIZERS}, got {kind!r}")
