"""The encoder and decoder (magvit/tokenizers/autoencoder.py) on the lean inference route and the plain one."""

import pytest
import torch

from magvit.kernels import lean_route
from magvit.registry import get_tokenizer
from magvit.tokenizers.layers import Conv


@pytest.mark.parametrize("name", ["vq3d", "vq2d"])
@pytest.mark.parametrize("padding", ["reflect", "zeros", "replicate"])
def test_encoder_and_decoder_lean_route_match_the_training_forward(name, padding):
    tok = get_tokenizer(name, preset="tiny", resolution=16, padding=padding).eval()
    video = torch.rand(2, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    net_in = tok.to_network(video)
    latents = tok.encoder(net_in)  # autograd on: the training route
    quantized = tok.quantize(latents).quantized
    recon = tok.decoder(quantized)
    with lean_route(tok):
        torch.testing.assert_close(tok.encoder(net_in), latents.detach(), atol=1e-4, rtol=1e-4)
        lean = tok.decoder(quantized)
    assert not lean.requires_grad
    torch.testing.assert_close(lean, recon.detach(), atol=1e-4, rtol=1e-4)


def test_forward_hooks_see_every_conv_output_on_both_routes():
    # The lean route calls a conv once per temporal slab (conv_in_slabs): the hooks must still see every
    # conv, and together the whole of its output, so FLOP counters and feature taps add up.
    tok = get_tokenizer("vq3d", preset="tiny", resolution=16).eval()
    seen = {False: {}, True: {}}
    convs = [m for m in tok.decoder.modules() if isinstance(m, Conv)]
    for m in convs:
        m.register_forward_hook(lambda mod, args, out: seen[mod.lean].setdefault(id(mod), []).append(out.numel()))
    latents = torch.randn(1, tok.decoder.conv_in.weight.shape[1], 2, 4, 4)  # [N, embedding_dim, t, h, w]
    tok.decoder(latents)
    with lean_route(tok):
        tok.decoder(latents)
    assert set(seen[False]) == set(seen[True]) == set(map(id, convs))
    assert all(len(calls) == 1 for calls in seen[False].values())
    assert {k: sum(v) for k, v in seen[True].items()} == {k: v[0] for k, v in seen[False].items()}
    assert any(len(calls) > 1 for calls in seen[True].values())  # 8 output frames: two slabs
