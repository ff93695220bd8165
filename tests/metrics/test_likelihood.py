"""Held-out token metrics: exact sums, the first decoding step's input, and which positions are scored."""

import math

import pytest
import torch
from torch import nn

from magvit.batch import ClipBatch
from magvit.metrics.likelihood import TokenLikelihood, evaluate_token_likelihood, first_step_logits
from magvit.pipeline import MagvitPipeline


def test_token_likelihood_sums_nll_hits_and_trivial_hits_over_scored_positions():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    targets = torch.tensor([[0, 2, 2]])
    scored = torch.tensor([[True, True, False]])
    cond = torch.tensor([[0, 1, 2]])
    m = TokenLikelihood()
    m.update(logits, targets, scored, cond)
    s = m.compute()
    assert s.num_tokens == 2
    assert s.token_nll == pytest.approx((-math.log(0.5) - math.log(0.1)) / 2)
    assert s.token_accuracy == 0.5  # position 0 right, position 1 argmax 1 != 2; position 2 not scored
    assert s.token_accuracy_trivial == 0.5  # z~ equals the target at position 0 only among the scored
    m.update(logits, targets, scored)  # no condition tokens: the trivial answer counts nothing more
    s2 = m.compute()
    assert s2.num_tokens == 4 and s2.token_accuracy_trivial == 0.5 and s2.token_nll == pytest.approx(s.token_nll)


def test_no_scored_token_gives_none():
    m = TokenLikelihood()
    m.update(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.bool))
    s = m.compute()
    assert (s.token_nll, s.token_accuracy, s.token_accuracy_trivial, s.num_tokens) == (None, None, None, 0)


class Recording(nn.Module):
    """Wraps a transformer and records the inputs of each call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []
        self.vocab, self.num_tokens, self.causal = model.vocab, model.num_tokens, model.causal

    def forward(self, inputs, prompt, label, *args, **kwargs):
        self.calls.append((inputs.clone(), kwargs))
        return self.model(inputs, prompt, label, *args, **kwargs)


@pytest.mark.parametrize("method", ["commit", "latent", "prefix"])
def test_first_step_input_is_the_samplers_initial_state(method):
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=32, method=method)
    model = Recording(pipe.transformer)
    sampler = pipe.decoding_sampler(None)
    n = model.num_tokens
    g = torch.Generator().manual_seed(0)
    cond_tokens = torch.randint(0, pipe.tokenizer.codebook_size, (2, n), generator=g)
    cond_mask = torch.zeros(2, n, dtype=torch.bool)
    cond_mask[:, : n // 4] = True  # the first latent frame, as fp's
    label = model.vocab.class_ids(None, 2)
    prompt = torch.full((2,), model.vocab.prompt_id("fp"), dtype=torch.long)
    logits = first_step_logits(model, sampler, prompt, label, cond_tokens, cond_mask)
    assert logits.shape == (2, n, pipe.tokenizer.codebook_size) and logits.dtype == torch.float32
    (inputs, kwargs), = model.calls
    state = sampler.init_state(cond_tokens, cond_mask, model.vocab.mask_id)
    assert torch.equal(inputs, state.inputs)
    mask_id = model.vocab.mask_id
    assert bool((inputs[:, n // 4:] == mask_id).all())  # every position outside the condition starts masked
    if method == "prefix":
        assert torch.equal(kwargs["prefix"], cond_tokens[:, : n // 4])
    else:
        assert kwargs == {} and torch.equal(inputs[:, : n // 4], cond_tokens[:, : n // 4])


def clips(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [ClipBatch(video=torch.rand(n, 3, 16, 32, 32, generator=g), label=torch.arange(n) % 3, keys=["a", "b"][:n])]


class Oracle(nn.Module):
    """Puts (almost) all mass on given tokens: the real ones (``right``) or a wrong one everywhere."""

    def __init__(self, model, targets, right=True):
        super().__init__()
        self.vocab, self.num_tokens, self.causal = model.vocab, model.num_tokens, model.causal
        self.targets, self.right, self.k = targets, right, model.codebook_size
        self.codebook_size = self.k
        self.anchor = nn.Parameter(torch.zeros(()))  # the pipeline reads its device from the parameters

    def forward(self, inputs, prompt, label, *args, **kwargs):
        tokens = self.targets if self.right else (self.targets + 1) % self.k
        return torch.nn.functional.one_hot(tokens, self.k).float() * 50.0


def test_scores_only_the_positions_outside_the_condition():
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp", "opc", "cg"], num_classes=3, resolution=32)
    batches = clips()
    video = batches[0].video
    targets = pipe.tokenizer.encode(video).reshape(2, -1)
    n = targets.shape[1]
    random_scores = evaluate_token_likelihood(pipe, batches)
    expected = {}
    for name in ("fp", "opc"):
        _, cond_tokens, cond_mask = pipe.condition_tokens(pipe.tasks[name], video)
        scored = ~cond_mask.reshape(2, -1)
        expected[name] = int(scored.sum())
        hits = (cond_tokens.reshape(2, -1) == targets)[scored].float().mean()
        assert random_scores[name].token_accuracy_trivial == pytest.approx(float(hits))
    expected["cg"] = 2 * n  # no condition: every token is generated
    assert {k: s.num_tokens for k, s in random_scores.items()} == expected
    assert 0 < expected["fp"] < 2 * n and random_scores["cg"].token_accuracy_trivial is None
    # an untrained model is near the uniform NLL log(K)
    k = pipe.tokenizer.codebook_size
    assert random_scores["fp"].token_nll == pytest.approx(math.log(k), rel=0.2)

    pipe.transformer = Oracle(pipe.transformer, targets)
    oracle = evaluate_token_likelihood(pipe, batches)
    for s in oracle.values():
        assert s.token_accuracy == 1.0 and s.token_nll < 1e-6
    pipe.transformer = Oracle(pipe.transformer, targets, right=False)
    wrong = evaluate_token_likelihood(pipe, batches)
    for s in wrong.values():
        assert s.token_accuracy == 0.0 and s.token_nll == pytest.approx(50.0, rel=1e-3)


def test_max_clips_and_causal_models():
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=32)
    one = evaluate_token_likelihood(pipe, clips(), max_clips=1)
    both = evaluate_token_likelihood(pipe, clips())
    assert 2 * one["fp"].num_tokens == both["fp"].num_tokens
    ar = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=32, method="ar")
    s = evaluate_token_likelihood(ar, clips())["fp"]
    assert (s.token_nll, s.token_accuracy, s.num_tokens) == (None, None, 0)
