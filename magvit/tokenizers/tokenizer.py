"""The VQ tokenizer shared by the 3D-VQ and the per-frame 2D-VQ (MAGVIT paper Sec. 3.1).

:class:`VQTokenizer` = :class:`~magvit.tokenizers.autoencoder.Encoder` -> quantizer ->
:class:`~magvit.tokenizers.autoencoder.Decoder`, implementing the :class:`magvit.protocols.Tokenizer`
protocol with input validation. Subclasses say how a video meets the network: the 3D-VQ feeds
``[B, 3, T, H, W]`` as is, the 2D-VQ folds T into the batch.

``config`` holds the constructor arguments as plain values (:mod:`magvit.config`), so
``get_tokenizer(tokenizer.name, **tokenizer.config)`` rebuilds the same architecture from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor, nn

from magvit.config import register_to_config
from magvit.errors import InputError
from magvit.kernels import current as current_kernels
from magvit.kernels import lean_route
from magvit.limits import check_bool, check_int, check_number, check_parameter_count
from magvit.tokenizers.autoencoder import Decoder, Encoder
from magvit.tokenizers.layers import check_padding, init_autoencoder_
from magvit.tokenizers.quantizer import QuantizerOutput, build_quantizer
from magvit.video import check_video

# Tolerance on the [0, 1] range check: resampling can overshoot by float rounding.
_RANGE_TOLERANCE = 1e-3


# Upper bounds of the size arguments (magvit.limits): far above the paper's models (filters 128, four
# levels, codebook 1024 x 256), they only refuse absurd values from a forged or corrupt config.
MAX_FILTERS = 4096
MAX_LEVELS = 8
MAX_MULTIPLIER = 64
MAX_RES_BLOCKS = 32
MAX_CODEBOOK = 2**20
MAX_EMBEDDING_DIM = 4096


def parameter_bound(spatial_dims: int, filters: int, channel_multipliers: Sequence[int], num_res_blocks: int,
                    codebook_size: int, embedding_dim: int) -> int:
    """An upper bound of the parameters of a :class:`VQTokenizer` of this size, computed without building it.

    Every conv is counted at the widest level's width: ``2 (levels + 1) num_res_blocks`` residual blocks of
    two convs and a 1x1 skip in encoder and decoder, plus the in/out and upsampling convs.
    """
    width = filters * max(channel_multipliers)
    kernel = 3**spatial_dims
    levels = len(channel_multipliers)
    convs = 2 * (levels + 1) * num_res_blocks * 3 + levels + 4
    return convs * kernel * width * width + 2 * kernel * width * embedding_dim + codebook_size * embedding_dim


def as_list(value: Any) -> Any:
    """A list of a sequence's items (plain config values); anything else unchanged, for the checks to name."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else value


def _check_arguments(owner: str, spatial_dims: int, filters: Any, channel_multipliers: Any,
                     temporal_downsample: Any, num_res_blocks: Any, codebook_size: Any, embedding_dim: Any,
                     norm_groups: Any) -> None:
    """Types, ranges, GroupNorm divisibility and the implied size of the arguments, before any allocation."""
    check_int(owner, "filters", filters, 1, MAX_FILTERS)
    if isinstance(channel_multipliers, (str, bytes)) or not isinstance(channel_multipliers, Sequence) \
            or not 1 <= len(channel_multipliers) <= MAX_LEVELS:
        raise InputError(f"{owner}: channel_multipliers must be a list of 1 to {MAX_LEVELS} integers, "
                         f"got {channel_multipliers!r}")
    for m in channel_multipliers:
        check_int(owner, "each of channel_multipliers", m, 1, MAX_MULTIPLIER)
    if isinstance(temporal_downsample, (str, bytes)) or not isinstance(temporal_downsample, Sequence) \
            or not all(isinstance(t, bool) for t in temporal_downsample):
        raise InputError(f"{owner}: temporal_downsample must be a list of true/false, got {temporal_downsample!r}")
    check_int(owner, "num_res_blocks", num_res_blocks, 0, MAX_RES_BLOCKS)
    check_int(owner, "codebook_size", codebook_size, 2, MAX_CODEBOOK)
    check_int(owner, "embedding_dim", embedding_dim, 1, MAX_EMBEDDING_DIM)
    check_int(owner, "norm_groups", norm_groups, 1, filters)
    widths = sorted({filters * m for m in channel_multipliers})
    if any(w % norm_groups for w in widths):
        raise InputError(f"{owner}: norm_groups ({norm_groups}) must divide every level's width "
                         f"(filters x channel_multipliers = {widths})")
    count = parameter_bound(spatial_dims, filters, channel_multipliers, num_res_blocks, codebook_size, embedding_dim)
    check_parameter_count(owner, count, f"filters={filters}, channel_multipliers={list(channel_multipliers)}, "
                                       f"num_res_blocks={num_res_blocks}, codebook_size={codebook_size}, "
                                       f"embedding_dim={embedding_dim}")


