"""Padding, pooling, upsampling and the residual block of magvit.tokenizers.layers (as the authors'
``model_utils.py`` and ``enc_dec_3dcnn.py``), on the plain route and on the lean inference route."""

import pytest
import torch

from magvit.errors import InputError
from magvit.kernels import lean_route
from magvit.tokenizers import layers
from magvit.tokenizers.layers import (
    Conv,
    ResBlock,
    avg_pool_same,
    pad_same,
    same_pads,
    truncated_normal,
    upsample_nearest,
)


def test_same_pads_split_k_minus_1_over_2_and_k_over_2():
    assert same_pads((3, 3, 3)) == [1, 1, 1, 1, 1, 1]
    assert same_pads((4, 1)) == [0, 0, 1, 2]


def test_reflect_padding_values_and_size1_fallback():
    x = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 1, 1, 3)
    out = pad_same(x, (3, 3, 3), "reflect")
    assert out.shape == (1, 1, 3, 3, 5)
    assert out[0, 0, 1, 1].tolist() == [2.0, 1.0, 2.0, 3.0, 2.0]
    # size-1 axes (T and H) fall back to replicate, like numpy.pad(mode="reflect")
    assert torch.equal(out[0, 0, 0], out[0, 0, 1]) and torch.equal(out[0, 0, :, 0], out[0, 0, :, 1])
    zeros = pad_same(x, (3, 3, 3), "zeros")
    assert zeros.sum() == x.sum() and zeros.shape == out.shape


@pytest.mark.parametrize("padding", ["reflect", "zeros", "replicate"])
def test_conv_keeps_size(padding):
    conv = Conv(2, 4, 3, spatial_dims=3, bias=True, padding=padding)
    torch.nn.init.ones_(conv.weight)
    assert conv(torch.ones(1, 2, 1, 5, 6)).shape == (1, 4, 1, 5, 6)


def test_conv_rejects_unknown_padding():
    with pytest.raises(InputError, match="padding must be one of"):
        Conv(2, 2, 3, spatial_dims=3, bias=False, padding="circular")


def test_reflect_conv_of_constant_is_constant_but_zeros_is_not():
    conv_r = Conv(1, 1, 3, spatial_dims=2, bias=False, padding="reflect")
    conv_z = Conv(1, 1, 3, spatial_dims=2, bias=False, padding="zeros")
    torch.nn.init.ones_(conv_r.weight), torch.nn.init.ones_(conv_z.weight)
    x = torch.ones(1, 1, 4, 4)
    assert torch.allclose(conv_r(x), torch.full_like(x, 9.0))
    assert conv_z(x)[0, 0, 0, 0] == 4.0


def test_avg_pool_same_excludes_padding_and_keeps_size1():
    x = torch.arange(5.0).reshape(1, 1, 5, 1, 1).expand(1, 1, 5, 2, 2)
    out = avg_pool_same(x, (2, 2, 2))
    assert out.shape == (1, 1, 3, 1, 1)
    assert out.flatten().tolist() == [0.5, 2.5, 4.0]  # last window holds only frame 4
    assert avg_pool_same(torch.ones(1, 1, 1, 4, 4), (2, 2, 2)).shape == (1, 1, 1, 2, 2)
    assert avg_pool_same(torch.ones(1, 1, 4, 4, 4), (1, 2, 2)).shape == (1, 1, 4, 2, 2)


def test_upsample_nearest_repeats():
    x = torch.tensor([[1.0, 2.0]]).reshape(1, 1, 1, 1, 2)
    out = upsample_nearest(x, (2, 1, 2))
    assert out.shape == (1, 1, 2, 1, 4) and out[0, 0, 1, 0].tolist() == [1.0, 1.0, 2.0, 2.0]


def test_truncated_normal_is_within_two_sigma_and_unit_scale():
    x = truncated_normal((200_000,), torch.Generator().manual_seed(0))
    assert x.abs().max() <= 2
    assert abs(x.std().item() - 0.87962566) < 0.01


# -- the lean inference route (magvit/kernels/conv.py) ---------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("cin", "cout"), [(8, 8), (8, 16)])
@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_resblock_lean_route_equals_the_plain_route(spatial_dims, cin, cout, padding):
    torch.manual_seed(0)
    block = ResBlock(cin, cout, spatial_dims=spatial_dims, norm_groups=4, padding=padding)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, cin, *(6,) * spatial_dims)
    trained = block(x)
    with torch.no_grad():
        plain = block(x)  # autograd off alone does not change the route
    with lean_route(block):
        lean = block(x)
    assert trained.requires_grad and not lean.requires_grad
    assert torch.equal(plain, trained.detach())
    torch.testing.assert_close(lean, trained.detach(), atol=1e-4, rtol=1e-4)


def test_conv_on_the_lean_route_reads_a_padded_buffer(monkeypatch):
    filled = []
    fill = layers.fill_border_
    monkeypatch.setattr(layers, "fill_border_", lambda buf, *a: filled.append(buf) or fill(buf, *a))
    conv = Conv(3, 4, 3, spatial_dims=3, bias=True, padding="reflect")
    torch.nn.init.normal_(conv.weight, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 3, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    plain = conv(x)
    assert filled == []
    with lean_route(conv):
        lean = conv(x)
    assert len(filled) == 1 and filled[0].shape == (1, 3, 6, 7, 8)
    assert filled[0].is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(lean, plain.detach(), atol=1e-5, rtol=1e-5)
