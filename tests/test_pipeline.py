"""MagvitPipeline: every task end to end with the tiny presets, persistence, and input errors."""

import pytest
import torch

from magvit.errors import InputError
from magvit.masking import ConditionCoverageWarning
from magvit.pipeline import MagvitPipeline

TEN = ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return MagvitPipeline.from_preset("tiny", tasks=TEN, num_classes=4, resolution=32)


@pytest.fixture(scope="module")
def clip():
    return torch.rand(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("task", TEN)
def test_every_task_end_to_end(pipe, clip, task):
    needs_video = task != "cg"
    out = pipe.generate(task, clip if needs_video else None, label=[1, 3], steps=4,
                        generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 32, 32) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1


def test_same_seed_same_video(pipe, clip):
    a = pipe.generate("opd", clip, generator=torch.Generator().manual_seed(5), steps=4)
    b = pipe.generate("opd", clip, generator=torch.Generator().manual_seed(5), steps=4)
    c = pipe.generate("opd", clip, generator=torch.Generator().manual_seed(6), steps=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_paste_condition_puts_real_pixels_back(pipe, clip):
    out = pipe.generate("opc", clip, steps=2, paste_condition=True)
    mask = pipe.tasks["opc"].condition(clip).mask.expand_as(clip)
    assert torch.equal(out[mask], clip[mask])


def test_save_and_load_round_trip(pipe, clip, tmp_path):
    path = pipe.save(tmp_path / "pipe.pt")
    loaded = MagvitPipeline.from_checkpoint(path)
    assert list(loaded.tasks) == list(pipe.tasks)
    assert loaded.transformer.vocab == pipe.transformer.vocab
    a = pipe.generate("fi", clip, generator=torch.Generator().manual_seed(1), steps=3)
    b = loaded.generate("fi", clip, generator=torch.Generator().manual_seed(1), steps=3)
    assert torch.equal(a, b)


def test_third_party_task_gets_its_own_prompt(clip):
    # the plugin keeps every 4th frame, so its condition touches every 4-frame supervoxel of the tiny
    # 3D-VQ: the model says so when it is built, and still generates (it refines the condition's tokens)
    with pytest.warns(ConditionCoverageWarning, match="task 'tsr': its condition covers all 256 tokens"):
        pipe = MagvitPipeline.from_preset("tiny", tasks=["fp", "tsr"], resolution=32)
    assert "tsr" in pipe.transformer.vocab.prompts
    assert pipe.generate("tsr", clip, steps=2).shape == clip.shape


@pytest.fixture(scope="module")
def single_fp():
    """A single-task fp model as the authors' (no task prompt), paper Table 4's B-FP."""
    torch.manual_seed(0)
    return MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=32, prompt_sharing="none")


def test_a_single_task_model_generates_every_registered_task(single_fp, clip):
    assert single_fp.single_task and single_fp.transformer.vocab.prompts == ()
    assert list(single_fp.tasks) == ["fp"]
    for task in ("opc", "ipd", "tsr"):  # tasks it was not trained on, a plugin's included
        out = single_fp.generate(task, clip, steps=2, generator=torch.Generator().manual_seed(0))
        assert out.shape == clip.shape
    assert single_fp.task("opc").name == "opc" and single_fp.task("fp") is single_fp.tasks["fp"]
    fi5 = single_fp.task(single_fp.task("fi").__class__(cond_frames=5))  # a task object with its own options
    assert fi5.cond_frames == 5


def test_a_single_task_model_saves_and_loads_as_one(single_fp, clip, tmp_path):
    loaded = MagvitPipeline.from_checkpoint(single_fp.save(tmp_path / "fp.pt"))
    assert loaded.single_task and list(loaded.tasks) == ["fp"]
    a = single_fp.generate("opc", clip, steps=2, generator=torch.Generator().manual_seed(3))
    b = loaded.generate("opc", clip, steps=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_unc_generates_without_a_label(single_fp, clip):
    torch.manual_seed(0)
    unc = MagvitPipeline.from_preset("tiny", tasks=["unc"], resolution=32, prompt_sharing="none")
    out = unc.generate("unc", steps=2)
    assert out.shape == (1, 3, 16, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert unc.generate("unc", clip, steps=2).shape == clip.shape  # the clip only gives the batch size
    assert single_fp.generate("unc", steps=2).shape == (1, 3, 16, 32, 32)  # B-FP scored on unc too
    with pytest.raises(InputError, match="class-conditional, but this model was trained without classes"):
        unc.generate("cg", label=0)


def test_a_multi_task_model_refuses_a_task_it_has_no_prompt_for(pipe, clip):
    assert not pipe.single_task
    with pytest.raises(InputError, match="task 'unc' is not configured in this pipeline"):
        pipe.generate("unc")


def test_errors(pipe, clip):
    with pytest.raises(ValueError, match="needs an input video"):
        pipe.generate("fp")
    with pytest.raises(ValueError, match=r"out of range.*\[0, 4\)"):
        pipe.generate("cg", label=4)
    with pytest.raises(ValueError, match="class-conditional"):
        pipe.generate("cfp", clip)
    with pytest.raises(ValueError, match="this model takes 16x32x32"):
        pipe.generate("fp", torch.rand(1, 3, 16, 64, 64))
    with pytest.raises(ValueError):
        pipe.generate("fp", torch.rand(1, 3, 15, 32, 32))  # the tokenizer cannot take 15 frames
    with pytest.raises(ValueError, match="not configured"):
        pipe.generate("tsr", clip)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("task", ["fp", "cg"])
def test_mixed_precision_generation(pipe, clip, task, precision):
    """The transformer's decoding passes run under autocast; the tokenizer and the tokens stay as in float32."""
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, set()).add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                                             else torch.float32)
        return hook

    handles = [pipe.transformer.register_forward_hook(record("transformer")),
               pipe.tokenizer.decoder.register_forward_hook(record("tokenizer"))]
    final = []
    try:
        video = clip if task != "cg" else None
        out = pipe.generate(task, video, label=[1, 3], steps=4, generator=torch.Generator().manual_seed(0),
                            precision=precision, callback=lambda state: final.append(state.tokens))
        again = pipe.generate(task, video, label=[1, 3], steps=4, generator=torch.Generator().manual_seed(0),
                              precision=precision)
    finally:
        for handle in handles:
            handle.remove()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    assert seen == {"transformer": {dtype}, "tokenizer": {torch.float32}}
    tokens = final[-1]
    assert tokens.shape == (2, pipe.transformer.num_tokens) and tokens.dtype == torch.long
    assert 0 <= int(tokens.min()) and int(tokens.max()) < pipe.tokenizer.codebook_size
    assert out.shape == (2, 3, 16, 32, 32) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, again)


