"""The kernel switch (magvit/kernels/__init__.py): each position picks the implementation it names, once, at
construction or through ``lean_route``, and both positions compute the same function."""

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import magvit
import magvit.transformer
from magvit import kernels
from magvit.errors import InputError
from magvit.kernels import KernelSettings, LeanRoute, from_environment, lean_route
from magvit.kernels.dropout import Dropout, dropout_keep_mask
from magvit.registry import get_tokenizer
from magvit.tokenizers.layers import ResBlock
from magvit.transformer import MaskedTransformer

BOTH = [True, False]


def test_settings_from_the_environment():
    assert from_environment({}, cuda_available=False) == KernelSettings(cpu_dropout=True, lean_inference=True)
    assert from_environment({}, cuda_available=True) == KernelSettings(cpu_dropout=False, lean_inference=True)
    on = from_environment({kernels.ENV_SWITCH: "1"}, cuda_available=True)
    off = from_environment({kernels.ENV_SWITCH: "0"}, cuda_available=False)
    assert on == KernelSettings(cpu_dropout=True, lean_inference=True)
    assert off == KernelSettings(cpu_dropout=False, lean_inference=False)
    with pytest.raises(InputError, match=r"MAGVIT_CPU_KERNELS must be 1 \(CPU kernels on\) or 0 \(off\), got 'yes'"):
        from_environment({kernels.ENV_SWITCH: "yes"}, cuda_available=False)


def test_override_changes_what_modules_built_inside_use_and_restores():
    before = kernels.current()
    with kernels.override(cpu_dropout=not before.cpu_dropout) as inside:
        assert inside == kernels.current() == KernelSettings(not before.cpu_dropout, before.lean_inference)
        drop = Dropout(0.1)
    assert kernels.current() == before
    assert drop.cpu_dropout is (not before.cpu_dropout)  # kept from construction
    with pytest.raises(InputError, match="unknown kernel setting.*fused_attention.*cpu_dropout, lean_inference"):
        kernels.configure(fused_attention=True)
    with pytest.raises(InputError, match="kernel setting lean_inference must be True or False, got 'on'"):
        kernels.configure(lean_inference="on")
    assert kernels.current() == before


def test_configure_returns_the_previous_settings():
    before = kernels.configure(lean_inference=False)
    try:
        assert not kernels.current().lean_inference
        assert kernels.configure(lean_inference=True) == KernelSettings(before.cpu_dropout, False)
    finally:
        kernels.configure(**{"cpu_dropout": before.cpu_dropout, "lean_inference": before.lean_inference})
    assert kernels.current() == before


# -- cpu_dropout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cpu_dropout", BOTH)
def test_dropout_uses_the_implementation_the_switch_names(cpu_dropout):
    with kernels.override(cpu_dropout=cpu_dropout):
        drop = Dropout(0.3)
    x = torch.rand(64, 48) + 0.5
    torch.manual_seed(2)
    got = drop(x)
    torch.manual_seed(2)
    if cpu_dropout:
        keep, scale = dropout_keep_mask(x.shape, 0.3)
        want = x * keep * scale
    else:
        want = F.dropout(x, 0.3, training=True)
    assert torch.equal(got, want)
    assert drop.eval()(x) is x  # off in evaluation either way


def _transformer(cpu_dropout: bool) -> MaskedTransformer:
    with kernels.override(cpu_dropout=cpu_dropout):
        return MaskedTransformer.from_preset("tiny", codebook_size=16, num_classes=3, prompts=["a"], num_tokens=12,
                                             num_layers=2, hidden_size=32, num_heads=4, mlp_dim=64, dropout=0.1,
                                             attention_dropout=0.1, init_seed=5)


def test_transformer_switch_positions_compute_the_same_function(monkeypatch):
    calls = []
    written_out = magvit.transformer.attention_with_dropout
    monkeypatch.setattr(magvit.transformer, "attention_with_dropout",
                        lambda *a, **k: calls.append(1) or written_out(*a, **k))
    models = {flag: _transformer(flag) for flag in BOTH}
    x = torch.randint(0, 16, (2, 12), generator=torch.Generator().manual_seed(0))
    prompt, label = torch.full((2,), models[True].vocab.prompt_id("a")), torch.full((2,), models[True].vocab.class_id(None))
    for flag, model in models.items():
        assert all(m.cpu_dropout is flag for m in model.modules() if hasattr(m, "cpu_dropout"))
    # the same weights, and without dropout the same outputs
    assert all(torch.equal(a, b) for a, b in zip(models[True].state_dict().values(), models[False].state_dict().values()))
    evals = [models[flag].eval()(x, prompt, label) for flag in BOTH]
    assert torch.equal(evals[0], evals[1]) and calls == []
    # in training each position draws its own masks; the written-out attention runs only where chosen
    for flag in BOTH:
        calls.clear()
        torch.manual_seed(1)
        out = models[flag].train()(x, prompt, label)
        assert out.shape == evals[0].shape and torch.isfinite(out).all()
        assert len(calls) == (2 if flag else 0)  # one per layer


# -- lean_inference ----------------------------------------------------------------------------------


def test_lean_route_turns_blocks_on_inside_only_and_nests():
    tok = get_tokenizer("vq3d", preset="tiny", resolution=16)
    blocks = [m for m in tok.modules() if isinstance(m, LeanRoute)]
    assert blocks and not any(m.lean for m in blocks)
    with lean_route(tok):
        assert all(m.lean for m in blocks) and not torch.is_grad_enabled()
        with lean_route(tok.decoder):
            pass
        assert all(m.lean for m in blocks)  # the inner block restored what it found
    assert not any(m.lean for m in blocks) and torch.is_grad_enabled()
    with lean_route(tok, enabled=False):
        assert not any(m.lean for m in blocks) and not torch.is_grad_enabled()


@pytest.mark.parametrize("name", ["vq3d", "vq2d"])
def test_tokenizer_switch_positions_give_the_same_tokens_and_video(name):
    toks = {}
    for flag in BOTH:
        with kernels.override(lean_inference=flag):
            toks[flag] = get_tokenizer(name, preset="tiny", resolution=16).eval()
        assert toks[flag].lean_inference is flag
    routes = {flag: [] for flag in BOTH}
    for flag, tok in toks.items():
        for m in tok.modules():
            if isinstance(m, ResBlock):
                m.register_forward_pre_hook(lambda mod, args, seen=routes[flag]: seen.append(mod.lean))
    video = torch.rand(2, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    tokens = {flag: tok.encode(video) for flag, tok in toks.items()}
    assert torch.equal(tokens[True], tokens[False])
    decoded = {flag: tok.decode(tokens[True]) for flag, tok in toks.items()}
    torch.testing.assert_close(decoded[True], decoded[False], atol=1e-5, rtol=1e-5)
    assert routes[True] and all(routes[True]) and not any(routes[False])
    assert not any(m.lean for tok in toks.values() for m in tok.modules() if isinstance(m, LeanRoute))
    inference_calls = len(routes[True])
    out = toks[True](video)  # training's forward: the plain route, with autograd
    assert out.recon.requires_grad and len(routes[True]) > inference_calls
    assert not any(routes[True][inference_calls:])


def test_no_forward_picks_an_implementation_by_device_or_autograd():
    root = Path(magvit.__file__).parent
    hits = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "is_grad_enabled" in source:
            hits.append(f"{path.relative_to(root)}: is_grad_enabled")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.name == "forward" and "device.type" in ast.get_source_segment(source, node):
                hits.append(f"{path.relative_to(root)}:{node.lineno}: device.type in forward")
    assert not hits, hits
