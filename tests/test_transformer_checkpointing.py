"""MaskedTransformer ``activation_checkpointing``: each block of a training pass recomputed in the backward pass,
with the same loss, the same gradients (dropout masks replayed) and the same generation; a saved option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from magvit import MagvitPipeline, kernels
from magvit.errors import InputError
from magvit.transformer import MaskedTransformer

NUM_TOKENS, BATCH = 32, 2


def tiny(checkpointing: bool, **overrides) -> MaskedTransformer:
    """The tiny preset with the paper's dropouts (0.1 each), in train mode, always the same initial weights."""
    options = dict(num_tokens=NUM_TOKENS, dropout=0.1, attention_dropout=0.1, activation_checkpointing=checkpointing)
    return MaskedTransformer.from_preset("tiny", codebook_size=64, num_classes=3, prompts=["fp", "cg"],
                                         **(options | overrides)).train()


def batch(model: MaskedTransformer) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, model.codebook_size, (BATCH, NUM_TOKENS), generator=g)
    inputs[:, ::3] = model.vocab.mask_id
    targets = torch.randint(0, model.codebook_size, (BATCH, NUM_TOKENS), generator=g)
    prompt = torch.full((BATCH,), model.vocab.prompt_id("fp"))
    label = model.vocab.class_ids(torch.tensor([0, 2]), BATCH)
    return inputs, prompt, label, targets


