"""Every registered sampler (timm-style: one test over the registry), the sampler plugin hook, and the
pipeline's choice of sampler."""


import attrs
import pytest
import torch

from magvit import registry
from magvit.decoding import decode
from magvit.errors import InputError
from magvit.masking import MaskedTokens
from magvit.pipeline import MagvitPipeline
from magvit.protocols import Sampler, sampler_problem
from magvit.registry import PluginWarning, Registry, get_sampler, sampler_names
from magvit.samplers import CommitSampler, DecodeState, MaskGITSampler, transformer_options
from magvit.transformer import MaskedTransformer

N = 32


def test_builtin_samplers_in_order():
    assert sampler_names()[:4] == ["commit", "maskgit", "prefix", "ar"]
    assert {e.plugin for e in registry.default_registry().entries("sampler")} >= {"magvit.samplers"}


def model_for(sampler: Sampler) -> MaskedTransformer:
    model = MaskedTransformer.from_preset(
        "tiny", codebook_size=16, num_classes=2, prompts=["fp"], num_tokens=N, num_layers=1, hidden_size=32,
        num_heads=2, mlp_dim=64, **transformer_options(sampler))
    model.reset_parameters(torch.Generator().manual_seed(0))
    return model.eval()


@pytest.mark.parametrize("name", sampler_names())
def test_every_sampler_trains_and_decodes(name):
    sampler = get_sampler(name)
    assert isinstance(sampler, Sampler) and sampler_problem(sampler) is None and sampler.name == name
    model = model_for(sampler)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 16, (2, N), generator=g)
    cond_tokens = torch.randint(0, 16, (2, N), generator=g)
    cond_mask = torch.zeros(2, N, dtype=torch.bool)
    cond_mask[:, :8] = True
    masked = torch.rand(2, N, generator=g) < 0.5
    out = sampler.training_inputs(tokens, cond_tokens, cond_mask, masked, model.vocab.mask_id)
    assert isinstance(out, MaskedTokens) and out.inputs.shape == out.weights.shape == (2, N)
    assert torch.equal(out.targets, tokens)
    logits = model(out.inputs, torch.full((2,), model.vocab.prompt_id("fp")), torch.full((2,), model.vocab.uncond_id),
                   out.prefix, out.prefix_index)
    assert logits.shape == (2, N, 16)

    states = []
    args = (model, sampler, model.vocab.prompt_id("fp"), model.vocab.uncond_id, cond_tokens, cond_mask)
    first = decode(*args, generator=torch.Generator().manual_seed(2), steps=4, callback=states.append)
    again = decode(*args, generator=torch.Generator().manual_seed(2), steps=4)
    assert first.shape == (2, N) and 0 <= int(first.min()) and int(first.max()) < 16
    assert torch.equal(first, again)
    assert isinstance(states[-1], DecodeState) and states[-1].done and not states[-1].unknown.any()
    limit = sampler.num_steps(4, N) if hasattr(sampler, "num_steps") else 4  # ar: one step per token
    assert 1 <= len(states) <= limit


def test_sampler_options_and_errors():
    assert get_sampler("maskgit", choice_temperature=1.0) == MaskGITSampler(choice_temperature=1.0)
    with pytest.raises(InputError, match="its options: choice_temperature, temperature, schedule"):
        get_sampler("commit", steps=3)
    with pytest.raises(InputError, match="temperature must be a number >= 0"):
        get_sampler("commit", temperature=-1.0)
    with pytest.raises(KeyError, match="registered samplers: commit, maskgit, prefix, ar"):
        get_sampler("greedy")
    assert get_sampler("latent", unmaskable="ground_truth") == MaskGITSampler(unmaskable="ground_truth")
    with pytest.raises(InputError, match="unmaskable must be one of"):
        get_sampler("maskgit", unmaskable="none")
    with pytest.raises(InputError, match="unknown mask scheduler 'cosinus'"):
        CommitSampler(schedule="cosinus").init_state(torch.zeros(1, 4, dtype=torch.long),
                                                   torch.zeros(1, 4, dtype=torch.bool), 99)


