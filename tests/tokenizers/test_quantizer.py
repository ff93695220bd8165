"""Vector quantizers (the authors' ``videogvt/models/vqvae.py``; MAGVIT-v2 LFQ)."""

import math

import pytest
import torch

from magvit.errors import InputError
from magvit.tokenizers.quantizer import LookupFreeQuantizer, VectorQuantizer, entropy_loss, usage_stats


def _vq(**kw):
    vq = VectorQuantizer(3, 2, **kw)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
    return vq


def test_nearest_code_losses_and_straight_through():
    vq = _vq(entropy_weight=0.0)
    z = torch.tensor([[[0.9], [0.1]], [[0.1], [1.5]]]).permute(1, 0, 2)[None]  # [1, 2 (D), 2, 1]
    z = z.clone().requires_grad_(True)
    out = vq(z)
    assert out.tokens.tolist() == [[[1], [2]]]
    expected_q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(out.quantized[0, :, :, 0].T, expected_q)
    mse = ((torch.tensor([[0.9, 0.1], [0.1, 1.5]]) - expected_q) ** 2).mean()
    assert torch.isclose(out.commitment_loss, mse) and torch.isclose(out.codebook_loss, mse)
    assert torch.isclose(out.loss, 1.25 * mse)  # 0.25 commitment + 1.0 codebook
    out.quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight-through: identity gradient


def test_lookup_matches_quantized_values():
    vq = _vq()
    tokens = torch.tensor([[[2, 0], [1, 1]]])
    latents = vq.lookup(tokens)
    assert latents.shape == (1, 2, 2, 2)
    assert latents[0, :, 0, 0].tolist() == [0.0, 2.0]
    assert torch.equal(vq(latents).tokens, tokens)


def test_entropy_loss_extremes():
    confident_diverse = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert abs(entropy_loss(confident_diverse).item() - (-math.log(2))) < 1e-4
    collapsed = torch.tensor([[100.0, 0.0], [100.0, 0.0]])
    assert abs(entropy_loss(collapsed).item()) < 1e-4


def test_usage_stats():
    perplexity, usage = usage_stats(torch.tensor([0, 0, 1, 1]), 8)
    assert abs(perplexity.item() - 2.0) < 1e-5 and usage.item() == 0.25


def test_codebook_init_is_variance_scaling_fan_in_uniform():
    vq = VectorQuantizer(1024, 256)
    vq.reset_parameters(torch.Generator().manual_seed(0))
    bound = math.sqrt(3 / 1024)
    assert vq.codebook.abs().max() <= bound and vq.codebook.abs().max() > 0.99 * bound


def test_lfq_tokens_are_sign_bits_and_round_trip():
    lfq = LookupFreeQuantizer(8, 3)
    z = torch.tensor([0.5, -0.2, 0.3]).reshape(1, 3, 1)
    out = lfq(z)
    assert out.tokens.tolist() == [[1 + 4]]
    assert out.quantized[0, :, 0].tolist() == [1.0, -1.0, 1.0]
    tokens = torch.arange(8).reshape(1, 8)
    assert torch.equal(lfq(lfq.lookup(tokens)).tokens, tokens)


def test_lfq_rejects_codebook_not_power_of_dim():
    with pytest.raises(InputError, match="2\\^embedding_dim"):
        LookupFreeQuantizer(1000, 10)