def loss_and_grads(model: MaskedTransformer, seed: int = 7) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """One training step's loss and gradients (dropout drawn after ``manual_seed(seed)``) and the RNG state after."""
    inputs, prompt, label, targets = batch(model)
    # a causal model reads condition tokens before the clip (and so uses its condition-segment embedding)
    prefix = (targets[:, :4], torch.arange(4).expand(BATCH, 4)) if model.causal else (None, None)
    torch.manual_seed(seed)
    logits = model(inputs, prompt, label, *prefix)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, torch.get_rng_state()


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """The calls of ``torch.utils.checkpoint.checkpoint`` made by the transformer."""
    calls = []

    def spy(function, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    monkeypatch.setattr("magvit.transformer.checkpoint", spy)
    return calls


@pytest.mark.parametrize("cpu_dropout", [True, False], ids=["cpu_dropout", "torch_dropout"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_loss_and_every_gradient_equal_those_without_checkpointing(cpu_dropout, causal, checkpoint_calls):
    with kernels.override(cpu_dropout=cpu_dropout):
        plain, checkpointed = tiny(False, causal=causal), tiny(True, causal=causal)
    checkpointed.load_state_dict(plain.state_dict())
    loss, grads, rng = loss_and_grads(plain)
    assert checkpoint_calls == []
    loss_ac, grads_ac, rng_ac = loss_and_grads(checkpointed)
    assert checkpoint_calls == [False] * 4  # one non-reentrant checkpoint per block
    torch.testing.assert_close(loss_ac, loss, rtol=0, atol=0)
    assert grads_ac.keys() == grads.keys() == {n for n, _ in plain.named_parameters()}
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ac[name], grad, rtol=0, atol=0, msg=f"gradient of {name}")
    assert torch.equal(rng_ac, rng)  # the recomputation leaves the global RNG where the step left it
    # dropout really was on: another seed gives another loss
    assert not torch.equal(loss_and_grads(tiny(False, causal=causal), seed=8)[0], loss)


def test_the_blocks_are_recomputed_in_the_backward_pass():
    model = tiny(True)
    calls = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: calls.append(torch.is_grad_enabled()))
    inputs, prompt, label, targets = batch(model)
    logits = model(inputs, prompt, label)
    assert len(calls) == 1
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    assert len(calls) == 2


def test_eval_mode_and_no_grad_train_mode_give_the_outputs_of_the_plain_model(checkpoint_calls):
    no_dropout = dict(dropout=0.0, attention_dropout=0.0)
    plain, checkpointed = tiny(False, **no_dropout), tiny(True, **no_dropout)
    checkpointed.load_state_dict(plain.state_dict())
    inputs, prompt, label, _ = batch(plain)
    with torch.no_grad():
        expected = plain(inputs, prompt, label)
        assert torch.equal(checkpointed.eval()(inputs, prompt, label), expected)
        assert checkpoint_calls == []  # never in eval mode (generation)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: pytest.fail("no_grad saves nothing"), lambda t: t):
            assert torch.equal(checkpointed.train()(inputs, prompt, label), expected)
    assert checkpoint_calls == [False] * 4  # train mode under no_grad: checkpoint just runs each block


def test_the_key_value_cache_path_is_never_checkpointed(checkpoint_calls):
    model = tiny(True, causal=True, dropout=0.0, attention_dropout=0.0)
    plain = tiny(False, causal=True, dropout=0.0, attention_dropout=0.0)
    model.load_state_dict(plain.state_dict())
    _, prompt, label, _ = batch(model)
    ids = torch.randint(0, model.codebook_size, (BATCH, 3), generator=torch.Generator().manual_seed(3))
    outputs = []
    for m in (plain, model):
        cache = m.init_cache(BATCH)
        first = m.start(cache, prompt, label)
        outputs.append((first, m.step(ids, cache)))
    assert checkpoint_calls == []
    for got, expected in zip(outputs[1], outputs[0]):
        assert torch.equal(got, expected)


def test_generation_with_a_checkpointed_model_gives_the_same_video(checkpoint_calls):
    plain = MagvitPipeline.from_preset("tiny", tasks=["fp", "cg"], num_classes=2, resolution=16, frames=8)
    config = dict(plain.transformer.config) | {"activation_checkpointing": True}
    transformer = MaskedTransformer.from_config(config)
    transformer.load_state_dict(plain.transformer.state_dict())
    checkpointed = MagvitPipeline(plain.tokenizer, transformer, list(plain.tasks.values()), frames=8, resolution=16,
                                  tokenizer_name="vq3d")
    video = torch.rand(2, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    for task, kwargs in (("fp", {"video": video}), ("cg", {"label": [0, 1]})):
        expected = plain.generate(task, steps=3, generator=torch.Generator().manual_seed(5), **kwargs)
        got = checkpointed.generate(task, steps=3, generator=torch.Generator().manual_seed(5), **kwargs)
        assert torch.equal(got, expected)
    assert checkpoint_calls == []


def test_the_option_round_trips_through_save_and_load_and_old_configs_default_to_off(tmp_path):
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=16, frames=8)
    config = dict(pipe.transformer.config) | {"activation_checkpointing": True}
    transformer = MaskedTransformer.from_config(config)
    transformer.load_state_dict(pipe.transformer.state_dict())
    pipe = MagvitPipeline(pipe.tokenizer, transformer, list(pipe.tasks.values()), frames=8, resolution=16,
                          tokenizer_name="vq3d")
    assert pipe.model_config()["transformer"]["activation_checkpointing"] is True
    pipe.save(tmp_path / "pipe.pt")
    pipe.save_pretrained(tmp_path / "folder")
    for loaded in (MagvitPipeline.from_checkpoint(tmp_path / "pipe.pt"),
                   MagvitPipeline.from_pretrained(tmp_path / "folder")):
        assert loaded.transformer.config["activation_checkpointing"] is True
        assert loaded.transformer.activation_checkpointing is True
    old = {k: v for k, v in config.items() if k != "activation_checkpointing"}  # a config saved before the option
    rebuilt = MaskedTransformer.from_config(old)
    assert rebuilt.activation_checkpointing is False and rebuilt.config["activation_checkpointing"] is False


def test_a_non_bool_option_is_refused():
    with pytest.raises(InputError, match="activation_checkpointing must be true or false, got 'yes'"):
        tiny("yes")
