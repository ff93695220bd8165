"""``--trainer.strategy fsdp`` under a 2-process torchrun on the CPU (gloo): the same losses as DDP, an
exact resume from a killed run's sharded checkpoint, and a consolidated ``last.pt`` that loads into the
pipeline. Plus the sharded checkpoint's refusals, in one process."""

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from magvit import MagvitPipeline
from magvit.errors import MagvitError
from magvit.pipeline import load_tokenizer
from magvit.train.data import DataConfig, make_data
from magvit.train.distributed import DistInfo
from magvit.train.settings import SettingError, TrainerConfig
from magvit.train.sharding import PLAIN_FILE, SafeReader, consolidate
from magvit.train.tokenizer_stage import TokenizerStage
from magvit.train.trainer import Trainer

SCRIPT = Path(__file__).with_name("strategy_fit.py")
STEPS = 5
LOSSES = {"transformer": ("transformer/loss",), "tokenizer": ("g/loss", "d/loss", "g/l2", "g/entropy")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(stage: str, strategy: str, data: Path, tokenizer: Path, out: Path, kill_after: int = 0,
              resume: bool = False) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         str(SCRIPT), stage, strategy, str(data / "train"), str(tokenizer), str(out), str(STEPS), str(kill_after),
         "1" if resume else "0"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]


def _history(out: Path, launch: int = 0) -> dict[int, dict[str, float]]:
    rows = json.loads((out / f"history-{launch}.json").read_text())
    return {int(r["step"]): r for r in rows}


@pytest.fixture(scope="module")
def runs(tiny_data, tokenizer_checkpoint, tmp_path_factory):
    """Each stage trained 5 steps with ddp and with fsdp; folders by (stage, strategy)."""
    out = {}
    for stage in ("transformer", "tokenizer"):
        for strategy in ("ddp", "fsdp"):
            folder = tmp_path_factory.mktemp(f"{stage}-{strategy}")
            _torchrun(stage, strategy, tiny_data, tokenizer_checkpoint, folder)
            out[stage, strategy] = folder
    return out


@pytest.mark.parametrize("stage", ["transformer", "tokenizer"])
def test_fsdp_reaches_the_losses_of_ddp(runs, stage):
    ddp, fsdp = _history(runs[stage, "ddp"]), _history(runs[stage, "fsdp"])
    assert sorted(ddp) == sorted(fsdp) == list(range(1, STEPS + 1))
    for step in ddp:
        for key in LOSSES[stage]:
            assert fsdp[step][key] == pytest.approx(ddp[step][key], abs=1e-5), (step, key)
    # the run trained: the loss moved
    key = LOSSES[stage][0]
    assert ddp[STEPS][key] != ddp[1][key]