def test_sampler_and_model_must_agree():
    causal = MaskedTransformer.from_preset("tiny", codebook_size=16, num_classes=0, prompts=[], num_tokens=N,
                                           num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, causal=True)
    with pytest.raises(InputError, match="'maskgit' sampler decodes with a bidirectional model"):
        decode(causal, MaskGITSampler(), None, causal.vocab.uncond_id, batch_size=1, generator=torch.Generator())
    prefix = get_sampler("prefix")
    with pytest.raises(InputError, match="does not support classifier-free guidance"):
        decode(model_for(prefix), prefix, None, 0, batch_size=1, guidance_scale=1.0, generator=torch.Generator())


# -- plugins -----------------------------------------------------------------------------------------------

PLUGIN = """
    import attrs
    import torch
    from magvit import hookimpl
    from magvit.samplers import CommitSampler

    @attrs.frozen
    class ColdCommit(CommitSampler):
        '''COMMIT decoding that samples at a low temperature by default.'''

        name = "cold"
        temperature: float = 0.25

    @hookimpl
    def magvit_add_samplers():
        return {"cold": ColdCommit}
"""


def test_plugin_sampler_decodes_through_the_pipeline_by_name(plugin_dir, monkeypatch):
    reg = Registry(entry_points=[plugin_dir("cold_sampler_plugin", PLUGIN)])
    monkeypatch.setattr(registry, "default_registry", lambda: reg)
    assert "cold" in sampler_names() and get_sampler("cold").temperature == 0.25
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=16, frames=8)
    clip = torch.rand(1, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    cold = pipe.generate("fp", clip, steps=3, sampler="cold", generator=torch.Generator().manual_seed(1))
    same = pipe.generate("fp", clip, steps=3, sampler="commit", temperature=0.25,
                         generator=torch.Generator().manual_seed(1))
    assert torch.equal(cold, same)


def test_plugin_sampler_that_is_not_a_sampler_is_disabled(plugin_dir):
    ep = plugin_dir("bad_sampler_plugin", """
        from magvit import hookimpl

        class NotASampler:
            name = "bad"

        @hookimpl
        def magvit_add_samplers():
            return {"bad": NotASampler}
        """)
    with pytest.warns(PluginWarning, match=r"'bad_sampler_plugin'.*sampler 'bad': its factory\(\) built an unusable "
                      r"sampler: 'NotASampler' object is not a Sampler: it has no causal"):
        reg = Registry(entry_points=[ep])
    assert "bad" not in reg.names("sampler")


# -- the pipeline's sampler ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return MagvitPipeline.from_preset("tiny", tasks=["fp", "cg"], num_classes=2, resolution=16, frames=8)


@pytest.fixture(scope="module")
def clip():
    return torch.rand(2, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0))


def test_generate_uses_the_named_sampler_with_its_options(pipe, clip):
    gen = pipe.generate("fp", clip, steps=3, sampler="maskgit", choice_temperature=1.0,
                        generator=torch.Generator().manual_seed(4))
    _, cond_tokens, cond_mask = pipe.condition_tokens(pipe.task("fp"), clip, torch.Generator().manual_seed(4))
    vocab = pipe.transformer.vocab
    generator = torch.Generator().manual_seed(4)
    pipe.task("fp").condition(clip, generator)  # generate draws the condition from the same generator first
    tokens = decode(pipe.transformer, MaskGITSampler(choice_temperature=1.0), vocab.prompt_id("fp"),
                    vocab.class_ids(None, 2), cond_tokens, cond_mask, generator=generator, steps=3)
    assert torch.equal(gen, pipe.tokenizer.decode(tokens).clamp(0, 1))
    by_object = pipe.generate("fp", clip, steps=3, sampler=MaskGITSampler(choice_temperature=1.0),
                              generator=torch.Generator().manual_seed(4))
    assert torch.equal(gen, by_object)
    with pytest.raises(InputError, match="sampler options \\['temperature'\\] were given with a sampler object"):
        pipe.generate("fp", clip, sampler=MaskGITSampler(), temperature=2.0)


