"""Model sizes of the VQ tokenizers and their discriminator (the authors' ``videogvt/configs/vqgan3d_*_config.py``).

=========================  ==========  ==========  ==============================
                           B           L           tiny (CPU tests and demo)
=========================  ==========  ==========  ==============================
filters                    64          128         16
multipliers, 128 px        (1,2,2,4)   (1,2,2,4)   (1,2,4) at every resolution
multipliers, 64 px         (1,2,4)     (1,2,4)
res blocks (enc = dec)     2           2           1
codebook x code dim        1024 x 256  1024 x 256  256 x 8
GroupNorm groups           32          32          8 (32 does not divide 16)
discriminator multipliers  (2,4,4,4,4) at 128 px, (2,4,4,4) at 64 px;   tiny (1,2,2)
=========================  ==========  ==========  ==============================

The 3D-VQ pools in time at the first two levels (``temporal_downsample = (True, True, False)`` at
128 px, ``(True, True)`` at 64 px), so 16x128x128 -> 4x16x16 and 16x64x64 -> 4x16x16.
"""

from __future__ import annotations

import attrs

from magvit.errors import InputError

PRESET_NAMES: tuple[str, ...] = ("tiny", "B", "L")
RESOLUTIONS: tuple[int, ...] = (64, 128)


@attrs.frozen
class Preset:
    """Widths and codebook of one tokenizer size."""

    filters: int
    num_res_blocks: int
    codebook_size: int
    embedding_dim: int
    norm_groups: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(filters=16, num_res_blocks=1, codebook_size=256, embedding_dim=8, norm_groups=8),
    "B": Preset(filters=64, num_res_blocks=2, codebook_size=1024, embedding_dim=256, norm_groups=32),
    "L": Preset(filters=128, num_res_blocks=2, codebook_size=1024, embedding_dim=256, norm_groups=32),
}


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``; an :class:`InputError` lists the known ones otherwise."""
    if name not in PRESETS:
        raise InputError(f"unknown tokenizer preset {name!r}; expected one of {PRESET_NAMES}")
    return PRESETS[name]


def check_resolution(preset: str, resolution: int) -> None:
    """B and L exist for 64 and 128 px only (the authors' configs); tiny works at any multiple of 4."""
    if preset != "tiny" and resolution not in RESOLUTIONS:
        raise InputError(f"preset {preset!r} is defined for resolution in {RESOLUTIONS}, got {resolution}")


def channel_multipliers(preset: str, resolution: int) -> tuple[int, ...]:
    """Encoder/decoder width multipliers: (1,2,2,4) at 128 px, (1,2,4) at 64 px and for tiny."""
    check_resolution(preset, resolution)
    return (1, 2, 2, 4) if preset != "tiny" and resolution == 128 else (1, 2, 4)


def temporal_downsample(multipliers: tuple[int, ...]) -> tuple[bool, ...]:
    """Which pools also halve T: the first two (3D), never the later ones (2D) (``temporal_downsample``)."""
    return tuple(i < 2 for i in range(len(multipliers) - 1))


def discriminator_multipliers(preset: str, resolution: int) -> tuple[int, ...]:
    """StyleGAN discriminator multipliers: 5 blocks at 128 px, 4 at 64 px."""
    check_resolution(preset, resolution)
    if preset == "tiny":
        return (1, 2, 2)
    return (2, 4, 4, 4, 4) if resolution == 128 else (2, 4, 4, 4)
