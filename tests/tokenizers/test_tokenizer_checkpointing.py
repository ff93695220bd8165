"""VQ tokenizers' ``activation_checkpointing``: each encoder and decoder level of a training pass recomputed in
the backward pass, with the same losses and gradients; ``encode``/``decode`` (the lean route) untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from magvit import kernels
from magvit.errors import InputError
from magvit.pipeline import build_tokenizer
from magvit.registry import get_tokenizer

NAMES = ["vq3d", "vq2d"]
FRAMES, SIZE = 4, 16


def tiny(name: str, checkpointing: bool, **overrides):
    return get_tokenizer(name, preset="tiny", resolution=SIZE, activation_checkpointing=checkpointing,
                         **overrides).train()


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """The calls of ``torch.utils.checkpoint.checkpoint`` made by the encoder and decoder."""
    calls = []

    def spy(function, *args, **kwargs):
        calls.append((type(function).__name__, kwargs.get("use_reentrant")))
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    monkeypatch.setattr("magvit.tokenizers.autoencoder.checkpoint", spy)
    return calls


def loss_and_grads(model, video):
    out = model(video)
    loss = F.mse_loss(out.recon, video) + out.quantizer.loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_every_gradient_equal_those_without_checkpointing(name, make_clips, checkpoint_calls):
    plain, checkpointed = tiny(name, False), tiny(name, True)  # the same seed: the same initial weights
    video = make_clips(2, FRAMES, SIZE)
    loss, grads = loss_and_grads(plain, video)
    assert checkpoint_calls == []
    loss_ac, grads_ac = loss_and_grads(checkpointed, video)
    # one non-reentrant checkpoint per level: three encoder levels, three decoder levels (tiny: mults 1, 2, 4)
    assert checkpoint_calls == [("EncoderLevel", False)] * 3 + [("DecoderLevel", False)] * 3
    torch.testing.assert_close(loss_ac, loss, rtol=0, atol=0)
    assert grads_ac.keys() == grads.keys() and len(grads) > 20
    for key, grad in grads.items():
        torch.testing.assert_close(grads_ac[key], grad, rtol=0, atol=0, msg=f"gradient of {key}")


@pytest.mark.parametrize("name", NAMES)
def test_the_levels_are_recomputed_in_the_backward_pass(name, make_clips):
    model = tiny(name, True)
    calls = []
    for level in (model.encoder.levels[0], model.decoder.levels["0"]):
        level.blocks[0].register_forward_pre_hook(lambda module, args: calls.append(module))
    loss_and_grads(model, make_clips(1, FRAMES, SIZE))
    assert len(calls) == 4  # each hooked block: once forward, once recomputed


@pytest.mark.parametrize("lean", [True, False], ids=["lean_route", "training_route"])
@pytest.mark.parametrize("name", NAMES)
def test_encode_and_decode_are_never_checkpointed_and_unchanged(name, lean, make_clips, checkpoint_calls):
    with kernels.override(lean_inference=lean):
        plain, checkpointed = tiny(name, False), tiny(name, True)
    video = make_clips(2, FRAMES, SIZE)
    for model in (plain, checkpointed.eval()):  # the tokenizer of a pipeline is in eval mode
        model.eval()
    tokens = plain.encode(video)
    assert torch.equal(checkpointed.encode(video), tokens)
    assert torch.equal(checkpointed.decode(tokens), plain.decode(tokens))
    assert checkpoint_calls == []
    # a tokenizer left in train mode: the lean route still never checkpoints; the training route under
    # no_grad runs each level once through checkpoint, with the same values
    checkpointed.train()
    assert torch.equal(checkpointed.encode(video), tokens)
    assert torch.equal(checkpointed.decode(tokens), plain.decode(tokens))
    assert len(checkpoint_calls) == (0 if lean else 6)


@pytest.mark.parametrize("name", NAMES)
def test_the_option_round_trips_through_the_config_and_old_configs_default_to_off(name):
    model = tiny(name, True)
    assert model.config["activation_checkpointing"] is True
    rebuilt = build_tokenizer({"name": name, "config": dict(model.config)}, model.state_dict())
    assert rebuilt.encoder.activation_checkpointing and rebuilt.decoder.activation_checkpointing
    old = {k: v for k, v in model.config.items() if k != "activation_checkpointing"}  # saved before the option
    rebuilt = build_tokenizer({"name": name, "config": old})
    assert rebuilt.config["activation_checkpointing"] is False and not rebuilt.encoder.activation_checkpointing


def test_a_non_bool_option_is_refused():
    with pytest.raises(InputError, match="activation_checkpointing must be true or false, got 1"):
        tiny("vq3d", 1)