def test_the_models_own_sampler_is_saved_and_is_the_default(clip, tmp_path):
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=16, frames=8)
    pipe = MagvitPipeline(pipe.tokenizer, pipe.transformer, list(pipe.tasks.values()), frames=8, resolution=16,
                          tokenizer_name=pipe.tokenizer_name, sampler={"name": "maskgit", "config": {"choice_temperature": 2.0}})
    assert pipe.sampler == {"name": "maskgit", "config": attrs.asdict(MaskGITSampler(choice_temperature=2.0))}
    loaded = MagvitPipeline.from_checkpoint(pipe.save(tmp_path / "p.pt"))
    assert loaded.sampler == pipe.sampler
    own = loaded.generate("fp", clip, steps=3, generator=torch.Generator().manual_seed(0))
    named = loaded.generate("fp", clip, steps=3, sampler="maskgit", choice_temperature=2.0,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(own, named)
    folder = loaded.save_pretrained(tmp_path / "folder")
    assert MagvitPipeline.from_pretrained(folder).sampler == pipe.sampler


def test_guidance_is_explicit(pipe, clip):
    calls = []
    original = pipe.transformer.forward

    def spy(inputs, prompt, label, *rest, **kw):
        calls.append(prompt.tolist())
        return original(inputs, prompt, label, *rest, **kw)

    pipe.transformer.forward = spy
    try:
        pipe.generate("fp", clip, steps=2, label=None)
        vocab = pipe.transformer.vocab
        fp, cg = vocab.prompt_id("fp"), vocab.prompt_id("cg")
        assert calls == [[fp, fp]] * 2  # no guidance unless asked
        calls.clear()
        pipe.generate("fp", clip, steps=2, guidance_scale=1.5)
        assert calls == [[fp, fp, fp, fp]] * 2  # the unconditional pass keeps the task's prompt
        calls.clear()
        pipe.generate("fp", clip, steps=2, guidance_scale=1.5, guidance_task="cg")
        assert calls == [[fp, fp, cg, cg]] * 2  # as the authors: the cg prompt in the unconditional pass
    finally:
        del pipe.transformer.forward


# -- the command line --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny pipeline and a folder of 2 held-out clips of its size."""
    from magvit.data import write_synthetic

    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp", "cg"], num_classes=2, resolution=32, frames=16)
    write_synthetic(root / "data", num_clips=2, num_val_clips=2, frames=16, size=32, num_classes=2)
    return pipe.save(root / "pipe.pt"), root / "data" / "val"


def test_generate_and_evaluate_take_a_sampler(saved, tmp_path):
    import json

    from magvit.cli import main

    checkpoint, data = saved
    out = tmp_path / "fp.gif"
    assert main(["generate", "--checkpoint", str(checkpoint), "--task", "fp", "--input", str(data), "--sampler",
                 "maskgit", "--steps", "2", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--tasks", "fp", "--num_clips",
                 "2", "--no_fvd", "--sampler", "maskgit", "--steps", "2", "--out", str(tmp_path / "eval")]) == 0
    decoding = json.loads((tmp_path / "eval" / "metrics.json").read_text())["decoding"]
    assert decoding == {"sampler": {"name": "maskgit", "config": attrs.asdict(MaskGITSampler())}, "steps": 2,
                        "guidance_scale": 0.0, "guidance_task": None, "seed": 0, "repeats": 1, "precision": "32"}


def test_an_unknown_sampler_is_one_error_line(saved, tmp_path, capsys):
    from magvit.cli import main
    from tests.helpers.cli import one_line_error

    checkpoint, data = saved
    assert main(["generate", "--checkpoint", str(checkpoint), "--task", "cg", "--label", "1", "--sampler", "greedy",
                 "--out", str(tmp_path / "x.gif")]) == 2
    one_line_error(capsys, "unknown sampler 'greedy'", "registered samplers: commit, maskgit, prefix, ar")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--sampler", "greedy",
                 "--no_fvd"]) == 2
    one_line_error(capsys, "unknown sampler 'greedy'")
