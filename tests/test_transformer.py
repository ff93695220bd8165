"""MaskedTransformer and Vocabulary (as ``simplified_bert.py``): layout, sizes, structure, prefix and causal modes."""

import json

import pytest
import torch
import torch.nn.functional as F

from magvit import kernels
from magvit.errors import InputError
from magvit.transformer import MaskedTransformer, Vocabulary, count_parameters

TEN_PROMPTS = ["fp", "fi", "opc", "oph", "opv", "opd", "ipc", "ipd", "cg", "cfp"]


def small(**overrides):
    kwargs = dict(num_tokens=12, num_layers=2, hidden_size=32, num_heads=4, mlp_dim=64, dropout=0.0,
                  attention_dropout=0.0)
    kwargs.update(overrides)
    return MaskedTransformer.from_preset("tiny", codebook_size=16, num_classes=3, prompts=["a", "b"], **kwargs).eval()


def ids(model, batch=2, prompt="a", label=None):
    v = model.vocab
    return (torch.full((batch,), v.prompt_id(prompt)), torch.full((batch,), v.class_id(label)))


# -- vocabulary -------------------------------------------------------------------------------------------


def test_vocabulary_layout_ten_tasks_174_classes():
    v = Vocabulary(1024, 174, tuple(TEN_PROMPTS))
    assert v.class_id(0) == 1024 and v.class_id(173) == 1197
    assert v.class_id(None) == v.uncond_id == 1198
    assert [v.prompt_id(p) for p in TEN_PROMPTS] == list(range(1199, 1209))
    assert v.mask_id == 1209 and v.size == 1210 and v.num_prefix == 2


def test_vocabulary_shared_prompts_collapse_and_single_task():
    v = Vocabulary(8, 0, ("fp", "op", "op", "fp", "cg"))
    assert v.prompts == ("fp", "op", "cg")
    assert v.uncond_id == 8 and v.prompt_id("op") == 10 and v.mask_id == 12
    single = Vocabulary(1024, 101)  # the authors' UCF CG single-task vocabulary
    assert single.uncond_id == 1125 and single.mask_id == 1126 and single.size == 1127 and single.num_prefix == 1


def test_vocabulary_bad_input():
    v = Vocabulary(8, 2, ("fp",))
    with pytest.raises(InputError, match="unknown task prompt 'ipc'.*fp"):
        v.prompt_id("ipc")
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        v.class_id(2)
    assert v.class_ids(torch.tensor([1, -1, 0]), 3).tolist() == [9, 10, 8]
    with pytest.raises(InputError, match="shape"):
        v.class_ids(torch.tensor([1, 0]), 3)


# -- sizes and structure ----------------------------------------------------------------------------------


def expected_parameters(layers, d, mlp, vocab, positions):
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d) + 4 * d  # attn, mlp, 2 LN
    head = d * d + d + 2 * d + vocab  # dense, LN, output bias (weights tied to the embedding)
    return layers * block + vocab * d + positions * d + 2 * d + head


@pytest.mark.parametrize(
    "preset,layers,d,mlp,approx",
    [("B", 12, 768, 3072, 87e6), ("L", 24, 1024, 4096, 305e6)],
)
def test_preset_parameter_counts(preset, layers, d, mlp, approx):
    with torch.device("meta"):  # no memory, no init cost
        model = MaskedTransformer.from_preset(preset, codebook_size=1024, num_classes=174, prompts=TEN_PROMPTS)
    n = count_parameters(model)
    print(f"{preset}: {n:,} parameters (vocabulary {model.vocab.size}, sequence 2 + 1024)")
    assert n == expected_parameters(layers, d, mlp, 1210, 1026)
    assert abs(n - approx) / approx < 0.01
    assert len(model.blocks) == layers and model.blocks[0].attn.num_heads == d // 64


def test_config_rebuilds_identical_model_and_is_plain_data():
    model = small(causal=False, prefix_condition=True, init_seed=3)
    json.dumps(model.config)
    clone = MaskedTransformer(**model.config)
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), name
    other = MaskedTransformer(**{**model.config, "init_seed": 4})
    assert not torch.equal(other.word.weight, model.word.weight)


