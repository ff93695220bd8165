"""The 3D-VQ tokenizer of MAGVIT (paper Sec. 3.1; the authors' ``vqvae.py``): 16x128x128 -> 4x16x16 tokens.

3D convolutions throughout, average pooling (3D pools first, the 2D pool last) in the encoder and
nearest-upsample + conv mirroring it in the decoder. Registered as ``"vq3d"``:
``get_tokenizer("vq3d", preset="B", resolution=128, **overrides)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from magvit.errors import InputError
from magvit.tokenizers import presets
from magvit.tokenizers.tokenizer import VQTokenizer, as_list


class VQ3D(VQTokenizer):
    """The paper's 3D-VQ; see :class:`~magvit.tokenizers.tokenizer.VQTokenizer` for the arguments.

    Defaults are the B preset at 128 px with the paper's reflect padding.
    """

    spatial_dims = 3

    def __init__(
        self,
        *,
        filters: int = 64,
        channel_multipliers: Sequence[int] = (1, 2, 2, 4),
        temporal_downsample: Sequence[bool] = (True, True, False),
        num_res_blocks: int = 2,
        codebook_size: int = 1024,
        embedding_dim: int = 256,
        norm_groups: int = 32,
        padding: str = "reflect",
        quantizer: str = "vq",
        commitment_cost: float = 0.25,
        entropy_weight: float = 0.1,
        entropy_temperature: float = 0.01,
        seed: int = 0,
    ) -> None:
        config = dict(
            filters=filters,
            channel_multipliers=as_list(channel_multipliers),  # checked as ints by VQTokenizer
            temporal_downsample=as_list(temporal_downsample),
            num_res_blocks=num_res_blocks,
            codebook_size=codebook_size,
            embedding_dim=embedding_dim,
            norm_groups=norm_groups,
            padding=padding,
            quantizer=quantizer,
            commitment_cost=commitment_cost,
            entropy_weight=entropy_weight,
            entropy_temperature=entropy_temperature,
            seed=seed,
        )
        super().__init__(**config)
        self._config = config

    def to_network(self, video: Tensor) -> Tensor:
        return video

    def from_network(self, x: Tensor, batch: int) -> Tensor:
        return x

    def tokens_from_network(self, tokens: Tensor, batch: int) -> Tensor:
        return tokens

    def tokens_to_network(self, tokens: Tensor) -> Tensor:
        return tokens


def preset_arguments(preset: str, resolution: int, overrides: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    """Constructor arguments of ``preset`` at ``resolution`` with ``overrides`` applied.

    With ``quantizer="lfq"`` and no explicit ``embedding_dim`` the code dim becomes log2(codebook_size).
    """
    unknown = set(overrides) - allowed
    if unknown:
        raise InputError(f"unknown tokenizer arguments {sorted(unknown)}; expected a subset of {sorted(allowed)}")
    p = presets.get_preset(preset)
    mults = presets.channel_multipliers(preset, resolution)
    args: dict[str, Any] = dict(
        filters=p.filters,
        channel_multipliers=mults,
        num_res_blocks=p.num_res_blocks,
        codebook_size=p.codebook_size,
        embedding_dim=p.embedding_dim,
        norm_groups=p.norm_groups,
    )
    given = as_list(overrides.get("channel_multipliers", mults))
    if "temporal_downsample" in allowed and isinstance(given, list):  # otherwise the constructor names the error
        args["temporal_downsample"] = presets.temporal_downsample(tuple(given))
    args.update(overrides)
    if args.get("quantizer") == "lfq" and "embedding_dim" not in overrides and isinstance(args["codebook_size"], int):
        args["embedding_dim"] = max(1, args["codebook_size"].bit_length() - 1)
    return args


_ARGS_3D = {
    "filters", "channel_multipliers", "temporal_downsample", "num_res_blocks", "codebook_size", "embedding_dim",
    "norm_groups", "padding", "quantizer", "commitment_cost", "entropy_weight", "entropy_temperature", "seed",
}  # fmt: skip


def build_vq3d(preset: str = "B", resolution: int = 128, **overrides: Any) -> VQ3D:
    """The ``"vq3d"`` factory: :class:`VQ3D` at ``preset`` (``tiny``/``B``/``L``) and ``resolution`` (64/128).

    Any constructor argument can be overridden, so ``build_vq3d(**model.config)`` rebuilds ``model``.
    """
    return VQ3D(**preset_arguments(preset, resolution, overrides, _ARGS_3D))