@attrs.frozen
class TokenizerOutput:
    """What :meth:`VQTokenizer.forward` returns for training.

    Attributes:
        recon: the reconstruction ``[B, 3, T, H, W]``, not clipped (losses see the raw output).
        quantizer: the :class:`~magvit.tokenizers.quantizer.QuantizerOutput` (loss, tokens, usage).
    """

    recon: Tensor
    quantizer: QuantizerOutput


class VQTokenizer(nn.Module):
    """Encoder + quantizer + decoder; see :class:`~magvit.tokenizers.vq3d.VQ3D` and ``VQ2D``.

    Args:
        filters: base width (64 for B, 128 for L).
        channel_multipliers: width multiplier per level; there is one pool per level after the first.
        temporal_downsample: per pool, whether it also halves T (ignored by the 2D-VQ).
        num_res_blocks: residual blocks per level, in encoder and decoder alike.
        codebook_size, embedding_dim: the codebook (1024 x 256).
        norm_groups: GroupNorm groups (32).
        padding: conv padding, ``"reflect"`` (paper), ``"zeros"`` (released configs) or ``"replicate"``.
        quantizer: ``"vq"`` (paper) or ``"lfq"`` (MAGVIT-v2; needs ``codebook_size = 2^embedding_dim``).
        commitment_cost, entropy_weight, entropy_temperature: quantizer loss settings (0.25, 0.1, 0.01 as released).
        sync_across_ranks: under DDP/FSDP in training mode, the quantizer's entropy loss batch-mean and its
            perplexity/usage are over the global batch of all ranks (:mod:`magvit.tokenizers.quantizer`).
        seed: seed of the weight initialisation.
        activation_checkpointing: in training mode, run each encoder and decoder level under non-reentrant
            ``torch.utils.checkpoint`` (:mod:`magvit.tokenizers.autoencoder`): less activation memory, one
            more forward pass of each level in the backward pass, the same values and gradients.

    The defaults are the B preset at 128 px with the paper's reflect padding. ``config`` holds the arguments
    of the construction (:func:`magvit.config.register_to_config`).

    ``lean_inference`` (:class:`magvit.kernels.KernelSettings`, read when built): ``encode`` and ``decode`` run
    the encoder and decoder on the lean route of :mod:`magvit.kernels.conv`; ``forward`` (training) never does.
    """

    spatial_dims: ClassVar[int]
    #: the registry name (``"vq3d"``, ``"vq2d"``)
    name: ClassVar[str]

    @register_to_config
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
        sync_across_ranks: bool = True,
        seed: int = 0,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        _check_arguments(type(self).__name__, self.spatial_dims, filters, channel_multipliers, temporal_downsample,
                         num_res_blocks, codebook_size, embedding_dim, norm_groups)
        for name, value in (("commitment_cost", commitment_cost), ("entropy_weight", entropy_weight),
                            ("entropy_temperature", entropy_temperature)):
            check_number(type(self).__name__, name, value, 0.0)
        check_int(type(self).__name__, "seed", seed, -(2**63))
        check_bool(type(self).__name__, "activation_checkpointing", activation_checkpointing)
        check_bool(type(self).__name__, "sync_across_ranks", sync_across_ranks)
        mults = tuple(int(m) for m in channel_multipliers)
        temporal = tuple(bool(t) for t in temporal_downsample)
        if len(temporal) != len(mults) - 1:
            raise InputError(
                f"temporal_downsample needs one entry per pool (len(channel_multipliers) - 1 = {len(mults) - 1}), "
                f"got {len(temporal)}"
            )
        check_padding(padding)
        arch = dict(
            spatial_dims=self.spatial_dims,
            filters=filters,
            channel_multipliers=mults,
            temporal_downsample=temporal,
            num_res_blocks=num_res_blocks,
            embedding_dim=embedding_dim,
            norm_groups=norm_groups,
            padding=padding,
        )
        self.encoder = Encoder(**arch, activation_checkpointing=activation_checkpointing)
        self.quantizer = build_quantizer(
            quantizer,
            codebook_size,
            embedding_dim,
            commitment_cost=commitment_cost,
            entropy_weight=entropy_weight,
            entropy_temperature=entropy_temperature,
            sync_across_ranks=sync_across_ranks,
        )
        self.decoder = Decoder(**arch, activation_checkpointing=activation_checkpointing)
        self.codebook_size = codebook_size
        spatial = 2 ** (len(mults) - 1)
        time = 2 ** sum(temporal) if self.spatial_dims == 3 else 1
        self.downsample: tuple[int, int, int] = (time, spatial, spatial)
        self.lean_inference = current_kernels().lean_inference
        generator = torch.Generator().manual_seed(seed)
        init_autoencoder_(self, generator)
        self.quantizer.reset_parameters(generator)

    # -- subclass hooks: how a video meets the network ---------------------------------------
    def to_network(self, video: Tensor) -> Tensor:
        """``[B, 3, T, H, W]`` -> the encoder's input layout."""
        raise NotImplementedError

    def from_network(self, x: Tensor, batch: int) -> Tensor:
        """The decoder's output (or a latent grid) -> ``[B, C, T, H, W]``."""
        raise NotImplementedError

    def tokens_from_network(self, tokens: Tensor, batch: int) -> Tensor:
        """The quantizer's token grid -> ``[B, t, h, w]``."""
        raise NotImplementedError

    def tokens_to_network(self, tokens: Tensor) -> Tensor:
        """``[B, t, h, w]`` -> the quantizer's token grid."""
        raise NotImplementedError

    # -- the Tokenizer protocol ---------------------------------------------------------------
    def token_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid ``(t, h, w)`` of a ``frames x height x width`` video; each must divide evenly."""
        ft, fh, fw = self.downsample
        if frames < 1 or height < 1 or width < 1 or frames % ft or height % fh or width % fw:
            raise InputError(
                f"{type(self).__name__} downsamples (T, H, W) by {self.downsample}: frames must be a positive "
                f"multiple of {ft} and height/width multiples of {fh}/{fw}; got {frames}x{height}x{width}"
            )
        return frames // ft, height // fh, width // fw

    def check_video(self, video: Tensor) -> None:
        """Raise :class:`InputError` unless ``video`` is a non-empty float ``[B, 3, T, H, W]`` in [0, 1]
        whose ``(T, H, W)`` the downsampling factors divide (:meth:`token_shape`)."""
        check_video(video, type(self).__name__, tolerance=_RANGE_TOLERANCE, min_batch=1)
        self.token_shape(*video.shape[2:])

    def check_tokens(self, tokens: Tensor) -> None:
        """Raise :class:`InputError` unless ``tokens`` is an integer ``[B, t, h, w]`` grid of valid ids."""
        expected = f"integer tokens [B, t, h, w] with ids in [0, {self.codebook_size})"
        if not isinstance(tokens, Tensor):
            raise InputError(f"expected {expected}, got {type(tokens).__name__}")
        if tokens.dim() != 4 or tokens.numel() == 0:
            raise InputError(f"expected {expected}, got shape {tuple(tokens.shape)}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise InputError(f"expected {expected}, got dtype {tokens.dtype}")
        lo, hi = tokens.min().item(), tokens.max().item()
        if lo < 0 or hi >= self.codebook_size:
            raise InputError(f"expected {expected}, got ids in [{lo}, {hi}]")

    def shard_units(self) -> list[nn.Module]:
        """What fully sharded training shards on its own (:mod:`magvit.train.sharding`): each encoder level,
        and each decoder level's blocks and upsampling conv (the decoder runs a level's parts one by one, not
        the level module, and a sharded unit gathers its weights when it is called)."""
        decoder = [part for level in self.decoder.levels.values()
                   for part in (*level.blocks, level.upsample_conv) if part is not None]
        return [*self.encoder.levels, *decoder]

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """Float video ``[B, 3, T, H, W]`` in [0, 1] -> long tokens ``[B, t, h, w]``."""
        self.check_video(video)
        with lean_route(self, self.lean_inference):
            out = self.quantize(self.encode_latents(video))
        return self.tokens_from_network(out.tokens, video.shape[0]).long()

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """Long tokens ``[B, t, h, w]`` -> video ``[B, 3, T, H, W]`` clipped to [0, 1]."""
        self.check_tokens(tokens)
        device = next(self.parameters()).device
        latents = self.quantizer.lookup(self.tokens_to_network(tokens.long().to(device)))
        with lean_route(self, self.lean_inference):
            video = self.decoder(latents)
        return self.from_network(video, tokens.shape[0]).clamp(0, 1).contiguous()

    # -- training -----------------------------------------------------------------------------
    def encode_latents(self, video: Tensor) -> Tensor:
        """Continuous encoder output in the network layout (no validation)."""
        device = next(self.parameters()).device
        return self.encoder(self.to_network(video.to(device)))

    def quantize(self, latents: Tensor) -> QuantizerOutput:
        return self.quantizer(latents)

    def forward(self, video: Tensor) -> TokenizerOutput:
        """Reconstruct ``video`` for training: raw (unclipped) recon plus the quantizer output."""
        out = self.quantize(self.encode_latents(video))
        recon = self.from_network(self.decoder(out.quantized), video.shape[0])
        return TokenizerOutput(recon, out)


def fold_time(video: Tensor) -> Tensor:
    """``[B, C, T, H, W]`` -> ``[B*T, C, H, W]`` (frames as batch, for per-frame 2D networks)."""
    b, c, t, h, w = video.shape
    return video.transpose(1, 2).reshape(b * t, c, h, w)


def unfold_time(frames: Tensor, batch: int) -> Tensor:
    """Inverse of :func:`fold_time`: ``[B*T, C, H, W]`` -> ``[B, C, T, H, W]``."""
    n, c, h, w = frames.shape
    return frames.reshape(batch, n // batch, c, h, w).transpose(1, 2)

