"""The decoding loop with the built-in samplers: Algorithm 1's schedule and invariants, MaskGIT, guidance;
the autoregressive sampler with a KV cache."""

import pytest
import torch

from magvit.decoding import decode
from magvit.errors import InputError
from magvit.masking import CosineSchedule
from magvit.objective import ObjectiveConfig, token_loss
from magvit.registry import get_task
from magvit.samplers import ARSampler, CommitSampler, MaskGITSampler
from magvit.transformer import MaskedTransformer
from tests.helpers import RecordingModel

# Positions still masked after each of the 12 cosine steps for N = 1024 (the authors' count, against all N).
COSINE_1024 = [1015, 989, 946, 886, 812, 724, 623, 512, 391, 265, 133, 0]


def model_for(num_tokens, causal=False, codebook=16, **overrides):
    return MaskedTransformer.from_preset(
        "tiny", codebook_size=codebook, num_classes=2, prompts=["fp", "cg"], num_tokens=num_tokens,
        num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, causal=causal, **overrides,
    ).eval()



def condition(b, n, seed=0, codebook=16, fraction=0.25):
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, codebook, (b, n), generator=g)
    mask = torch.rand(b, n, generator=g) < fraction
    return z, mask


def record(**kwargs):
    steps = []
    return steps, {**kwargs, "callback": steps.append}


def test_commit_schedule_counts_for_1024_tokens():
    model = model_for(1024)
    z, mask = condition(2, 1024)
    steps, kw = record()
    out = decode(model, CommitSampler(), model.vocab.prompt_id("fp"), model.vocab.class_id(None), z, mask,
                        generator=torch.Generator().manual_seed(0), **kw)
    assert [int(s.unknown[0].sum()) for s in steps] == COSINE_1024
    assert [int(s.unknown[1].sum()) for s in steps] == COSINE_1024
    assert out.shape == (2, 1024) and out.max() < 16 and out.min() >= 0


