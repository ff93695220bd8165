"""Multi-task objective (as the authors' trainer): task cycle, loss arithmetic, masking, tokenisation, learning."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from magvit.batch import ClipBatch
from magvit.decoding import decode
from magvit.samplers import CommitSampler, MaskGITSampler, PrefixSampler
from magvit.errors import InputError
from magvit.masking import CosineSchedule, LossWeights, task_token_mask
from magvit.objective import (
    MultiTaskObjective,
    ObjectiveConfig,
    TaskCycle,
    WeightOverrides,
    smoothed_cross_entropy,
    token_loss,
    weighted_loss,
)
from magvit.registry import get_task
from magvit.tasks import build_tasks
from magvit.transformer import MaskedTransformer
from tests.helpers import PaletteTokenizer, RecordingModel, moving_square_clip



def tiny(num_tokens=32, codebook=8, prompts=("fp", "opc", "ipc", "cg"), **overrides):
    kwargs = dict(num_layers=2, hidden_size=64, num_heads=4, mlp_dim=128, dropout=0.0, attention_dropout=0.0)
    kwargs.update(overrides)
    return MaskedTransformer.from_preset("tiny", codebook_size=codebook, num_classes=2, prompts=list(prompts),
                                         num_tokens=num_tokens, **kwargs)


# -- task cycle ----------------------------------------------------------------------------------------------


def test_task_cycle_counts_order_and_seed():
    cycle = TaskCycle([1, 1, 1], seed=0)
    assert len(cycle) == 300 and Counter(cycle.sequence) == {0: 100, 1: 100, 2: 100}
    assert cycle.sequence == TaskCycle([1, 1, 1], seed=0).sequence
    assert cycle.sequence != TaskCycle([1, 1, 1], seed=1).sequence
    assert [cycle[s] for s in (0, 7, 300, 307)] == [cycle.sequence[0], cycle.sequence[7]] * 2
    # round(w * 100 / min(1, min_w)): weights 0.5 and 1.5 -> 100 and 300
    assert Counter(TaskCycle([0.5, 1.5]).sequence) == {0: 100, 1: 300}
    assert Counter(TaskCycle([2, 3]).sequence) == {0: 200, 1: 300}
    with pytest.raises(InputError, match="positive"):
        TaskCycle([1, 0])


# -- loss arithmetic -----------------------------------------------------------------------------------------


def test_smoothed_cross_entropy_matches_explicit_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 7, (2, 5), generator=g)
    eps = 1e-4
    q = torch.full((2, 5, 7), eps / 7, dtype=torch.float64)
    q.scatter_(-1, targets[..., None], 1 - eps + eps / 7)  # on 1-e+e/K, off e/K (the authors' label smoothing)
    expected = -(q * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(smoothed_cross_entropy(logits, targets, eps).double(), expected, rtol=1e-6, atol=1e-6)
    plain = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), reduction="none").view(2, 5)
    torch.testing.assert_close(smoothed_cross_entropy(logits, targets, 0.0).double(), plain)


def test_weighted_loss_per_example_then_batch_mean():
    ce = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 2.0]])
    w = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    loss, per = weighted_loss(ce, w)
    torch.testing.assert_close(per, torch.tensor([1.5 * 2 / (2 + 1e-8), 0.0]))
    torch.testing.assert_close(loss, per.mean())


# -- token_loss ----------------------------------------------------------------------------------------------


def tokens_and_condition(seed=0, b=4, n=32):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 8, (b, n), generator=g)
    cond = torch.randint(0, 8, (b, n), generator=g)
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[:, :16] = True
    return tokens, cond, mask


def test_commit_inputs_prompt_label_and_loss():
    spy = RecordingModel(tiny())
    v = spy.model.vocab
    tokens, cond, mask = tokens_and_condition()
    out = token_loss(spy, tokens, cond, mask, None, get_task("fp"), torch.Generator().manual_seed(1))
    call = spy.calls[0]
    m = out.masked.masked
    x = call["inputs"]
    assert torch.equal(x[m & mask], cond[m & mask])  # refine: z~
    assert (x[m & ~mask] == v.mask_id).all()  # mask: [MASK]
    assert torch.equal(x[~m], tokens[~m])  # recons: z
    counts = m.sum(1)
    assert (counts == counts[0]).all() and 1 <= counts[0] <= 32  # one ratio for the whole batch
    assert (call["prompt"] == v.prompt_id("fp")).all() and (call["label"] == v.uncond_id).all()
    assert (out.masked.weights == 1).all() and torch.equal(out.masked.targets, tokens)
    expected = smoothed_cross_entropy(call["logits"], tokens, 1e-4).mean(1).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    assert out.task == "fp"


def test_class_generation_has_no_condition_and_uses_the_label():
    spy = RecordingModel(tiny())
    v = spy.model.vocab
    tokens, _, _ = tokens_and_condition(seed=2)
    labels = torch.tensor([0, 1, 1, 0])
    out = token_loss(spy, tokens, None, None, labels, get_task("cg"), torch.Generator().manual_seed(3))
    call = spy.calls[0]
    m = out.masked.masked
    assert (call["inputs"][m] == v.mask_id).all() and torch.equal(call["inputs"][~m], tokens[~m])
    assert call["label"].tolist() == [v.class_id(int(c)) for c in labels]
    assert (call["prompt"] == v.prompt_id("cg")).all()
    with pytest.raises(InputError, match="labels"):
        token_loss(spy, tokens, None, None, None, get_task("cg"), torch.Generator())


def test_same_generator_same_masks_and_per_example_ratio_option():
    model = tiny()
    tokens, cond, mask = tokens_and_condition(seed=4, b=8)
    task = get_task("fp")
    a = token_loss(model, tokens, cond, mask, None, task, torch.Generator().manual_seed(5))
    b = token_loss(model, tokens, cond, mask, None, task, torch.Generator().manual_seed(5))
    assert torch.equal(a.masked.inputs, b.masked.inputs) and torch.equal(a.loss, b.loss)
    per = token_loss(model, tokens, cond, mask, None, task, torch.Generator().manual_seed(5),
                     ObjectiveConfig(ratio_per_example=True))
    assert len(set(per.masked.masked.sum(1).tolist())) > 1


def test_loss_weights_and_baseline_methods():
    spy = RecordingModel(tiny(prefix_condition=True))
    v = spy.model.vocab
    tokens, cond, mask = tokens_and_condition(seed=6)
    task = get_task("fp")
    only_mask = token_loss(spy, tokens, cond, mask, None, task, torch.Generator().manual_seed(7),
                           ObjectiveConfig(weights=LossWeights(refine=0.0, mask=1.0, recons=0.0)))
    m = only_mask.masked.masked
    assert torch.equal(only_mask.masked.weights, (m & ~mask).float())
    latent = token_loss(spy, tokens, cond, mask, None, task, torch.Generator().manual_seed(7),
                        ObjectiveConfig(method="maskgit"))
    x = spy.calls[-1]["inputs"]
    assert torch.equal(x[mask], cond[mask])  # condition always given (MaskGIT latent masking)
    prefix = token_loss(spy, tokens, cond, mask, None, task, torch.Generator().manual_seed(7),
                        ObjectiveConfig(method="prefix"))
    call = spy.calls[-1]
    assert call["prefix"].shape == (4, 16) and torch.equal(call["prefix"], cond[:, :16])
    assert call["prefix_index"][0].tolist() == list(range(16))
    assert not (call["inputs"] == cond).all() and torch.isfinite(prefix.loss)
    assert ((call["inputs"] == v.mask_id) == prefix.masked.masked).all()
    assert torch.isfinite(latent.loss)


def test_condition_dropout_drops_class_and_condition_together():
    spy = RecordingModel(tiny())
    v = spy.model.vocab
    tokens, cond, mask = tokens_and_condition(seed=8, b=64)
    labels = torch.ones(64, dtype=torch.long)
    out = token_loss(spy, tokens, cond, mask, labels, get_task("cfp", prompt="fp"), torch.Generator().manual_seed(9),
                     ObjectiveConfig(condition_dropout=0.5))
    call = spy.calls[0]
    dropped = call["label"] == v.uncond_id
    assert 0 < int(dropped.sum()) < 64
    m = out.masked.masked
    assert not (call["inputs"][dropped][(m & mask)[dropped]] != v.mask_id).any()
    kept = ~dropped
    assert torch.equal(call["inputs"][kept][(m & mask)[kept]], cond[kept][(m & mask)[kept]])


def test_config_validation():
    with pytest.raises(InputError, match="method"):
        ObjectiveConfig(method="bogus")
    with pytest.raises(InputError, match="token_rule"):
        ObjectiveConfig(token_rule="nearest")
    with pytest.raises(InputError, match="prefix"):
        ObjectiveConfig(method="prefix", condition_dropout=0.1)


# -- video level ---------------------------------------------------------------------------------------------


def test_objective_tokenizes_video_and_condition_in_one_call():
    tok = PaletteTokenizer((2, 2, 2), levels=2)
    tasks = build_tasks(["fp", "opc", "cg"])
    obj = MultiTaskObjective(tok, tasks, seed=0)
    video = moving_square_clip(batch=2)
    task = obj.task_for_step(0)
    assert task is tasks[obj.cycle[0]]
    fp = tasks[0]
    batch = obj.tokenize(video, fp)
    assert tok.encode_calls == 1
    cond = fp.condition(video)
    assert torch.equal(batch.tokens, tok.encode(video).reshape(2, -1))
    assert torch.equal(batch.cond_tokens, tok.encode(cond.video).reshape(2, -1))
    assert torch.equal(batch.cond_mask, task_token_mask(fp, cond.mask, (2, 2, 2)).reshape(2, -1))
    assert batch.cond_mask[:, :16].all() and not batch.cond_mask[:, 16:].any()  # first latent frame
    cg = obj.tokenize(video, tasks[2])
    assert cg.cond_tokens is None and not cg.cond_mask.any()
    analytic = MultiTaskObjective(tok, [get_task("fp", cond_frames=1, cond_latent_frames=2)],
                                  config=ObjectiveConfig(token_rule="analytic"))
    assert analytic.tokenize(video, analytic.tasks[0]).cond_mask.all()  # the hand-set latent frames


def test_the_objective_tokenises_only_what_the_batch_lacks():
    """A batch that carries a task's tokens (token shards) is used as it is; the tokens it lacks come from its
    video, in one encoder call; a batch with neither is refused."""
    tok = PaletteTokenizer((2, 2, 2), levels=2)
    fp, opc, cg = build_tasks(["fp", "opc", "cg"])
    obj = MultiTaskObjective(tok, [fp, opc, cg], seed=0)
    video = moving_square_clip(batch=2)
    expected = {t.name: obj.tokenize(video, t) for t in (fp, opc, cg)}
    grid = (2, 2, 4, 4)  # [B, t, h, w] of the 4x8x8 clips under 2x2x2 supervoxels
    batch = ClipBatch(label=torch.tensor([0, 1]), keys=["a", "b"], video=video,
                      tokens=expected["fp"].tokens.reshape(grid),
                      cond_tokens={"fp": expected["fp"].cond_tokens.reshape(grid)},
                      cond_mask={"fp": expected["fp"].cond_mask.reshape(grid)})
    calls = tok.encode_calls
    for task in (fp, cg):  # cached: fp's condition is stored, cg needs only the ground truth
        got = obj.tokens_for(batch, task)
        assert torch.equal(got.tokens, expected[task.name].tokens), task.name
        assert torch.equal(got.cond_mask, expected[task.name].cond_mask), task.name
    assert torch.equal(obj.tokens_for(batch, fp).cond_tokens, expected["fp"].cond_tokens)
    assert obj.tokens_for(batch, cg).cond_tokens is None and tok.encode_calls == calls
    got = obj.tokens_for(batch, opc)  # no opc condition in the batch: tokenised from its video
    assert tok.encode_calls == calls + 1
    assert all(torch.equal(getattr(got, k), getattr(expected["opc"], k)) for k in ("tokens", "cond_tokens", "cond_mask"))
    tokens_only = ClipBatch(label=batch.label, keys=batch.keys, tokens=batch.tokens)
    with pytest.raises(InputError, match="task 'opc': the batch holds neither its tokens nor video to tokenise"):
        obj.tokens_for(tokens_only, opc)


def test_the_loss_of_a_batch_with_tokens_is_the_loss_of_its_video():
    tok = PaletteTokenizer((2, 2, 2), levels=2)
    tasks = build_tasks(["fp", "opc", "ipc", "cg"])
    obj = MultiTaskObjective(tok, tasks, seed=0)
    video, labels = moving_square_clip(batch=2), torch.tensor([0, 1])
    clips = ClipBatch(label=labels, keys=["a", "b"], video=video)
    grid = (2, 2, 4, 4)
    cached = {t.name: obj.tokenize(video, t) for t in tasks if t.needs_video}
    tokens = ClipBatch(label=labels, keys=["a", "b"], tokens=obj.tokenize(video, tasks[3]).tokens.reshape(grid),
                       cond_tokens={n: c.cond_tokens.reshape(grid) for n, c in cached.items()},
                       cond_mask={n: c.cond_mask.reshape(grid) for n, c in cached.items()})
    model = tiny().eval()
    first_step = {}
    for step in range(len(obj.cycle)):
        first_step.setdefault(obj.task_for_step(step).name, step)
    assert sorted(first_step) == ["cg", "fp", "ipc", "opc"]
    for step in first_step.values():
        with torch.no_grad():
            a = obj(model, clips, step, torch.Generator().manual_seed(step))
            b = obj(model, tokens, step, torch.Generator().manual_seed(step))
        assert a.task == b.task and torch.equal(a.loss, b.loss) and torch.equal(a.per_example, b.per_example)


def test_multitask_training_reproduces_clips_from_their_condition():
    """Learning test: two clips, four tasks; COMMIT decoding recovers each clip from its condition."""
    tok = PaletteTokenizer((2, 2, 2), levels=2)
    tasks = build_tasks(["fp", "opc", "ipc", "cg"])
    video = torch.cat([moving_square_clip(batch=4), moving_square_clip(batch=4, swap=True)])
    labels = torch.tensor([0] * 4 + [1] * 4)
    model = tiny(hidden_size=128, mlp_dim=256)
    obj = MultiTaskObjective(tok, tasks, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.96))
    g = torch.Generator().manual_seed(0)
    losses = []
    clips = ClipBatch(label=labels, keys=[str(i) for i in range(8)], video=video)
    for step in range(300):
        out = obj(model, clips, step, g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-20:]) / 20 < 0.05 * sum(losses[:5]) / 5
    model.eval()
    v = model.vocab
    for task in tasks:
        batch = obj.tokenize(video, task)
        assert (batch.tokens[0] != batch.tokens[4]).sum() > 20  # the two clips really differ
        label = v.class_ids(labels if task.uses_class else None, 8)
        gen = decode(model, CommitSampler(), v.prompt_id(task.prompt), label, batch.cond_tokens,
                            batch.cond_mask if batch.cond_tokens is not None else None,
                            batch_size=8, generator=torch.Generator().manual_seed(1))
        accuracy = (gen == batch.tokens).float().mean().item()
        assert accuracy > 0.9, (task.name, accuracy)


def test_palette_tokenizer_round_trip():
    """The test tokenizer is real: decode then encode returns the tokens; supervoxel means are quantised."""
    tok = PaletteTokenizer((2, 2, 2), levels=3)
    tokens = torch.randint(0, 27, (2, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    video = tok.decode(tokens)
    assert video.shape == (2, 3, 4, 8, 8) and torch.equal(tok.encode(video), tokens)
    assert tok.token_shape(4, 8, 8) == (2, 4, 4)
    with pytest.raises(InputError, match="supervoxel"):
        tok.token_shape(3, 8, 8)


# -- per-method mask draw, weights and architecture ------------------------------------------------------------


def test_latent_masking_draws_its_count_over_the_maskable_tokens():
    """16 of 32 tokens are condition tokens: the masked count is floor(16 gamma) >= 1 of the other 16."""
    model = tiny()
    tokens, cond, mask = tokens_and_condition(seed=10, b=2)
    scheduler = CosineSchedule()
    for step in range(20):
        g = torch.Generator().manual_seed(step)
        gamma = float(scheduler.ratio(torch.rand((), generator=torch.Generator().manual_seed(step),
                                                 dtype=torch.float64)).clamp(1e-6, 1.0))
        out = token_loss(model, tokens, cond, mask, None, get_task("fp"), g, ObjectiveConfig(method="latent"))
        m = out.masked.masked
        assert not (m & mask).any()
        assert m.sum(1).tolist() == [max(1, math.floor(16 * gamma))] * 2


def test_one_weight_override_keeps_the_methods_other_defaults():
    assert ObjectiveConfig(method="maskgit", weights={"recons": 0.0}).loss_weights(MaskGITSampler()) == \
        LossWeights(refine=0.0, mask=1.0, recons=0.0)
    assert ObjectiveConfig(weights={"refine": 0.0}).loss_weights(CommitSampler()) == \
        LossWeights(refine=0.0, mask=1.0, recons=1.0)
    assert ObjectiveConfig(weights=WeightOverrides(mask=2.0)).loss_weights(PrefixSampler()) == \
        LossWeights(refine=0.0, mask=2.0, recons=1.0)


def test_the_method_and_the_architecture_must_agree():
    tokens, cond, mask = tokens_and_condition(seed=11)
    with pytest.raises(InputError, match="method 'ar' trains a causal model"):
        token_loss(tiny(), tokens, cond, mask, None, get_task("fp"), None, ObjectiveConfig(method="ar"))
    with pytest.raises(InputError, match="'ar' sampler .* does not support"):
        ObjectiveConfig(method="ar", condition_dropout=0.1)
    with pytest.raises(InputError, match="unmaskable"):
        ObjectiveConfig(method="latent", sampler_options={"unmaskable": "everything"})
