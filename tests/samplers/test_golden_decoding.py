"""Exact tokens of the built-in samplers' decoding on a fixed tiny model, step by step.

``golden_decoding.json`` holds, for each case below, the output tokens, the number of unknown positions after
every step and every step's model input, recorded from Algorithm 1 (COMMIT, the authors'
``videogvt/train_lib/parallel_decode.py``) and MaskGIT decoding (``maskgit/libml/parallel_decode.py``) as
this library implements them. A change to the decoding that changes a single token fails here; record new
values only when the decoding is meant to change.
"""

import json
from pathlib import Path

import pytest
import torch

from magvit.decoding import decode
from magvit.registry import get_sampler
from magvit.transformer import MaskedTransformer

GOLDEN = json.loads((Path(__file__).parent / "golden_decoding.json").read_text())

# name: (sampler, condition?, class label, sampler options, loop options)
CASES = {
    "commit_default": ("commit", True, None, {}, {}),
    "commit_options": ("commit", True, None, dict(choice_temperature=0.5, temperature=0.8, schedule="linear"),
                       dict(steps=6)),
    "commit_guidance": ("commit", True, 1, {}, dict(steps=4, guidance_scale=2.0, uncond_prompt="cg")),
    "commit_no_condition": ("commit", False, 1, {}, dict(steps=5)),
    "maskgit_default": ("maskgit", True, None, {}, {}),
    "maskgit_options": ("maskgit", True, None, dict(choice_temperature=1.0, temperature=1.3, schedule="square"),
                        dict(steps=7)),
    "maskgit_no_condition": ("maskgit", False, None, {}, dict(steps=5)),
}


def tiny_model() -> MaskedTransformer:
    model = MaskedTransformer.from_preset("tiny", codebook_size=16, num_classes=2, prompts=["fp", "cg"],
                                          num_tokens=64, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64)
    model.reset_parameters(torch.Generator().manual_seed(11))
    return model.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_decoding_matches_recorded_tokens(case):
    name, conditioned, label, options, loop = CASES[case]
    model = tiny_model()
    vocab = model.vocab
    loop = dict(loop)
    if "uncond_prompt" in loop:
        loop["uncond_prompt"] = vocab.prompt_id(loop["uncond_prompt"])
    states = []
    generator = torch.Generator().manual_seed(5)
    if conditioned:
        g = torch.Generator().manual_seed(3)
        z = torch.randint(0, 16, (2, 64), generator=g)
        mask = torch.rand(2, 64, generator=g) < 0.3
        out = decode(model, get_sampler(name, **options), vocab.prompt_id("fp"), vocab.class_id(label), z, mask,
                     generator=generator, callback=states.append, **loop)
    else:
        out = decode(model, get_sampler(name, **options), vocab.prompt_id("cg"), vocab.class_id(label), batch_size=2,
                     generator=generator, callback=states.append, **loop)
    golden = GOLDEN[case]
    assert out.tolist() == golden["tokens"]
    assert [s.unknown.sum(1).tolist() for s in states] == golden["unknown"]
    assert [s.inputs.tolist() for s in states] == golden["inputs"]
