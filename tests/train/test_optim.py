"""Optimisers and the warm-up + cosine schedule of both stages (magvit/train/optim.py)."""

import math

import pytest
import torch
from torch import nn

from magvit.train.optim import OptimConfig, make_optimizer, make_scheduler, param_groups, warmup_cosine
from magvit.transformer import MaskedTransformer

# -- warmup_cosine ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),  # warm-up starts at 0 (scenic linear_warmup: step / warmup)
        (1, 0.1),
        (5, 0.5),
        (9, 0.9),
        (10, 1.0),  # peak at the end of warm-up
        (35, 0.5 + math.sqrt(2) / 4),  # a quarter of the decay: 0.5 * (1 + cos(pi / 4))
        (60, 0.5),  # half-way through the decay: 0.5 * (1 + cos(pi / 2))
        (85, 0.5 - math.sqrt(2) / 4),
        (110, 0.0),  # decays to exactly 0 at total_steps
        (111, 0.0),  # and stays there beyond it
        (10_000, 0.0),
    ],
)
def test_warmup_cosine_values(step, expected):
    assert warmup_cosine(step, warmup_steps=10, total_steps=110) == pytest.approx(expected, abs=1e-12)


def test_warmup_cosine_without_warmup_starts_at_peak():
    assert warmup_cosine(0, 0, 100) == 1.0
    assert warmup_cosine(50, 0, 100) == pytest.approx(0.5, abs=1e-12)
    assert warmup_cosine(100, 0, 100) == 0.0


def test_warmup_cosine_warmup_as_long_as_the_run():
    # No decay phase: the ramp reaches 1 at the last step, then the multiplier is 0 (never negative, no 0-division).
    assert warmup_cosine(5, 10, 10) == 0.5
    assert warmup_cosine(10, 10, 10) == 1.0
    assert warmup_cosine(11, 10, 10) == 0.0


def test_warmup_cosine_is_monotone_up_then_down():
    values = [warmup_cosine(s, 20, 200) for s in range(0, 230)]
    peak = values.index(max(values))
    assert peak == 20
    assert all(a < b for a, b in zip(values[:peak], values[1 : peak + 1]))
    assert all(a > b for a, b in zip(values[peak:200], values[peak + 1 : 201]))
    assert min(values) == 0.0


def test_scheduler_applies_the_multiplier_to_the_base_lr():
    p = nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = make_scheduler(opt, warmup_steps=4, total_steps=12)
    seen = []
    for _ in range(14):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1e-3 * warmup_cosine(s, 4, 12) for s in range(14)], abs=1e-15)
    assert seen[:5] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3], abs=1e-15)
    assert seen[8] == pytest.approx(5e-4, abs=1e-15) and seen[12] == 0.0 and seen[13] == 0.0


# -- param_groups -------------------------------------------------------------------------------------


class Hand(nn.Module):
    """One of every kind of layer the models use."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.linear = nn.Linear(4, 6)
        self.conv2 = nn.Conv2d(3, 5, 3, bias=False)
        self.conv3 = nn.Conv3d(5, 4, (1, 3, 3))
        self.ln = nn.LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.gain = nn.Parameter(torch.ones(4))  # a bare 1-D parameter: not a kernel


def _ids(params):
    return {id(p) for p in params}


def test_param_groups_on_hand_made_module():
    m = Hand()
    groups = param_groups(m, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decay, no_decay = (_ids(g["params"]) for g in groups)
    assert decay == _ids([m.linear.weight, m.conv2.weight, m.conv3.weight])
    assert no_decay == _ids([m.embed.weight, m.linear.bias, m.conv3.bias, m.ln.weight, m.ln.bias,
                             m.gn.weight, m.gn.bias, m.gain])
    # frozen parameters are in neither group
    assert not (_ids(m.frozen.parameters()) & (decay | no_decay))


def test_param_groups_drops_empty_groups():
    groups = param_groups(nn.LayerNorm(3), 0.5)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0 and len(groups[0]["params"]) == 2
    groups = param_groups(nn.Linear(3, 3, bias=False), 0.5)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.5


@pytest.fixture(scope="module")
def tiny_transformer():
    return MaskedTransformer.from_preset("tiny", codebook_size=16, num_classes=2, prompts=["fp"], num_tokens=8)


def test_param_groups_on_tiny_transformer(tiny_transformer):
    m = tiny_transformer
    decay_group, no_decay_group = param_groups(m, 0.045)
    decay, no_decay = _ids(decay_group["params"]), _ids(no_decay_group["params"])
    # every trainable parameter exactly once
    assert len(decay_group["params"]) + len(no_decay_group["params"]) == len(list(m.parameters()))
    assert decay | no_decay == _ids(m.parameters()) and not decay & no_decay
    # the tied word embedding (also the output projection) and the positions are embeddings: not decayed
    assert id(m.word.weight) in no_decay and id(m.position.weight) in no_decay
    assert id(m.head.bias) in no_decay
    # kernels: qkv, proj, fc1, fc2 of each block and the head's dense layer
    names = {id(p): n for n, p in m.named_parameters()}
    decayed_names = sorted(names[i] for i in decay)
    expected = sorted([f"blocks.{b}.{k}.weight" for b in range(4) for k in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
                      + ["head.dense.weight"])
    assert decayed_names == expected
    assert all(m.get_parameter(n).dim() == 1 or n in ("word.weight", "position.weight")
               for n in (names[i] for i in no_decay))


# -- make_optimizer -----------------------------------------------------------------------------------


def test_make_optimizer_transformer_defaults(tiny_transformer):
    opt = make_optimizer(tiny_transformer, OptimConfig())
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.045, 0.0]
    for g in opt.param_groups:
        assert g["lr"] == 1e-4 and g["betas"] == (0.9, 0.96)


def test_make_optimizer_tokenizer_settings():
    m = Hand()
    opt = make_optimizer(m, OptimConfig(lr=3e-4, betas=(0.0, 0.99), weight_decay=0.0, warmup_steps=0, grad_clip=0.0))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]
    assert all(g["lr"] == 3e-4 and g["betas"] == (0.0, 0.99) for g in opt.param_groups)


def test_weight_decay_is_decoupled_and_kernel_only():
    """With zero gradients, AdamW's update is exactly p *= (1 - lr * wd), and only on the decayed group."""
    m = Hand()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = make_optimizer(m, OptimConfig(lr=0.5, weight_decay=0.1))
    for p in m.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in m.named_parameters():
        factor = 1 - 0.5 * 0.1 if n in ("linear.weight", "conv2.weight", "conv3.weight") else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor, rtol=0, atol=0)
