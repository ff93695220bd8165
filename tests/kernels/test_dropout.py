"""CPU dropout (magvit/kernels/dropout.py): 16-bit masks, the hidden Dropout module, attention dropout written out."""

import pytest
import torch
import torch.nn.functional as F

from magvit import kernels
from magvit.errors import InputError
from magvit.kernels.dropout import Dropout, attention_with_dropout, dropout_keep_mask


def test_dropout_keep_mask_rate_and_unbiased_scale():
    torch.manual_seed(0)
    keep, scale = dropout_keep_mask((1000, 1000), 0.1)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    assert scale == 65536 / (65536 - 6554)  # 0.1 is realised as 6554 / 65536
    rate = 1 - keep.float().mean().item()
    assert abs(rate - 6554 / 65536) < 4 * (0.1 * 0.9 / 1e6) ** 0.5
    assert dropout_keep_mask((7, 3), 0.0)[0].all()  # odd sizes: the 16-bit view is cut to the shape
    torch.manual_seed(0)
    as_float, _ = dropout_keep_mask((1000, 1000), 0.1, out=torch.empty(1000, 1000))
    assert torch.equal(as_float, keep.float())  # the same draws written as 0/1 floats
    with pytest.raises(InputError, match=r"dropout rate must be in \[0, 1\)"):
        dropout_keep_mask((4,), 1.0)


def test_dropout_module_masks_scales_and_passes_gradients_through_kept_elements():
    with kernels.override(cpu_dropout=True):
        drop = Dropout(0.25)
    x = torch.rand(200, 300) + 0.5  # no zeros, so a zero in the output is a dropped element
    x.requires_grad_(True)
    torch.manual_seed(5)
    y = drop(x)
    torch.manual_seed(5)
    keep, scale = dropout_keep_mask(x.shape, 0.25)
    assert scale == 65536 / (65536 - 16384)
    assert torch.equal(y == 0, ~keep)  # the documented mask, drawn from the global RNG
    torch.testing.assert_close(y[keep], x[keep] * scale)
    y.sum().backward()
    assert torch.equal(x.grad, keep.float() * scale)
    drop.eval()
    assert drop(x) is x
    assert Dropout(0.0).train()(x) is x
    assert repr(drop) == "Dropout(p=0.25)"
    with pytest.raises(InputError, match=r"dropout rate must be in \[0, 1\)"):
        Dropout(1.0)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_dropout_is_sdpa_in_expectation(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 1, 2, 12, 8, generator=g).unbind(0)
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(attention_with_dropout(q, k, v, 0.0, causal), exact, atol=1e-6, rtol=1e-5)
    torch.manual_seed(1)
    draws = torch.stack([attention_with_dropout(q, k, v, 0.2, causal) for _ in range(4000)])
    assert not torch.equal(draws[0], draws[1])
    # Unbiased (E[mask * scale] = 1): one draw has std <= 0.5 max|v| ~ 1.3 here, so the mean of 4000 is
    # within 0.1 (5 sigma); a missing 1/P(keep) scale would be off by 20 % of |exact| (up to ~0.4).
    torch.testing.assert_close(draws.mean(0), exact, atol=0.1, rtol=0)
    assert (draws.mean(0) / 0.8 - exact).abs().max() > 0.15


def _written_out(q, k, v, p, causal):
    """The formula with autograd, one head after another, drawing the masks as the module documents."""
    heads = []
    for qi, ki, vi in zip(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)):
        s = (qi * qi.shape[-1] ** -0.5) @ ki.t()
        if causal:
            s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), float("-inf"))
        probs = s.softmax(-1)
        keep, scale = dropout_keep_mask(probs.shape, p)
        heads.append(torch.where(keep, probs, 0.0) @ vi * scale)
    return torch.stack(heads).view(q.shape)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_dropout_values_and_gradients_match_the_formula(causal):
    # 12 x 12 scores per head: a multiple of 4, so the per-sample draws split into per-head ones exactly.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64)
    torch.manual_seed(7)
    out = attention_with_dropout(q, k, v, 0.3, causal)
    got = torch.autograd.grad(out, (q, k, v), grad)
    torch.manual_seed(7)
    ref = _written_out(q, k, v, 0.3, causal)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
