"""Analytic FLOP counts (one multiply-add = 2 FLOPs). Elementwise work (norms, activations, softmax,
embedding lookups) is not counted: the fractions below are "useful matmul/conv FLOPs per second"."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from magvit.tokenizers.layers import Conv
from magvit.transformer import MaskedTransformer


def transformer_forward_flops(model: MaskedTransformer, batch: int) -> int:
    """FLOPs of one full-sequence forward of :class:`MaskedTransformer` (bidirectional, no prefix condition).

    With S = num_prefix + N positions, width d, MLP width m, L layers and K codebook logits::

        per layer  = 2 S (3 d^2)      QKV projection (fused, d -> 3d)
                   + 2 S d^2          attention output projection
                   + 2 S^2 d          Q K^T summed over heads (h * S^2 * d/h)
                   + 2 S^2 d          softmax(QK^T) V
                   + 2 S (2 d m)      MLP d -> m -> d
                   = 8 S d^2 + 4 S d m + 4 S^2 d
        head       = 2 S d^2          dense d -> d (run on every position)
                   + 2 S d K          tied output embedding, codebook rows only
        total      = batch * (L * per layer + head)

    B preset, S = 2 + 1024, d = 768, m = 3072, L = 12, K = 1024: 215.9 GFLOP per clip.
    """
    cfg = model.config
    s = model.vocab.num_prefix + model.num_tokens
    d, m, layers, k = cfg["hidden_size"], cfg["mlp_dim"], cfg["num_layers"], model.codebook_size
    per_layer = 8 * s * d * d + 4 * s * d * m + 4 * s * s * d
    head = 2 * s * d * d + 2 * s * d * k
    return batch * (layers * per_layer + head)


class ConvFlops:
    """Counts conv and dense FLOPs of every forward call under a module (forward hooks).

    Conv: ``2 * k^n * C_in * C_out * output voxels`` (= 2 * weight.numel() * prod(out spatial) * batch);
    Linear: ``2 * in * out * rows``. Backward passes are not seen (hooks fire on forward only).
    """

    def __init__(self) -> None:
        self.flops = 0

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(module, Conv):
            self.flops += 2 * module.weight.numel() * output.shape[0] * math.prod(output.shape[2:])
        else:  # nn.Linear
            self.flops += 2 * module.weight.numel() * (output.numel() // output.shape[-1])

    @contextmanager
    def count(self, *modules: nn.Module) -> Iterator[ConvFlops]:
        handles = [m.register_forward_hook(self._hook) for root in modules for m in root.modules()
                   if isinstance(m, (Conv, nn.Linear))]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
