"""A real, deterministic :class:`~magvit.protocols.Tokenizer` for tests (no learning, no mock).

Each supervoxel's mean colour is quantised to the nearest colour of a fixed palette (every combination
of ``levels`` evenly spaced values per RGB channel), so ``codebook_size = levels ** 3``. Decoding paints
each supervoxel with its palette colour. Encode-decode is exact for videos that are constant per
supervoxel and use palette colours only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.config import register_to_config
from magvit.errors import InputError


class PaletteTokenizer(nn.Module):
    """Supervoxel mean colour -> nearest palette colour index (a module without weights).

    Args:
        downsample: supervoxel size ``(ft, fh, fw)``.
        levels: values per channel; the palette has ``levels ** 3`` colours.
    """

    @register_to_config
    def __init__(self, downsample: tuple[int, int, int] = (2, 2, 2), levels: int = 2) -> None:
        super().__init__()
        if levels < 2:
            raise InputError(f"levels must be >= 2, got {levels}")
        self.downsample = tuple(downsample)
        self.levels = levels
        grid = torch.linspace(0.0, 1.0, levels)
        r, g, b = torch.meshgrid(grid, grid, grid, indexing="ij")
        palette = torch.stack([r.flatten(), g.flatten(), b.flatten()], dim=1)  # [K, 3]
        self.register_buffer("palette", palette, persistent=False)
        self.codebook_size = levels**3
        self.encode_calls = 0

    def token_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        ft, fh, fw = self.downsample
        if frames % ft or height % fh or width % fw:
            raise InputError(
                f"video {frames}x{height}x{width} is not divisible by the supervoxel size {self.downsample}"
            )
        return frames // ft, height // fh, width // fw

    def encode(self, video: Tensor) -> Tensor:
        if video.dim() != 5 or video.shape[1] != 3:
            raise InputError(f"expected a video [B, 3, T, H, W], got {tuple(video.shape)}")
        self.token_shape(*video.shape[2:])
        self.encode_calls += 1
        means = F.avg_pool3d(video, self.downsample)  # [B, 3, t, h, w]
        colours = means.movedim(1, -1)  # [B, t, h, w, 3]
        dist = ((colours[..., None, :] - self.palette.to(video)) ** 2).sum(-1)  # [B, t, h, w, K]
        return dist.argmin(dim=-1)

    def decode(self, tokens: Tensor) -> Tensor:
        colours = self.palette.to(tokens.device)[tokens]  # [B, t, h, w, 3]
        video = colours.movedim(-1, 1)
        ft, fh, fw = self.downsample
        return video.repeat_interleave(ft, 2).repeat_interleave(fh, 3).repeat_interleave(fw, 4)


def moving_square_clip(frames: int = 4, size: int = 8, block: int = 2, batch: int = 1, swap: bool = False) -> Tensor:
    """A deterministic palette-coloured clip ``[B, 3, T, H, W]``: a red square moving right by ``block``
    pixels every ``block`` frames over a checkerboard of blue and green cells (``swap`` exchanges the two).

    With a cubic supervoxel of edge ``block`` every supervoxel is constant, so tokens are exact.
    """
    video = torch.zeros(batch, 3, frames, size, size)
    cells = size // block
    for i in range(cells):
        for j in range(cells):
            channel = 1 if ((i + j) % 2) != swap else 2
            video[:, channel, :, i * block : (i + 1) * block, j * block : (j + 1) * block] = 1.0
    for t in range(frames):
        col = (t // block) * block % size
        video[:, :, t, block : 2 * block, col : col + block] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    return video
