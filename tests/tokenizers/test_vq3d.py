"""The 3D-VQ tokenizer: shapes at the real sizes, parameter counts, validation, config, learning."""

import math
import time

import pytest
import torch

from magvit.errors import InputError
from magvit.protocols import Tokenizer
from magvit.registry import get_tokenizer
from magvit.tokenizers.vq3d import VQ3D


# -- an independent parameter count from the widths of the authors' vqgan3d configs -----------
def conv(cin: int, cout: int, k: int, dims: int, bias: bool) -> int:
    return cin * cout * k**dims + (cout if bias else 0)


def res(cin: int, cout: int, dims: int) -> int:
    shortcut = conv(cin, cout, 1, dims, False) if cin != cout else 0
    return 2 * cin + conv(cin, cout, 3, dims, False) + 2 * cout + conv(cout, cout, 3, dims, False) + shortcut


def expected_params(filters: int, mults: tuple, nres: int, codes: int, dim: int, dims: int) -> int:
    widths = [filters * m for m in mults]
    enc, w = conv(3, filters, 3, dims, False), filters
    for out in widths:
        enc += res(w, out, dims) + (nres - 1) * res(out, out, dims)
        w = out
    enc += nres * res(w, w, dims) + 2 * w + conv(w, dim, 1, dims, True)
    dec = conv(dim, w, 3, dims, True) + nres * res(w, w, dims)
    for i in reversed(range(len(widths))):
        dec += res(w, widths[i], dims) + (nres - 1) * res(widths[i], widths[i], dims)
        w = widths[i]
        if i > 0:
            dec += conv(w, w, 3, dims, True)
    dec += 2 * w + conv(w, 3, 3, dims, True)
    return enc + dec + codes * dim


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "preset,resolution,filters,mults",
    [("B", 128, 64, (1, 2, 2, 4)), ("L", 128, 128, (1, 2, 2, 4)), ("B", 64, 64, (1, 2, 4)), ("L", 64, 128, (1, 2, 4))],
)
def test_parameter_counts_match_reference_widths(preset, resolution, filters, mults):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = get_tokenizer("vq3d", preset=preset, resolution=resolution)
    n = count(model)
    print(f"vq3d {preset} @ {resolution}px: {n:,} parameters")
    assert n == expected_params(filters, mults, 2, 1024, 256, 3)


def test_tiny_and_2d_counts_use_the_same_formula():
    assert count(get_tokenizer("vq3d", preset="tiny")) == expected_params(16, (1, 2, 4), 1, 256, 8, 3)
    with torch.device("meta"):
        model = get_tokenizer("vq2d", preset="B", resolution=128)
    print(f"vq2d B @ 128px: {count(model):,} parameters")
    assert count(model) == expected_params(64, (1, 2, 2, 4), 2, 1024, 256, 2)


@pytest.mark.slow
def test_b_preset_at_128px_round_trip_shapes():
    model = get_tokenizer("vq3d", preset="B", resolution=128).eval()
    assert isinstance(model, Tokenizer)
    assert model.downsample == (4, 8, 8) and model.codebook_size == 1024
    tokens = model.encode(torch.rand(1, 3, 16, 128, 128, generator=torch.Generator().manual_seed(0)))
    assert tokens.dtype == torch.long and tokens.shape == (1, 4, 16, 16)
    assert 0 <= tokens.min() and tokens.max() < 1024
    video = model.decode(tokens)
    assert video.shape == (1, 3, 16, 128, 128) and 0 <= video.min() and video.max() <= 1


def test_b_preset_at_64px_encodes_to_4x16x16():
    model = get_tokenizer("vq3d", preset="B", resolution=64).eval()
    assert model.downsample == (4, 4, 4) and model.token_shape(16, 64, 64) == (4, 16, 16)
    tokens = model.encode(torch.rand(1, 3, 16, 64, 64))
    assert tokens.shape == (1, 4, 16, 16) and tokens.dtype == torch.long and tokens.max() < 1024


