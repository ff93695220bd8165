"""The per-frame 2D-VQ baseline (MAGVIT paper Sec. 3.1 and Table 7).

The same encoder/decoder as the 3D-VQ with 2D convolutions applied to every frame (T folded into the
batch): 8x8 spatial compression at 128 px (multipliers 1,2,2,4), 4x4 at 64 px (1,2,4), no temporal
compression, so ``downsample = (1, f, f)``. Its parameter names equal the 3D-VQ's, so its weights inflate
into a 3D-VQ (:mod:`magvit.tokenizers.inflation`). Registered as ``"vq2d"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from magvit.config import register_to_config
from magvit.tokenizers.tokenizer import VQTokenizer, fold_time, unfold_time
from magvit.tokenizers.vq3d import preset_arguments


class VQ2D(VQTokenizer):
    """Per-frame 2D-VQ; see :class:`~magvit.tokenizers.tokenizer.VQTokenizer` for the arguments."""

    spatial_dims = 2
    name = "vq2d"

    @register_to_config
    def __init__(
        self,
        *,
        filters: int = 64,
        channel_multipliers: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        codebook_size: int = 1024,
        embedding_dim: int = 256,
        norm_groups: int = 32,
        padding: str = "reflect",
        quantizer: str = "vq",
        commitment_cost: float = 0.25,
        entropy_weight: float = 0.1,
        entropy_temperature: float = 0.01,
        sync_across_ranks: bool = True,
        seed: int = 0,
        activation_checkpointing: bool = False,
    ) -> None:
        # The 3D-VQ's arguments without temporal_downsample: a per-frame network never pools in time.
        mults = self.config["channel_multipliers"]
        levels = len(mults) if isinstance(mults, list) else 1  # otherwise VQTokenizer names the error
        super().__init__(temporal_downsample=(False,) * (levels - 1), **self.config)

    def to_network(self, video: Tensor) -> Tensor:
        return fold_time(video)

    def from_network(self, x: Tensor, batch: int) -> Tensor:
        return unfold_time(x, batch)

    def tokens_from_network(self, tokens: Tensor, batch: int) -> Tensor:
        n, h, w = tokens.shape
        return tokens.reshape(batch, n // batch, h, w)

    def tokens_to_network(self, tokens: Tensor) -> Tensor:
        b, t, h, w = tokens.shape
        return tokens.reshape(b * t, h, w)


def build_vq2d(preset: str = "B", resolution: int = 128, **overrides: Any) -> VQ2D:
    """The ``"vq2d"`` factory: :class:`VQ2D` at ``preset`` and ``resolution``; overrides as for ``vq3d``."""
    return VQ2D(**preset_arguments(VQ2D, preset, resolution, overrides))