def test_unknown_precision_is_refused_before_any_work(pipe, clip):
    with pytest.raises(InputError, match=r"precision must be one of '32', 'bf16-mixed', '16-mixed', got 'fp16'"):
        pipe.generate("fp", clip, precision="fp16")


def test_compiled_generation_agrees_with_eager(pipe, clip):
    """``pipe.compile()`` compiles the transformer in place: same logits within float32 rounding, the same
    decoded tokens, the same parameter names."""
    torch.manual_seed(0)
    compiled = MagvitPipeline.from_preset("tiny", tasks=TEN, num_classes=4, resolution=32)
    compiled.transformer.load_state_dict(pipe.transformer.state_dict())
    assert compiled.compile() is compiled
    assert compiled.transformer.state_dict().keys() == pipe.transformer.state_dict().keys()
    runs = {}
    for name, p in (("eager", pipe), ("compiled", compiled)):
        tokens = []
        p.generate("fp", clip, steps=4, generator=torch.Generator().manual_seed(0),
                   callback=lambda state: tokens.append(state.tokens.clone()))
        runs[name] = tokens
    assert len(runs["eager"]) == len(runs["compiled"]) == 4
    for eager, comp in zip(runs["eager"], runs["compiled"]):
        assert torch.equal(eager, comp)
    t = pipe.transformer
    ids = torch.full((2, t.num_tokens), t.vocab.mask_id, dtype=torch.long)
    prompt = torch.full((2,), t.vocab.prompt_id("fp"), dtype=torch.long)
    label = t.vocab.class_ids(None, 2)
    with torch.no_grad():
        torch.testing.assert_close(compiled.transformer(ids, prompt, label), t(ids, prompt, label), atol=1e-5, rtol=1e-5)
