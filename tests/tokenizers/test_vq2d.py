"""The per-frame 2D-VQ baseline: shapes, downsampling, per-frame independence."""

import torch

from magvit.registry import get_tokenizer


def test_b_preset_at_128px_tokenises_every_frame():
    model = get_tokenizer("vq2d", preset="B", resolution=128).eval()
    assert model.downsample == (1, 8, 8) and model.token_shape(16, 128, 128) == (16, 16, 16)
    tokens = model.encode(torch.rand(1, 3, 16, 128, 128))
    assert tokens.shape == (1, 16, 16, 16) and tokens.dtype == torch.long and tokens.max() < 1024


def test_64px_layout_downsamples_by_4_and_frames_are_independent():
    model = get_tokenizer("vq2d", preset="tiny", resolution=64).eval()
    assert model.downsample == (1, 4, 4)
    video = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    tokens = model.encode(video)
    assert tokens.shape == (2, 3, 4, 4)
    alone = model.encode(video[1:, :, 2:])  # frame 2 of clip 1 on its own
    assert torch.equal(alone[0, 0], tokens[1, 2])
    assert model.decode(tokens).shape == video.shape


def test_config_rebuilds():
    model = get_tokenizer("vq2d", preset="tiny")
    assert "temporal_downsample" not in model.config
    rebuilt = get_tokenizer("vq2d", **model.config)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
