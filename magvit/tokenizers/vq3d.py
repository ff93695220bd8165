"""The 3D-VQ tokenizer of MAGVIT (paper Sec. 3.1; the authors' ``vqvae.py``): 16x128x128 -> 4x16x16 tokens.

3D convolutions throughout, average pooling (3D pools first, the 2D pool last) in the encoder and
nearest-upsample + conv mirroring it in the decoder. Registered as ``"vq3d"``:
``get_tokenizer("vq3d", preset="B", resolution=128, **overrides)``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from magvit.config import option_names
from magvit.errors import InputError
from magvit.tokenizers import presets
from magvit.tokenizers.tokenizer import VQTokenizer, as_list


class VQ3D(VQTokenizer):
    """The paper's 3D-VQ; see :class:`~magvit.tokenizers.tokenizer.VQTokenizer` for the arguments.

    Defaults are the B preset at 128 px with the paper's reflect padding.
    """

    spatial_dims = 3
    name = "vq3d"

    def to_network(self, video: Tensor) -> Tensor:
        return video

    def from_network(self, x: Tensor, batch: int) -> Tensor:
        return x

    def tokens_from_network(self, tokens: Tensor, batch: int) -> Tensor:
        return tokens

    def tokens_to_network(self, tokens: Tensor) -> Tensor:
        return tokens


def preset_arguments(tokenizer: type[VQTokenizer], preset: str, resolution: int, overrides: dict[str, Any]
                     ) -> dict[str, Any]:
    """Constructor arguments of ``tokenizer`` for ``preset`` at ``resolution`` with ``overrides`` applied.

    With ``quantizer="lfq"`` and no explicit ``embedding_dim`` the code dim becomes log2(codebook_size).
    """
    allowed = set(option_names(tokenizer) or ())
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


def build_vq3d(preset: str = "B", resolution: int = 128, **overrides: Any) -> VQ3D:
    """The ``"vq3d"`` factory: :class:`VQ3D` at ``preset`` (``tiny``/``B``/``L``) and ``resolution`` (64/128).

    Any constructor argument can be overridden, so ``build_vq3d(**model.config)`` rebuilds ``model``.
    """
    return VQ3D(**preset_arguments(VQ3D, preset, resolution, overrides))