def test_fsdp_writes_shards_and_a_consolidated_checkpoint(runs):
    folder = runs["tokenizer", "fsdp"]
    shards = sorted(p.name for p in (folder / "last.dcp").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp", PLAIN_FILE]
    fsdp = torch.load(folder / "last.pt", weights_only=True)
    ddp = torch.load(runs["tokenizer", "ddp"] / "last.pt", weights_only=True)
    assert fsdp["step"] == ddp["step"] == STEPS
    for part in ("models", "ema"):
        for phase, weights in ddp[part].items():
            assert weights.keys() == fsdp[part][phase].keys()
            for name, w in weights.items():
                torch.testing.assert_close(fsdp[part][phase][name], w, atol=1e-5, rtol=0, msg=f"{part} {name}")
    for phase, optim in ddp["optimizers"].items():  # the optimiser in torch's own layout, numbered alike
        assert [g["params"] for g in fsdp["optimizers"][phase]["param_groups"]] == \
            [g["params"] for g in optim["param_groups"]]
        for index, stats in optim["state"].items():
            for stat, value in stats.items():
                torch.testing.assert_close(fsdp["optimizers"][phase]["state"][index][stat], value, atol=1e-5, rtol=0)


def test_consolidated_checkpoints_load_into_the_pipeline(runs, tmp_path):
    tokenizer, _ = load_tokenizer(runs["tokenizer", "fsdp"] / "last.pt")
    assert tokenizer.encode(torch.rand(1, 3, 8, 32, 32)).shape[0] == 1
    pipe = MagvitPipeline.from_checkpoint(runs["transformer", "fsdp"] / "last.pt")
    clip = torch.rand(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    video = pipe.generate("fp", video=clip, steps=2, generator=torch.Generator().manual_seed(0))
    assert video.shape == (1, 3, 8, 32, 32)
    # and on to the save_pretrained format
    pipe.save_pretrained(tmp_path / "pretrained")
    again = MagvitPipeline.from_pretrained(tmp_path / "pretrained")
    assert torch.equal(again.generate("fp", video=clip, steps=2, generator=torch.Generator().manual_seed(0)), video)


@pytest.mark.parametrize(("stage", "strategy"), [("transformer", "fsdp"), ("tokenizer", "fsdp"),
                                                 ("transformer", "ddp")])
def test_a_killed_run_resumes_exactly(runs, tiny_data, tokenizer_checkpoint, tmp_path, stage, strategy):
    """The transformer draws its masks and dropout per rank (each rank's RNG states are in the checkpoint);
    the tokenizer has an EMA and a replicated discriminator beside its sharded generator."""
    _torchrun(stage, strategy, tiny_data, tokenizer_checkpoint, tmp_path, kill_after=3)
    if strategy == "fsdp":  # shards only until the last step
        assert not (tmp_path / "last.pt").exists() and (tmp_path / "last.dcp").is_dir()
    _torchrun(stage, strategy, tiny_data, tokenizer_checkpoint, tmp_path, resume=True)
    whole, resumed = _history(runs[stage, strategy]), _history(tmp_path)
    assert sorted(resumed) == [4, 5]
    for step in resumed:
        for key in LOSSES[stage]:
            assert resumed[step][key] == whole[step][key], (step, key)
    a = torch.load(tmp_path / "last.pt", weights_only=True)
    b = torch.load(runs[stage, strategy] / "last.pt", weights_only=True)
    for part in ("models", "ema"):
        for phase, weights in b[part].items():
            for name, w in weights.items():
                assert torch.equal(a[part][phase][name], w), f"{part} {phase} {name}"


# -- in one process ------------------------------------------------------------------------------------


def test_strategy_is_checked():
    with pytest.raises(SettingError, match=r"TrainerConfig.strategy must be one of ddp, fsdp, got 'zero'"):
        TrainerConfig(strategy="zero")
    with pytest.raises(SettingError, match="TrainerConfig.compile must be true or false"):
        TrainerConfig(compile="yes")
    with pytest.raises(SettingError, match="TrainerConfig.precision must not be 16-mixed with strategy fsdp"):
        TrainerConfig(strategy="fsdp", precision="16-mixed")
    assert TrainerConfig(strategy="fsdp", precision="bf16-mixed").precision == "bf16-mixed"


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_an_index_that_would_run_code_is_refused(runs, tmp_path):
    folder = tmp_path / "last.dcp"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(_Evil()))
    (folder / PLAIN_FILE).write_bytes(b"")
    with pytest.raises(MagvitError, match=r"posix.system is not part of a checkpoint index"):
        SafeReader(folder).read_metadata()
    # the real index reads
    assert SafeReader(runs["transformer", "fsdp"] / "last.dcp").read_metadata().state_dict_metadata


def test_consolidate_refuses_a_folder_that_is_not_a_sharded_checkpoint(tmp_path):
    with pytest.raises(MagvitError, match="is not a sharded checkpoint"):
        consolidate(tmp_path)


def test_a_sharded_run_is_not_resumed_as_a_ddp_run(runs, tiny_data, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    import shutil

    shutil.copytree(runs["tokenizer", "fsdp"] / "last.dcp", folder / "last.dcp")
    cfg = TrainerConfig(max_steps=6, out_dir=str(folder), progress=False, tensorboard=False)
    trainer = Trainer(TokenizerStage(preset="tiny", resolution=32, frames=8),
                      make_data(DataConfig(train=str(tiny_data / "train"), batch_size=2), DistInfo()), cfg)
    with pytest.raises(MagvitError, match=r"sharded checkpoint of an fsdp run \(last.dcp\) but no last.pt: resume with "
                                          r"--trainer.strategy fsdp, or write last.pt with `magvit consolidate"):
        trainer.resume()


def test_magvit_consolidate_writes_the_single_file_checkpoint(runs, tmp_path):
    from magvit.cli import main

    target = tmp_path / "consolidated.pt"
    assert main(["consolidate", str(runs["transformer", "fsdp"] / "last.dcp"), "--out", str(target)]) == 0
    written = torch.load(target, weights_only=True)
    final = torch.load(runs["transformer", "fsdp"] / "last.pt", weights_only=True)
    for name, w in final["models"]["transformer"].items():
        assert torch.equal(written["models"]["transformer"][name], w)
    assert main(["consolidate", str(tmp_path)]) == 2  # not a sharded checkpoint: a one-line error
