"""The benchmark suite: ``python -m benchmarks --quick`` runs and writes the targets json; compile == eager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FRACTIONS = ("transformer_forward_frac", "decode_overhead_frac", "tokenizer_frac")
RATIOS = ("loader_over_train", "ar_over_commit_wall", "matmul_gflops", "generate_peak_rss_gb")


@pytest.mark.timeout(120)
def test_quick_suite_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in FRACTIONS:
        assert isinstance(result[key], float) and 0.0 <= result[key] <= 1.0, (key, result[key])
    for key in RATIOS:
        assert isinstance(result[key], float) and result[key] > 0, (key, result[key])
    assert set(result["train_step_frac"]) == {"tokenizer", "transformer"}
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in result["train_step_frac"].values())
    assert 0.0 <= result["vq_frac"] <= 1.0
    assert result["preset"] == "tiny" and result["device"] in ("cpu", "cuda")
    if (ROOT / "benchmarks" / "token_cache.py").exists():
        assert isinstance(result["token_cache_speedup"], float) and result["token_cache_speedup"] > 0
    for stage in ("transformer", "tokenizer"):
        ac = result["activation_checkpointing"][stage]
        assert isinstance(ac["time_overhead_frac"], float), (stage, ac)
        if ac["saved_gb"] is not None:  # None where /proc/self/clear_refs cannot reset the peak RSS
            assert isinstance(ac["saved_gb"], float) and isinstance(ac["saved_frac"], float) and ac["saved_frac"] < 1
    assert "errors" not in result
    # the printed table names every measurement
    for label in ("transformer forward", "decode overhead", "3D-VQ", "training step", "reader",
                  "activation checkpointing"):
        assert label in proc.stdout


def _compile_works() -> bool:
    try:
        torch.compile(lambda x: x + 1)(torch.zeros(2))
        return True
    except Exception:  # no C compiler, unsupported Python, ...
        return False


@pytest.mark.timeout(300)
def test_compiled_tiny_transformer_matches_eager() -> None:
    if not _compile_works():
        pytest.skip("torch.compile is unavailable here (e.g. no C compiler)")
    from magvit.transformer import MaskedTransformer

    model = MaskedTransformer.from_preset("tiny", codebook_size=256, num_classes=10, prompts=["fp", "cg"],
                                          num_tokens=64).eval()
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 256, (2, 64), generator=g)
    inputs[:, ::3] = model.vocab.mask_id
    prompt = torch.full((2,), model.vocab.prompt_id("fp"))
    label = torch.tensor([model.vocab.class_id(3), model.vocab.uncond_id])
    with torch.no_grad():
        eager = model(inputs, prompt, label)
        compiled = torch.compile(model)(inputs, prompt, label)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