def test_init_truncated_normal_and_zero_biases():
    model = MaskedTransformer.from_preset("tiny", codebook_size=64, num_classes=10, prompts=["x"], num_tokens=64)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all(), name
        elif "norm" in name:
            assert (p == 1).all(), name
        else:
            assert p.abs().max() <= 0.04 + 1e-7, name
    w = model.blocks[0].mlp.fc1.weight
    # std of N(0, 0.02) truncated at +-2 sigma is 0.02 * 0.8796
    assert abs(float(w.detach().std()) - 0.02 * 0.8796) < 5e-4
    assert model.blocks[0].norm1.eps == 1e-12 and model.embed_norm.eps == 1e-12


def test_logits_are_codebook_only_and_tied_to_word_embedding():
    model = small()
    x = torch.randint(0, 16, (2, 12), generator=torch.Generator().manual_seed(0))
    logits = model(x, *ids(model))
    assert logits.shape == (2, 12, 16)
    logits.sum().backward()
    assert model.word.weight.grad[:16].abs().sum() > 0  # the output layer is the embedding
    # the head owns only its hidden Dense; no separate output matrix
    assert [n for n, p in model.head.named_parameters() if p.dim() == 2] == ["dense.weight"]


def test_bidirectional_every_position_sees_every_token():
    model = small()
    x = torch.randint(0, 16, (1, 12), generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 16
    a, b = model(x, *ids(model, 1)), model(y, *ids(model, 1))
    assert not torch.allclose(a[0, 0], b[0, 0])


def test_prompt_and_class_change_the_output():
    model = small()
    x = torch.randint(0, 16, (2, 12), generator=torch.Generator().manual_seed(2))
    base = model(x, *ids(model))
    assert not torch.allclose(base, model(x, *ids(model, prompt="b")))
    assert not torch.allclose(base, model(x, *ids(model, label=1)))


def test_dropout_only_in_training():
    model = small(dropout=0.1, attention_dropout=0.1)
    x = torch.randint(0, 16, (2, 12), generator=torch.Generator().manual_seed(3))
    assert torch.equal(model(x, *ids(model)), model(x, *ids(model)))
    model.train()
    assert not torch.allclose(model(x, *ids(model)), model(x, *ids(model)))


def test_forward_rejects_bad_input():
    model = small()
    p, c = ids(model)
    with pytest.raises(InputError, match=r"inputs must be a long tensor of shape \(2, 12\)"):
        model(torch.zeros(2, 11, dtype=torch.long), p, c)
    with pytest.raises(InputError, match="long"):
        model(torch.zeros(2, 12), p, c)
    with pytest.raises(InputError, match="ids must lie in"):
        model(torch.full((2, 12), 99), p, c)
    with pytest.raises(InputError, match="prompt ids"):
        model(torch.zeros(2, 12, dtype=torch.long), None, c)
    with pytest.raises(InputError, match="preset"):
        MaskedTransformer.from_preset("XL", codebook_size=8, num_classes=0, prompts=[])


# -- prefix condition (paper Table 5) ----------------------------------------------------------------------


def test_prefix_tokens_are_placed_by_their_visual_position():
    model = small(prefix_condition=True)
    g = torch.Generator().manual_seed(4)
    x = torch.full((1, 12), model.vocab.mask_id)
    prefix = torch.randint(0, 16, (1, 5), generator=g)
    index = torch.tensor([[0, 1, 2, 7, 9]])
    out = model(x, *ids(model, 1), prefix=prefix, prefix_index=index)
    assert out.shape == (1, 12, 16)
    # Same tokens at the same visual positions in another order: positions come from prefix_index only.
    perm = torch.tensor([3, 0, 4, 2, 1])
    shuffled = model(x, *ids(model, 1), prefix=prefix[:, perm], prefix_index=index[:, perm])
    torch.testing.assert_close(out, shuffled, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, model(x, *ids(model, 1)))
    moved = model(x, *ids(model, 1), prefix=prefix, prefix_index=index + 1)
    assert not torch.allclose(out, moved)


def test_prefix_needs_prefix_model_and_index():
    model = small()
    x = torch.zeros(1, 12, dtype=torch.long)
    with pytest.raises(InputError, match="prefix_condition=True"):
        zeros = torch.zeros(1, 2, dtype=torch.long)
        model(x, *ids(model, 1), prefix=zeros, prefix_index=zeros)
    pmodel = small(prefix_condition=True)
    with pytest.raises(InputError, match="prefix_index"):
        pmodel(x, *ids(pmodel, 1), prefix=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(InputError, match=r"\[0, 12\)"):
        pmodel(x, *ids(pmodel, 1), prefix=torch.zeros(1, 1, dtype=torch.long), prefix_index=torch.tensor([[12]]))


# -- causal mode and the key/value cache (paper Table 6) ---------------------------------------------------


def test_causal_logits_depend_only_on_earlier_tokens():
    model = small(causal=True)
    x = torch.randint(0, 16, (1, 12), generator=torch.Generator().manual_seed(5))
    y = x.clone()
    y[0, 6] = (y[0, 6] + 3) % 16
    a, b = model(x, *ids(model, 1)), model(y, *ids(model, 1))
    torch.testing.assert_close(a[:, :7], b[:, :7])  # logits[i] predicts token i from tokens < i
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_causal_vocabulary_has_a_separator_and_others_do_not():
    causal, bidir = small(causal=True), small()
    assert causal.vocab.separator_id == bidir.vocab.mask_id and causal.vocab.mask_id == bidir.vocab.mask_id + 1
    assert causal.vocab.size == bidir.vocab.size + 1
    with pytest.raises(InputError, match="no separator"):
        bidir.vocab.separator_id


def test_causal_logits_depend_on_the_condition_prefix():
    model = small(causal=True)
    x = torch.randint(0, 16, (1, 12), generator=torch.Generator().manual_seed(5))
    index = torch.tensor([[0, 1]])
    a = model(x, *ids(model, 1), torch.tensor([[3, 4]]), index)
    b = model(x, *ids(model, 1), torch.tensor([[3, 5]]), index)
    assert not torch.allclose(a[:, 0], b[:, 0])  # the first token already sees the prefix


@pytest.mark.parametrize("chunk", [1, 5])
@pytest.mark.parametrize("condition", [0, 3])
def test_kv_cache_equals_uncached_causal_forward(chunk, condition):
    model = small(causal=True)
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, 16, (3, 12), generator=g)
    prefix = torch.randint(0, 16, (3, condition), generator=g) if condition else None
    index = torch.tensor([[0, 4, 7]]).expand(3, 3) if condition else None
    prompt, label = ids(model, 3)
    full = model(x, prompt, label, prefix, index)
    cache = model.init_cache(3, condition_length=condition)
    steps = [model.start(cache, prompt, label, prefix, index)[:, None]]
    for start in range(0, 11, chunk):
        steps.append(model.step(x[:, start : min(start + chunk, 11)], cache))
    cached = torch.cat(steps, dim=1)
    assert cache.length == 4 + condition + 11
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)


def test_cache_needs_causal_model_and_room():
    with pytest.raises(InputError, match="causal"):
        small().init_cache(1)
    model = small(causal=True)
    cache = model.init_cache(1)
    with pytest.raises(InputError, match="call start"):
        model.step(torch.zeros(1, 1, dtype=torch.long), cache)
    model.start(cache, *ids(model, 1))
    with pytest.raises(InputError, match="holds 16 positions"):
        model.step(torch.zeros(1, 13, dtype=torch.long), cache)
    with pytest.raises(InputError, match="cache must be empty"):
        model.start(cache, *ids(model, 1))


# -- dropout in CPU training (magvit/kernels/dropout.py has its own tests) -------------------------


def test_cpu_training_uses_attention_dropout_and_is_seeded():
    with kernels.override(cpu_dropout=True):
        model = small(num_layers=1, attention_dropout=0.5).train()
    x = torch.randint(0, 16, (2, 12))
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(model(x, *ids(model)))
    assert torch.equal(runs[0], runs[1])
    runs[0].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.blocks[0].attn.parameters())
    torch.manual_seed(4)
    assert not torch.equal(model(x, *ids(model)), runs[1].detach())
    model.eval()
    assert torch.equal(model(x, *ids(model)), model(x, *ids(model)))
