"""Quantizers under DDP (gloo, 2 CPU processes): 2 ranks on shares of a batch = 1 process on the full batch.

``ddp_quantizer.py`` runs under torchrun once for the module; every case is compared here with
:func:`ddp_quantizer.run_case` run in this process on the full batch, in float64: the quantizer loss parts
(count-weighted over the ranks), perplexity, usage, tokens and every parameter gradient, the codebook's
included (DDP reduces it like any parameter's).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from magvit.config import build_part, part_spec
from magvit.errors import InputError
from magvit.registry import get_tokenizer
from magvit.tokenizers.quantizer import LookupFreeQuantizer, VectorQuantizer, build_quantizer, usage_stats
from tests.tokenizers.ddp_quantizer import CASES, PARTS, run_case

WORLD = 2
TOLERANCE = dict(rtol=1e-6, atol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    """What each of the 2 ranks saved (``ddp_quantizer.main``)."""
    out = tmp_path_factory.mktemp("ddp_quantizer")
    script = Path(__file__).with_name("ddp_quantizer.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def weighted_parts(ranks: list[dict[str, Any]], name: str) -> torch.Tensor:
    """The ranks' loss parts weighted by their share of the batch (the mean of local means for equal shares)."""
    total = sum(r[name]["count"] for r in ranks)
    return sum(r[name]["parts"] * (r[name]["count"] / total) for r in ranks)


@pytest.mark.parametrize("name", ["vq", "lfq", "vq_unequal", "lfq_unequal", "vq3d"])
def test_two_ranks_on_shares_equal_one_process_on_the_full_batch(ranks, name):
    full = run_case(CASES[name], rank=0, world=1)
    assert torch.equal(torch.cat([r[name]["tokens"] for r in ranks]), full["tokens"])
    torch.testing.assert_close(weighted_parts(ranks, name), full["parts"], **TOLERANCE)
    for r in ranks:  # the batch statistics are global: every rank reports the full batch's
        for i in (PARTS.index("perplexity"), PARTS.index("usage")):
            torch.testing.assert_close(r[name]["parts"][i], full["parts"][i], **TOLERANCE)
    assert ranks[0][name]["grads"].keys() == full["grads"].keys()
    for key, grad in full["grads"].items():
        assert grad.abs().max() > 0, key
        for r in ranks:
            torch.testing.assert_close(r[name]["grads"][key], grad, **TOLERANCE, msg=f"gradient of {key}")


def test_the_codebook_gradient_is_compared(ranks):
    assert "quantizer.codebook" in ranks[0]["vq"]["grads"]
    assert "tokenizer.quantizer.codebook" in ranks[0]["vq3d"]["grads"]


@pytest.mark.parametrize("name", ["vq_unsynced", "lfq_unsynced"])
def test_without_the_sync_the_entropy_gradient_and_the_statistics_differ(ranks, name):
    full = run_case(CASES[name], rank=0, world=1)
    assert torch.equal(torch.cat([r[name]["tokens"] for r in ranks]), full["tokens"])
    for r in ranks:  # per-rank statistics: each rank's own histogram
        local = usage_stats(r[name]["tokens"], 16 if name.startswith("lfq") else 8)
        assert torch.equal(r[name]["parts"][PARTS.index("perplexity")], local[0].double())
    entropy = PARTS.index("entropy_loss")
    assert (weighted_parts(ranks, name)[entropy] - full["parts"][entropy]).abs() > 1e-3
    for key, grad in full["grads"].items():  # every parameter feels the batch-mean entropy term
        assert (ranks[0][name]["grads"][key] - grad).abs().max() > 1e-3, key


def test_in_eval_mode_a_rank_quantizes_alone_with_its_own_statistics(ranks):
    # rank 0 alone ran an eval-mode forward pass (rank 1 did not): it did not wait on rank 1 (the run ended
    # within the process group's timeout) and its statistics are those of its own tokens
    record = ranks[0]["eval"]
    perplexity, usage = usage_stats(record["tokens"], 8)
    assert torch.equal(record["perplexity"], perplexity) and torch.equal(record["usage"], usage)
    assert "eval" not in ranks[1]


# -- the option ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vq", "lfq"])
def test_build_quantizer_passes_sync_across_ranks(kind):
    assert build_quantizer(kind, 16, 4, commitment_cost=0.25, entropy_weight=0.1, entropy_temperature=0.01,
                           sync_across_ranks=False).sync_across_ranks is False
    assert build_quantizer(kind, 16, 4, commitment_cost=0.25, entropy_weight=0.1,
                           entropy_temperature=0.01).sync_across_ranks is True


@pytest.mark.parametrize("name", ["vq3d", "vq2d"])
def test_the_tokenizer_option_round_trips_and_old_configs_load(name):
    tok = get_tokenizer(name, preset="tiny", resolution=16, sync_across_ranks=False)
    assert tok.quantizer.sync_across_ranks is False and tok.config["sync_across_ranks"] is False
    spec = part_spec(tok)
    rebuilt = build_part("tokenizer", spec)
    assert rebuilt.quantizer.sync_across_ranks is False and rebuilt.config == tok.config
    # a config written before the option existed: the default, on
    old = {"name": name, "config": {k: v for k, v in spec["config"].items() if k != "sync_across_ranks"}}
    assert build_part("tokenizer", old).quantizer.sync_across_ranks is True


def test_a_non_boolean_option_is_refused():
    with pytest.raises(InputError, match="sync_across_ranks must be true or false"):
        get_tokenizer("vq3d", preset="tiny", resolution=16, sync_across_ranks="yes")
    with pytest.raises(InputError, match="sync_across_ranks must be true or false"):
        VectorQuantizer(8, 4, sync_across_ranks=1)
    with pytest.raises(InputError, match="sync_across_ranks must be true or false"):
        LookupFreeQuantizer(8, 3, sync_across_ranks=None)


def test_a_single_process_never_syncs():
    # no process group: training mode quantizes with the local statistics, with or without the option
    vq = VectorQuantizer(8, 4).train()
    vq.reset_parameters(torch.Generator().manual_seed(0))
    z = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(1))
    plain = VectorQuantizer(8, 4, sync_across_ranks=False).train()
    plain.load_state_dict(vq.state_dict())
    a, b = vq(z), plain(z)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.perplexity, b.perplexity)
