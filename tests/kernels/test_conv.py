"""The lean inference route's convolution kernels (magvit/kernels/conv.py) give the plain route's values."""

import pytest
import torch
import torch.nn.functional as F

from magvit.errors import InputError
from magvit.kernels.conv import (
    SLAB_FRAMES,
    conv_in_slabs,
    fill_border_,
    group_norm_swish_into,
    norm_swish_conv,
    norm_swish_padded,
    padded_buffer,
    padded_source,
    pointwise_conv,
    upsample_nearest_into,
)
from magvit.tokenizers.layers import Conv, group_norm, pad_same, upsample_nearest


@pytest.mark.parametrize("mode", ["reflect", "zeros", "replicate"])
@pytest.mark.parametrize(
    ("size", "kernel"),
    [((4, 5, 6), (3, 3, 3)), ((1, 5, 2), (3, 3, 3)), ((5, 7), (4, 1)), ((3, 4), (3, 3)), ((2, 3, 3), (4, 4, 4))],
)
def test_fill_border_equals_pad_same(mode, size, kernel):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    buf, inner = padded_buffer(x, size, 3, kernel)
    buf.fill_(float("nan"))  # every border value must be written
    inner.copy_(x)
    assert torch.equal(fill_border_(buf, kernel, mode), pad_same(x, kernel, mode))


def test_padded_buffer_is_channels_last_and_interior_is_a_view():
    buf, inner = padded_buffer(torch.zeros(1, 4, 2, 3, 3), (2, 3, 3), 4, (3, 3, 3))
    assert buf.shape == (1, 4, 4, 5, 5) and buf.is_contiguous(memory_format=torch.channels_last_3d)
    buf.zero_()
    inner.fill_(7.0)
    assert buf[0, :, 1:3, 1:4, 1:4].eq(7.0).all() and buf.sum() == 7.0 * inner.numel()
    buf2d, _ = padded_buffer(torch.zeros(2, 1, 5, 5), (5, 5), 6, (4, 4))  # even kernels pad (1, 2)
    assert buf2d.shape == (2, 6, 8, 8) and buf2d.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_group_norm_swish_into_matches_modules(spatial_dims):
    g = torch.Generator().manual_seed(1)
    norm = group_norm(16, 4)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, generator=g))
        norm.bias.copy_(torch.randn(16, generator=g))
    x = 3 * torch.randn(2, 16, *(5,) * spatial_dims, generator=g) + 1
    out = torch.empty_like(x)
    with torch.no_grad():
        group_norm_swish_into(norm, x, out)
    torch.testing.assert_close(out, F.silu(norm(x)), atol=2e-5, rtol=1e-5)


def test_upsample_nearest_into_a_strided_view():
    x = torch.randn(1, 2, 3, 4, 5)
    buf = torch.zeros(1, 2, 8, 10, 12)
    upsample_nearest_into(x, (2, 2, 2), buf[:, :, 1:7, 1:9, 1:11])
    assert torch.equal(buf[:, :, 1:7, 1:9, 1:11], upsample_nearest(x, (2, 2, 2)))
    assert buf[:, :, 0].abs().sum() == 0  # nothing written outside the view
    out = torch.empty(1, 2, 3, 8, 10)
    assert torch.equal(upsample_nearest_into(x, (1, 2, 2), out), upsample_nearest(x, (1, 2, 2)))


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_pointwise_conv_is_a_1x1_convolution_without_copies(layout, with_bias):
    x = torch.randn(2, 6, 3, 4, 5, requires_grad=True)
    w, b = torch.randn(4, 6, 1, 1, 1, requires_grad=True), torch.randn(4) if with_bias else None
    inp = x.contiguous(memory_format=torch.channels_last_3d) if layout == "channels_last" else x
    out = pointwise_conv(inp, w, b)
    ref = F.conv3d(x, w, b)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    layout_format = torch.channels_last_3d if layout == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=layout_format)
    grads = torch.autograd.grad(out.square().sum(), (x, w))
    for got, want in zip(grads, torch.autograd.grad(ref.square().sum(), (x, w))):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    x2 = torch.randn(3, 6, 4, 4)  # 2D
    torch.testing.assert_close(pointwise_conv(x2, w[..., 0], b), F.conv2d(x2, w[..., 0], b), atol=1e-5, rtol=1e-5)


# -- temporal slabs (conv_in_slabs) ------------------------------------------------------------------


def test_padded_source_follows_pad_same():
    for mode in ("reflect", "replicate", "zeros"):
        for size in (1, 2, 5):
            axis = torch.arange(size, dtype=torch.float32).view(1, 1, size) + 1  # 1-based, 0 marks a zero pad
            want = pad_same(axis, (3,), mode).flatten().tolist()  # positions -1 .. size
            got = [0.0 if (i := padded_source(t, size, (1, 1), mode)) is None else i + 1.0 for t in range(-1, size + 1)]
            assert got == want, (mode, size)


@pytest.mark.parametrize("mode", ["reflect", "zeros", "replicate"])
@pytest.mark.parametrize("frames", [SLAB_FRAMES + 1, 2 * SLAB_FRAMES, 11])
def test_conv_in_slabs_equals_one_buffer(mode, frames):
    g = torch.Generator().manual_seed(0)
    conv = Conv(3, 5, 3, spatial_dims=3, bias=True, padding=mode)
    torch.nn.init.normal_(conv.weight, generator=g)
    x = torch.randn(2, 3, frames, 6, 7, generator=g)
    with torch.no_grad():
        want = conv(x)
        got = conv_in_slabs(conv, lambda t, dst: dst.copy_(x[:, :, t]), x, x.shape[2:], 3)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_norm_swish_conv_takes_statistics_over_the_whole_clip():
    g = torch.Generator().manual_seed(1)
    norm = group_norm(8, 4)
    torch.nn.init.normal_(norm.weight, generator=g)
    conv = Conv(8, 6, 3, spatial_dims=3, bias=False, padding="reflect")
    torch.nn.init.normal_(conv.weight, generator=g)
    # frames differ in scale, so per-slab statistics would give visibly different values
    x = torch.randn(1, 8, 3 * SLAB_FRAMES, 5, 5, generator=g) * torch.linspace(0.1, 5, 3 * SLAB_FRAMES).view(1, 1, -1, 1, 1)
    with torch.no_grad():
        want = conv(F.silu(norm(x)))
        torch.testing.assert_close(norm_swish_conv(norm, conv, x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv(norm_swish_padded(norm, conv, x), prepadded=True), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first", "mixed"])
@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv_add_accumulates_in_place(layout, bias):
    g = torch.Generator().manual_seed(2)
    conv = Conv(6, 4, 1, spatial_dims=3, bias=bias)
    torch.nn.init.normal_(conv.weight, generator=g)
    if bias:
        torch.nn.init.normal_(conv.bias, generator=g)
    x = torch.randn(2, 6, 3, 4, 5, generator=g)
    base = torch.randn(2, 4, 3, 4, 5, generator=g)
    want = base + F.conv3d(x, conv.weight, conv.bias)
    if layout != "channels_first":
        base = base.contiguous(memory_format=torch.channels_last_3d)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        got = conv(x, add_to=base)
    assert got.data_ptr() == base.data_ptr()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match=r"add_to is for 1x1 convolutions, this one has kernel \(3, 3, 3\)"):
        Conv(6, 4, 3, spatial_dims=3, bias=False)(x, add_to=base)
