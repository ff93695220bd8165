"""A 2-process torchrun DDP run on the CPU (gloo): replicas see different data and stay in sync."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from magvit.transformer import MaskedTransformer


def test_two_process_ddp_replicas_stay_in_sync(tiny_data, tokenizer_checkpoint, tmp_path):
    script = Path(__file__).with_name("ddp_fit.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(script), str(tiny_data / "train"), str(tokenizer_checkpoint), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # each rank read its own shard split: different clips
    assert r0["keys"] != r1["keys"]
    init = MaskedTransformer.from_preset(
        "tiny", codebook_size=256, num_classes=8, prompts=["fp", "ipc", "cfp"], num_tokens=128,
        num_layers=2, hidden_size=64, num_heads=2, mlp_dim=128,
    ).state_dict()
    changed = 0
    for name, w0 in r0["weights"].items():
        assert torch.equal(w0, r1["weights"][name]), f"replicas diverged at {name}"
        changed += not torch.equal(w0, init[name])
    assert changed > len(init) // 2, "training did not move the weights"
    # rank 0 wrote the single checkpoint and the logs
    assert (tmp_path / "last.pt").exists() and (tmp_path / "metrics.csv").exists()