def test_committed_tokens_never_change_and_output_is_last_step():
    model = model_for(64)
    z, mask = condition(2, 64, seed=1)
    steps, kw = record()
    out = decode(model, CommitSampler(), model.vocab.prompt_id("fp"), model.vocab.class_id(None), z, mask,
                        generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(steps[-1].tokens, out)
    for earlier, later in zip(steps, steps[1:]):
        known = ~earlier.unknown
        assert torch.equal(later.tokens[known], earlier.tokens[known])
        assert torch.equal(out[known], earlier.tokens[known])
        assert not (later.unknown & known).any()  # known tokens are never re-masked


def test_condition_tokens_reinserted_at_masked_condition_positions():
    spy = RecordingModel(model_for(64))
    v = spy.model.vocab
    z, mask = condition(2, 64, seed=2, fraction=0.5)
    steps, kw = record()
    decode(spy, CommitSampler(), v.prompt_id("fp"), v.class_id(None), z, mask, generator=torch.Generator().manual_seed(2), **kw)
    assert len(spy.calls) == 12
    first = spy.calls[0]["inputs"]
    assert torch.equal(first[mask], z[mask]) and (first[~mask] == v.mask_id).all()
    for step, call in zip(steps, spy.calls[1:]):
        inputs, prompt, label = call["inputs"], call["prompt"], call["label"]
        assert torch.equal(inputs, step.inputs)
        masked = step.unknown
        assert torch.equal(inputs[masked & mask], z[masked & mask])
        assert (inputs[masked & ~mask] == v.mask_id).all()
        assert torch.equal(inputs[~masked], step.tokens[~masked])
        assert (prompt == v.prompt_id("fp")).all() and (label == v.uncond_id).all()


def test_same_seed_same_tokens_and_grid_shape_kept():
    model = model_for(32)
    z, mask = condition(2, 32, seed=3)
    grid_z, grid_mask = z.view(2, 2, 4, 4), mask.view(2, 2, 4, 4)
    args = (model, model.vocab.prompt_id("fp"), model.vocab.class_id(None), grid_z, grid_mask)
    a = decode(args[0], CommitSampler(), *args[1:], generator=torch.Generator().manual_seed(7))
    b = decode(args[0], CommitSampler(), *args[1:], generator=torch.Generator().manual_seed(7))
    c = decode(args[0], CommitSampler(), *args[1:], generator=torch.Generator().manual_seed(8))
    assert a.shape == (2, 2, 4, 4) and torch.equal(a, b) and not torch.equal(a, c)


def test_unconditional_batch_needs_batch_size():
    model = model_for(32)
    out = decode(model, CommitSampler(), model.vocab.prompt_id("cg"), torch.tensor([16, 17]), batch_size=2, steps=4,
                        generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 32)
    with pytest.raises(InputError, match="batch_size"):
        decode(model, CommitSampler(), 0, 16, generator=torch.Generator())


def test_classifier_free_guidance_uncond_pass():
    spy = RecordingModel(model_for(32))
    v = spy.model.vocab
    z, mask = condition(1, 32, seed=4, fraction=0.5)
    steps, kw = record()
    decode(spy, CommitSampler(), v.prompt_id("fp"), v.class_id(1), z, mask, guidance_scale=2.0, steps=4,
                  generator=torch.Generator().manual_seed(0), **kw)
    for call, before in zip(spy.calls, [None, *steps]):
        inputs, label = call["inputs"], call["label"]
        assert inputs.shape == (2, 32) and label.tolist() == [v.class_id(1), v.uncond_id]
        unknown = torch.ones(1, 32, dtype=torch.bool) if before is None else before.unknown
        assert (inputs[1][unknown[0]] == v.mask_id).all()  # uncond pass: no z~ at all
        assert torch.equal(inputs[1][~unknown[0]], inputs[0][~unknown[0]])
    plain = decode(spy.model, CommitSampler(), v.prompt_id("fp"), v.class_id(1), z, mask, steps=4,
                          generator=torch.Generator().manual_seed(0))
    off = decode(spy.model, CommitSampler(), v.prompt_id("fp"), v.class_id(1), z, mask, steps=4, guidance_scale=0.0,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, off)


def test_maskgit_keeps_condition_and_counts_against_unknown_at_start():
    model = model_for(1024)
    z = torch.randint(0, 16, (1, 1024), generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 1024, dtype=torch.bool)
    mask[:, :256] = True  # 768 unknown at the start
    steps, kw = record()
    out = decode(model, MaskGITSampler(schedule=CosineSchedule()), model.vocab.prompt_id("fp"),
                 model.vocab.class_id(None), z, mask, generator=torch.Generator().manual_seed(0), **kw)
    # floor(768 * cos(pi/2 * k/12)), strict cut-off: exactly that many re-masked
    assert [int(s.unknown.sum()) for s in steps] == [761, 741, 709, 665, 609, 543, 467, 384, 293, 198, 100, 0]
    assert torch.equal(out[mask], z[mask])
    assert not any(s.unknown[mask].any() for s in steps)


def test_decoders_reject_wrong_model_and_input():
    bidir, causal = model_for(32), model_for(32, causal=True)
    z, mask = condition(1, 32)
    g = torch.Generator()
    with pytest.raises(InputError, match="'commit' sampler decodes with a bidirectional model"):
        decode(causal, CommitSampler(), causal.vocab.prompt_id("fp"), 16, z, mask, generator=g)
    with pytest.raises(InputError, match="'ar' sampler decodes with a causal model"):
        decode(bidir, ARSampler(), bidir.vocab.prompt_id("fp"), 16, z, mask, generator=g)
    with pytest.raises(InputError, match="cond_mask must be bool"):
        decode(bidir, CommitSampler(), bidir.vocab.prompt_id("fp"), 16, z, mask[:, :16], generator=g)
    with pytest.raises(InputError, match="N=32"):
        decode(bidir, CommitSampler(), bidir.vocab.prompt_id("fp"), 16, z[:, :16], mask[:, :16], generator=g)
    with pytest.raises(InputError, match="cond_mask .* is required"):
        decode(bidir, CommitSampler(), bidir.vocab.prompt_id("fp"), 16, z, generator=g)
    with pytest.raises(InputError, match="steps"):
        decode(bidir, CommitSampler(), bidir.vocab.prompt_id("fp"), 16, z, mask, generator=g, steps=0)


# -- autoregressive ------------------------------------------------------------------------------------------


def test_autoregressive_greedy_equals_uncached_argmax_decoding():
    """The cached decoding is the uncached teacher-forced forward, condition prefix and separator included."""
    model = model_for(12, causal=True)
    v = model.vocab
    prompt, label = torch.tensor([v.prompt_id("fp")]), torch.tensor([v.uncond_id])
    z, mask = condition(1, 12, seed=2, fraction=0.0)
    mask[:, :4] = True
    states = []
    out = decode(model, ARSampler(temperature=0.0), prompt, label, z, mask, steps=3, callback=states.append,
                 generator=torch.Generator().manual_seed(0))
    assert len(states) == 12 and states[-1].done  # one step per token, whatever `steps` says
    seq = torch.zeros(1, 12, dtype=torch.long)
    for i in range(12):  # reference: full causal forward each step, no cache
        seq[0, i] = model(seq, prompt, label, z[:, :4], torch.arange(4)[None])[0, i].argmax()
    assert torch.equal(out, seq)


def test_autoregressive_is_seeded_and_refuses_guidance():
    model = model_for(16, causal=True)
    z, mask = condition(2, 16, seed=6, fraction=0.0)
    mask[:, 8:] = True
    args = (model, ARSampler(), model.vocab.prompt_id("fp"), model.vocab.uncond_id, z, mask)
    a = decode(*args, generator=torch.Generator().manual_seed(3))
    b = decode(*args, generator=torch.Generator().manual_seed(3))
    c = decode(*args, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(InputError, match="does not support classifier-free guidance"):
        decode(*args, guidance_scale=1.0, generator=torch.Generator())


def test_autoregressive_model_learns_a_clip_and_continues_it():
    """Teacher-forced AR loss on one token clip with its first latent frame as the condition prefix;
    raster-order decoding from that prefix."""
    model = model_for(32, causal=True, codebook=8, dropout=0.0, attention_dropout=0.0).train()
    task = get_task("fp")
    tokens = torch.randint(0, 8, (1, 32), generator=torch.Generator().manual_seed(9)).expand(4, 32)
    mask = torch.zeros(4, 32, dtype=torch.bool)
    mask[:, :16] = True  # the first latent frame of a 2 x 4 x 4 grid
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for step in range(120):
        out = token_loss(model, tokens, tokens, mask, None, task, torch.Generator().manual_seed(step),
                         ObjectiveConfig(method="ar"))
        first = first if first is not None else out.loss.item()
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.loss.item() < 0.1 * first
    model.eval()
    gen = decode(model, ARSampler(), model.vocab.prompt_id("fp"), model.vocab.uncond_id, tokens[:1], mask[:1],
                 generator=torch.Generator().manual_seed(0))
    assert (gen == tokens[:1]).float().mean() > 0.9
