"""The quantizers under mixed precision: distances, nearest code, losses and entropy in float32 under autocast,
the straight-through output in the input's dtype."""

from __future__ import annotations

import pytest
import torch

from magvit.tokenizers.quantizer import LookupFreeQuantizer, VectorQuantizer

LOSSES = ("loss", "commitment_loss", "codebook_loss", "entropy_loss")


def vq(dtype: torch.dtype = torch.float32) -> VectorQuantizer:
    q = VectorQuantizer(256, 8).train()  # the tiny preset's codebook
    q.reset_parameters(torch.Generator().manual_seed(0))
    return q.to(dtype)


def latents(dtype: torch.dtype, scale: float = 0.1) -> torch.Tensor:
    """bf16/fp16 latents ``[2, 8, 4, 8, 8]`` (as an encoder under autocast gives), with a gradient."""
    z = torch.randn(2, 8, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * scale
    return z.to(dtype).requires_grad_(True)


def assert_same_tokens_and_float32_losses(out, reference) -> None:
    """The same codes as the float32 reference, and every loss in float32 and equal to the reference's."""
    assert torch.equal(out.tokens, reference.tokens)
    for name in LOSSES:
        assert getattr(out, name).dtype == torch.float32, name
        assert torch.equal(getattr(out, name), getattr(reference, name)), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_vq_under_autocast_equals_float32_on_the_same_latents(dtype):
    quantizer = vq()
    z = latents(dtype)
    reference = quantizer(z.detach().float())
    with torch.autocast("cpu", dtype=dtype):
        out = quantizer(z)
    assert_same_tokens_and_float32_losses(out, reference)
    assert out.perplexity.dtype == torch.float32
    assert torch.equal(out.perplexity, reference.perplexity) and torch.equal(out.usage, reference.usage)
    assert out.quantized.dtype == dtype
    assert torch.equal(out.quantized, reference.quantized.to(dtype))
    out.quantized.float().sum().backward()
    assert z.grad.dtype == dtype and torch.equal(z.grad, torch.ones_like(z))  # straight-through


def test_the_nearest_code_search_is_precision_sensitive():
    # what autocast would do to the distances if the quantizer let it: a bf16 matmul picks other codes
    quantizer = vq()
    flat = latents(torch.bfloat16).detach().float().movedim(1, -1).reshape(-1, 8)
    exact = quantizer.distances(flat).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = quantizer.distances(flat)
    assert (rounded.argmin(1) != exact).any()  # bf16 keeps 8 significant bits: close distances swap


def test_vq_losses_have_gradients_in_float32_under_autocast():
    quantizer = vq()
    z = latents(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(z)
    out.loss.backward()
    assert quantizer.codebook.grad.dtype == torch.float32 and quantizer.codebook.grad.abs().max() > 0
    assert z.grad.dtype == torch.bfloat16 and z.grad.abs().max() > 0


def test_a_bf16_codebook_is_searched_in_float32():
    # FSDP's mixed precision holds the parameters in bf16 during the forward pass
    low = vq(torch.bfloat16)
    exact = vq()
    with torch.no_grad():
        exact.codebook.copy_(low.codebook.float())
    z = latents(torch.bfloat16)
    out, reference = low(z), exact(z.detach().float())
    assert_same_tokens_and_float32_losses(out, reference)
    assert out.quantized.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lfq_under_autocast_equals_float32_on_the_same_latents(dtype):
    lfq = LookupFreeQuantizer(256, 8).train()
    z = latents(dtype, scale=0.02)  # near zero: the entropy's sigmoid(4 z / 0.01) is not saturated
    reference = lfq(z.detach().float())
    with torch.autocast("cpu", dtype=dtype):
        out = lfq(z)
    assert_same_tokens_and_float32_losses(out, reference)
    assert out.quantized.dtype == dtype and torch.equal(out.quantized, reference.quantized.to(dtype))


def test_float32_and_float64_latents_keep_their_dtype():
    quantizer = vq()
    z = latents(torch.float32).detach()
    assert quantizer(z).loss.dtype == torch.float32 and quantizer(z).quantized.dtype == torch.float32
    out = quantizer(z.double())
    assert out.loss.dtype == torch.float64 and out.quantized.dtype == torch.float64