def test_tiny_round_trip_and_forward_record():
    model = get_tokenizer("vq3d", preset="tiny")
    assert model.downsample == (4, 4, 4) and model.codebook_size == 256
    video = torch.rand(2, 3, 8, 32, 32)
    out = model(video)
    assert out.recon.shape == video.shape and out.quantizer.tokens.shape == (2, 2, 8, 8)
    assert out.quantizer.loss.requires_grad
    recon = model.decode(model.encode(video))
    assert recon.shape == video.shape and recon.min() >= 0 and recon.max() <= 1


def test_config_rebuilds_same_architecture_and_weights():
    model = get_tokenizer("vq3d", preset="tiny", padding="zeros", seed=3)
    config = model.config
    assert all(isinstance(v, (int, float, str, bool, list)) for v in config.values())
    rebuilt = get_tokenizer("vq3d", **config)
    assert rebuilt.config == config
    a, b = model.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lfq_quantizer_is_swappable():
    model = get_tokenizer("vq3d", preset="tiny", quantizer="lfq")
    assert model.config["embedding_dim"] == 8 and model.codebook_size == 256
    tokens = model.encode(torch.rand(1, 3, 4, 16, 16))
    assert tokens.shape == (1, 1, 4, 4) and tokens.max() < 256
    assert model.decode(tokens).shape == (1, 3, 4, 16, 16)


@pytest.mark.parametrize(
    "video,match",
    [
        (torch.rand(3, 4, 16, 16), "5 dims|shape"),
        (torch.rand(1, 1, 4, 16, 16), "shape"),
        (torch.rand(1, 3, 6, 16, 16), "multiple of 4"),
        (torch.rand(1, 3, 4, 18, 16), "multiple"),
        (torch.randint(0, 255, (1, 3, 4, 16, 16)), "dtype"),
        (torch.rand(1, 3, 4, 16, 16) * 255, "values"),
    ],
)
def test_encode_rejects_bad_video(video, match):
    model = get_tokenizer("vq3d", preset="tiny")
    with pytest.raises(InputError, match=match) as err:
        model.encode(video)
    assert "[B, 3, T, H, W]" in str(err.value) or "multiple" in str(err.value)


@pytest.mark.parametrize(
    "tokens,match",
    [
        (torch.full((1, 1, 4, 4), 256), "ids in"),
        (torch.full((1, 1, 4, 4), -1), "ids in"),
        (torch.zeros(1, 1, 4, 4), "dtype"),
        (torch.zeros(1, 16, dtype=torch.long), "shape"),
    ],
)
def test_decode_rejects_bad_tokens(tokens, match):
    model = get_tokenizer("vq3d", preset="tiny")
    with pytest.raises(InputError, match=match):
        model.decode(tokens)


def test_unknown_preset_resolution_and_argument_are_input_errors():
    with pytest.raises(InputError, match="preset"):
        get_tokenizer("vq3d", preset="XL")
    with pytest.raises(InputError, match="resolution"):
        get_tokenizer("vq3d", preset="B", resolution=96)
    with pytest.raises(InputError, match="unknown tokenizer arguments"):
        get_tokenizer("vq3d", preset="tiny", filter=8)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / (a - b).pow(2).mean().item())


@pytest.mark.slow
def test_tiny_vq3d_overfits_a_few_clips(make_clips):
    torch.manual_seed(0)  # no implicit randomness is used; this only pins any library fallback
    video = make_clips(2, 8, 32)
    model = VQ3D(**get_tokenizer("vq3d", preset="tiny").config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    start = _psnr(video, model.eval().decode(model.encode(video)))
    model.train()
    t0 = time.time()
    for _ in range(60):
        out = model(video)
        loss = (out.recon - video).pow(2).mean() + out.quantizer.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tokens = model.encode(video)
    end = _psnr(video, model.decode(tokens))
    print(f"tiny vq3d PSNR {start:.1f} -> {end:.1f} dB, {tokens.unique().numel()} codes, {time.time() - t0:.1f}s")
    assert end > start + 4 and end > 15
    assert tokens.unique().numel() > 1
