"""BERT's dropouts for training on the CPU: masks from 16-bit random draws, and attention dropout written out.

MAGVIT's transformer is BERT with dropout 0.1 on the hidden states and on the attention probabilities
(the authors' ``videogvt/models/simplified_bert.py``). On CUDA, ``F.dropout`` and
``scaled_dot_product_attention`` do both in fused kernels. On the CPU:

* ``bernoulli_`` makes one generator call per element; :func:`dropout_keep_mask` cuts each 64-bit random
  word into four 16-bit uniforms, a quarter of the generator calls, with the rate exact to 2^-17 (0.1 is
  6554 / 65536);
* SDPA's fused CPU kernels refuse dropout and its math fallback adds four passes over the
  ``[B, heads, L, L]`` scores, so :func:`attention_with_dropout` writes the formula out.

Which of the two a module uses is :class:`magvit.kernels.KernelSettings` ``cpu_dropout``, read when the module
is built. Both run on any device. Timings: benchmarks/README.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit import kernels
from magvit.errors import InputError

_MASK_LEVELS = 1 << 16


def dropout_keep_mask(
    shape: Sequence[int], p: float, device: torch.device | str = "cpu", *, out: Tensor | None = None
) -> tuple[Tensor, float]:
    """A keep-mask of ``shape`` that drops with probability ``round(p * 2^16) / 2^16``, and the
    ``1 / P(keep)`` scale that keeps activations unbiased.

    Each 64-bit word of the global torch RNG gives four 16-bit uniforms, where ``bernoulli_`` makes one
    generator call per element; the drop rate differs from ``p`` by less than 2^-17. The mask is bool, or
    written into ``out`` as 0/1 in ``out``'s dtype: on the CPU a float mask applied by multiplication is much
    cheaper than a bool one through ``torch.where`` (benchmarks/README.md).
    """
    n = math.prod(shape)
    drop = round(p * _MASK_LEVELS)
    if not 0 <= drop < _MASK_LEVELS:
        raise InputError(f"dropout rate must be in [0, 1), got {p}")
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    uniform16 = words.view(torch.int16)[:n].view(tuple(shape))  # uniform on [-2^15, 2^15)
    threshold = drop - _MASK_LEVELS // 2
    keep = uniform16 >= threshold if out is None else torch.ge(uniform16, threshold, out=out)
    return keep, _MASK_LEVELS / (_MASK_LEVELS - drop)


class Dropout(nn.Module):
    """``nn.Dropout`` whose training masks come from :func:`dropout_keep_mask`'s 16-bit draws when
    ``cpu_dropout`` (:func:`magvit.kernels.current` when built), else from ``F.dropout``. No parameters, so
    checkpoints are those of ``nn.Dropout``."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise InputError(f"dropout rate must be in [0, 1), got {p}")
        self.p = p
        self.cpu_dropout = kernels.current().cpu_dropout

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.cpu_dropout:
            return F.dropout(x, self.p, training=True)
        keep, scale = dropout_keep_mask(x.shape, self.p, x.device, out=torch.empty_like(x))
        return x * keep.mul_(scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _AttentionDropout(torch.autograd.Function):
    """``dropout(softmax(q k^T / sqrt(d))) v`` over ``[B, heads, L, d]``, one sample at a time.

    What the autograd graph of the written-out formula costs on the CPU: a bool mask applied with
    ``torch.where`` (several times a float multiply per element), the mask and the masked
    probabilities saved, and a separate softmax-backward pass. Here the mask is a 0/1 float tensor used
    once and dropped, and the backward pass needs only ``P`` and ``K = keep * P``: with
    ``dK = scale * dO v^T``, ``dS = P * (keep * dK - D) = K * dK - P * D`` where
    ``D_i = sum_j keep_ij dK_ij P_ij = dO_i . out_i`` (the identity flash attention uses), an ``L x d``
    product rather than a pass over ``L x L``. One sample at a time bounds the temporaries to one
    sample's ``heads x L x L``.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, p: float, causal: bool) -> Tensor:  # type: ignore[override]
        batch, heads, length, dim = q.shape
        keys = k.shape[2]
        q = q * dim**-0.5
        future = _future_mask(length, keys, q.device) if causal else None
        out = q.new_empty(batch, heads, length, v.shape[-1])
        keep = q.new_empty(heads, length, keys)
        saved, scale = [], 1.0
        for b in range(batch):
            # Fresh results rather than ``out=`` slices, which the CPU matmul filled through a copy.
            probs = torch.matmul(q[b], k[b].transpose(-2, -1))
            if future is not None:
                probs.masked_fill_(future, float("-inf"))
            torch.softmax(probs, -1, out=probs)  # in place: the CPU kernel finishes a row before writing it
            mask, scale = dropout_keep_mask(probs.shape, p, q.device, out=keep)
            kept = probs * mask
            out[b] = torch.matmul(kept, v[b])
            saved += [probs, kept]
        out.mul_(scale)
        ctx.save_for_backward(q, k, v, out, *saved)
        ctx.scale, ctx.dim = scale, dim
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, *saved = ctx.saved_tensors
        rows = torch.linalg.vecdot(grad_out, out).unsqueeze_(-1)  # D_i = dO_i . out_i
        grad_out = grad_out * ctx.scale
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for b in range(q.shape[0]):
            probs, kept = saved[2 * b], saved[2 * b + 1]
            # The L x L operand never transposed: the CPU matmul copied a transposed one.
            grad_v[b] = torch.matmul(grad_out[b].transpose(-2, -1), kept).transpose(-2, -1)
            g = torch.matmul(grad_out[b], v[b].transpose(-2, -1))
            g.mul_(kept).addcmul_(probs, rows[b], value=-1.0)  # dS = K * dK - P * D
            grad_q[b] = torch.matmul(g, k[b])
            grad_k[b] = torch.matmul(q[b].transpose(-2, -1), g).transpose(-2, -1)
        grad_q.mul_(ctx.dim**-0.5)
        return grad_q, grad_k, grad_v, None, None


def _future_mask(length: int, keys: int, device: torch.device) -> Tensor:
    return torch.ones(length, keys, dtype=torch.bool, device=device).triu(1 + keys - length)


def attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, p: float, causal: bool = False) -> Tensor:
    """``dropout(softmax(q k^T / sqrt(d))) v`` over ``[B, heads, L, d]``: attention dropout as in BERT
    (``videogvt/models/simplified_bert.py``), for CPU training (no attention mask). The masks are :func:`dropout_keep_mask`'s
    16-bit draws from the global torch RNG, one sample after another; the ``1 / P(keep)`` scale is applied
    to the output."""
    return _AttentionDropout.apply(q, k, v, p, causal)
