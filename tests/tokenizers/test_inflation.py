"""2D -> 3D inflation (as ``inflate_2d_to_3d``): centre slice, exact equivalence on constant clips, reporting."""

import pytest
import torch

from magvit.errors import InputError
from magvit.registry import get_tokenizer
from magvit.tokenizers.discriminator import build_discriminator
from magvit.tokenizers.inflation import inflate_2d_to_3d, inflate_kernel


def _pair(padding: str):
    model_2d = get_tokenizer("vq2d", preset="tiny", padding=padding, seed=1).eval()
    model_3d = get_tokenizer("vq3d", preset="tiny", padding=padding, seed=2).eval()
    return model_2d, model_3d


def _constant_clip(frames: int = 8) -> torch.Tensor:
    frame = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return frame.expand(1, 3, frames, 16, 16).contiguous()


def test_central_inflation_puts_2d_kernel_in_centre_slice():
    model_2d, model_3d = _pair("reflect")
    report = inflate_2d_to_3d(model_2d.state_dict(), model_3d, mode="central")
    assert report.complete and report.inflated and report.copied
    w2, w3 = model_2d.encoder.conv_in.weight, model_3d.encoder.conv_in.weight
    assert w3.shape == (16, 3, 3, 3, 3)
    assert torch.equal(w3[:, :, 1], w2) and not w3[:, :, 0].any() and not w3[:, :, 2].any()
    assert torch.equal(model_3d.quantizer.codebook, model_2d.quantizer.codebook)


def test_average_inflation_divides_over_time():
    k = torch.arange(8.0).reshape(2, 1, 2, 2)
    out = inflate_kernel(k, 4, "average")
    assert out.shape == (2, 1, 4, 2, 2) and torch.allclose(out.sum(2), k)
    with pytest.raises(InputError, match="central"):
        inflate_kernel(k, 3, "middle")


@pytest.mark.parametrize("padding,mode", [("zeros", "central"), ("reflect", "central"), ("reflect", "average"), ("replicate", "average")])
def test_inflated_3d_equals_2d_on_a_constant_clip(padding, mode):
    model_2d, model_3d = _pair(padding)
    inflate_2d_to_3d(model_2d.state_dict(), model_3d, mode=mode)
    video = _constant_clip()
    with torch.no_grad():
        recon_2d, recon_3d = model_2d(video).recon, model_3d(video).recon
    assert torch.allclose(recon_2d, recon_3d, atol=1e-4)
    tokens_2d, tokens_3d = model_2d.encode(video), model_3d.encode(video)
    assert torch.equal(tokens_3d, tokens_2d[:, ::4])  # one 3D token row per 4 identical frames


def test_average_inflation_with_zero_padding_breaks_equivalence_at_the_clip_ends():
    model_2d, model_3d = _pair("zeros")
    inflate_2d_to_3d(model_2d.state_dict(), model_3d, mode="average")
    video = _constant_clip()
    with torch.no_grad():
        diff = (model_2d(video).recon - model_3d(video).recon).abs()
    assert diff.max() > 1e-2


def test_unmappable_parameters_are_reported_and_warned():
    model_2d = get_tokenizer("vq2d", preset="tiny", embedding_dim=4)
    model_3d = get_tokenizer("vq3d", preset="tiny")
    state = dict(model_2d.state_dict(), extra=torch.zeros(1))
    del state["decoder.conv_out.bias"]
    with pytest.warns(UserWarning, match="inflation left"):
        report = inflate_2d_to_3d(state, model_3d)
    unmapped = dict(report.unmapped)
    assert "quantizer.codebook" in unmapped and "encoder.conv_out.weight" in unmapped
    assert unmapped["decoder.conv_out.bias"] == "not in the 2D state dict"
    assert report.unused == ("extra",) and not report.complete


def test_discriminator_inflates_completely_because_time_collapses_to_one():
    d2 = build_discriminator("tiny", 16, frames=4, spatial_dims=2, seed=1)
    d3 = build_discriminator("tiny", 16, frames=4, spatial_dims=3, seed=2)
    report = inflate_2d_to_3d(d2.state_dict(), d3)
    assert report.complete and "dense.weight" in report.copied
    video = _constant_clip(4)
    # Zero temporal padding in the discriminator makes edge frames differ, so only shapes are comparable.
    assert d3(video).shape == (1,) and d2(video).shape == (4,)
