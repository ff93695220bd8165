"""``trainer.precision``: mixed-precision training of both stages, the loss scaler's overflow rule under
``16-mixed``, and exact resumption with the scalers' state."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from magvit import checkpoint as ckpt
from magvit.cli import main
from magvit.train.data import DataConfig, make_data
from magvit.train.distributed import DistInfo
from magvit.train.optim import OptimConfig
from magvit.train.stage import PhaseSpec, Stage
from magvit.train.tokenizer_stage import TokenizerStage
from magvit.train.trainer import Trainer, TrainerConfig
from magvit.train.transformer_stage import TransformerStage
from tests.helpers.cli import one_line_error
from tests.train.conftest import FRAMES, SIZE

QUIET = {"progress": False, "tensorboard": False, "log_every": 1}


def autocast_dtypes(module: nn.Module) -> tuple[set[torch.dtype], object]:
    """The autocast dtype of every forward call of ``module`` (float32: no autocast), and the hook's handle."""
    seen: set[torch.dtype] = set()

    def hook(mod, args, out):
        seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)

    return seen, module.register_forward_hook(hook)


def transformer_stage(tokenizer_checkpoint: Path) -> TransformerStage:
    return TransformerStage(
        str(tokenizer_checkpoint), preset="tiny", num_classes=8, tasks=["fp"], frames=FRAMES, resolution=SIZE,
        transformer_options={"num_layers": 2, "hidden_size": 64, "num_heads": 2, "mlp_dim": 128, "dropout": 0.0,
                             "attention_dropout": 0.0},
        optim=OptimConfig(lr=1e-3, warmup_steps=0))


def clips(tiny_data: Path):
    return make_data(DataConfig(train=str(tiny_data / "train"), batch_size=2), DistInfo())


def test_bf16_trains_the_transformer_stage(tiny_data, tokenizer_checkpoint, tmp_path):
    stage = transformer_stage(tokenizer_checkpoint)
    seen, handle = autocast_dtypes(stage.transformer)
    cfg = TrainerConfig(max_steps=8, ckpt_every=100, out_dir=str(tmp_path), precision="bf16-mixed", **QUIET)
    trainer = Trainer(stage, clips(tiny_data), cfg)
    history = trainer.fit()
    handle.remove()
    losses = [row["transformer/loss"] for row in history]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert seen == {torch.bfloat16}  # every forward under autocast (samples are off)
    assert trainer.scalers == {} and not any("grad_scale" in k for k in history[-1])
    params = list(stage.transformer.parameters())
    assert all(p.dtype == torch.float32 for p in params)  # float32 master weights and optimiser states
    assert all(s.dtype == torch.float32 for state in trainer.phases[0].optimizer.state.values()
               for s in state.values() if s.is_floating_point())


def test_bf16_trains_the_tokenizer_stage(tiny_data, tmp_path):
    stage = TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES,
                           optim=OptimConfig(lr=1e-3, betas=(0.0, 0.99), weight_decay=0.0, warmup_steps=0,
                                             grad_clip=0.0))
    seen_g, handle_g = autocast_dtypes(stage.tokenizer)
    seen_d, handle_d = autocast_dtypes(stage.discriminator)
    cfg = TrainerConfig(max_steps=6, ckpt_every=100, out_dir=str(tmp_path), precision="bf16-mixed", **QUIET)
    history = Trainer(stage, clips(tiny_data), cfg).fit()
    handle_g.remove(), handle_d.remove()
    l2 = [row["g/l2"] for row in history]
    assert len(l2) == 6 and all(math.isfinite(row[k]) for row in history for k in ("g/loss", "d/loss", "d/r1"))
    assert sum(l2[-2:]) < sum(l2[:2])
    assert seen_g == seen_d == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in stage.tokenizer.parameters())


def test_16_mixed_trains_the_transformer_stage_with_a_scaler(tiny_data, tokenizer_checkpoint, tmp_path):
    cfg = TrainerConfig(max_steps=3, ckpt_every=100, out_dir=str(tmp_path), precision="16-mixed", **QUIET)
    trainer = Trainer(transformer_stage(tokenizer_checkpoint), clips(tiny_data), cfg)
    history = trainer.fit()
    assert all(math.isfinite(row["transformer/loss"]) for row in history) and trainer.step == 3
    assert list(trainer.scalers) == ["transformer"]
    assert [row["transformer/grad_scale"] for row in history] == [65536.0] * 3
    saved = ckpt.load(tmp_path / "last.pt")
    assert saved["grad_scalers"]["transformer"] == trainer.scalers["transformer"].state_dict()


def test_fit_takes_the_precision_setting(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["fit", "--config", "tiny/tokenizer", "--model.init_args.frames", str(FRAMES), "--data.train",
            str(tiny_data / "train"), "--data.batch_size", "2", "--trainer.max_steps", "1", "--trainer.out_dir",
            str(out), "--trainer.progress", "false", "--trainer.tensorboard", "false"]
    assert main([*args, "--trainer.precision", "fp16"]) == 2
    one_line_error(capsys, "--trainer.precision must be one of 32, bf16-mixed, 16-mixed, got 'fp16'")
    assert not (out / "last.pt").exists()
    assert main([*args, "--trainer.precision", "bf16-mixed"]) == 0
    assert ckpt.load(out / "last.pt")["run_config"]["trainer"]["precision"] == "bf16-mixed"


def test_float32_runs_without_autocast_or_scalers(tiny_data, tokenizer_checkpoint, tmp_path):
    stage = transformer_stage(tokenizer_checkpoint)
    seen, handle = autocast_dtypes(stage.transformer)
    trainer = Trainer(stage, clips(tiny_data), TrainerConfig(max_steps=1, out_dir=str(tmp_path), **QUIET))
    trainer.fit()
    handle.remove()
    assert seen == {torch.float32} and trainer.scalers == {}
    assert ckpt.load(tmp_path / "last.pt")["grad_scalers"] == {}


# -- the overflow rule of 16-mixed, on two linear phases -------------------------------------------------


class ToyStage(Stage):
    """Two linear phases ``a`` (with EMA) and ``b``. A batch ``(x, poison)`` with poison ``"gradient"`` gives
    ``b`` a finite loss and a NaN gradient (d sqrt(u)/du is infinite at 0), as an overflowing scale does;
    ``"loss"`` gives ``b`` an infinite loss."""

    name = "toy"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 1), nn.Linear(4, 1)
        self.optim = OptimConfig(lr=0.1, weight_decay=0.0, warmup_steps=0, grad_clip=0.0)

    def phases(self) -> list[PhaseSpec]:
        return [PhaseSpec("a", self.a, self.optim, ema_decay=0.5), PhaseSpec("b", self.b, self.optim)]

    def loss(self, phase, model, batch, ctx):
        x, poison = batch
        loss = model(x).float().pow(2).mean()
        if phase == "b" and poison == "gradient":
            loss = loss + torch.sqrt((model.weight * 0).sum())
        if phase == "b" and poison == "loss":
            loss = loss + math.inf
        return loss, {f"{phase}/loss": float(loss.detach())}

    def model_config(self) -> dict:
        return {}


def toy_batches(poison: dict[int, str], n: int = 6) -> list:
    """Inputs small enough that no loss-scaled gradient overflows float16 by itself (65536 * 2y/3 < 65504)."""
    g = torch.Generator().manual_seed(1)
    return [(0.01 * torch.randn(3, 4, generator=g), poison.get(i)) for i in range(n)]


def toy_trainer(out: Path, data, **cfg) -> Trainer:
    settings = {"max_steps": 4, "ckpt_every": 100, "precision": "16-mixed", **QUIET, **cfg}
    return Trainer(ToyStage(), data if callable(data) else (lambda epoch: data), TrainerConfig(out_dir=str(out),
                                                                                                **settings))


def weights(trainer: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    return {p.spec.name: {k: v.clone() for k, v in p.module.state_dict().items()} for p in trainer.phases}


def test_16_mixed_overflow_skips_only_its_phase_and_is_not_counted(tmp_path, recwarn):
    """An overflowing gradient in phase b (finite losses) is the scaler's: b stands still for that step and its
    scale halves; a updates exactly as without the overflow; the step advances and nothing is counted."""
    poisoned = toy_trainer(tmp_path / "poisoned", toy_batches({1: "gradient"}))
    history = poisoned.fit()
    clean = toy_trainer(tmp_path / "clean", toy_batches({}))
    clean.fit()
    assert poisoned.step == 4 and poisoned.nonfinite_skipped == 0 and poisoned.position.index == 4
    assert not [w for w in recwarn if "non-finite" in str(w.message)]
    assert [row["b/grad_scale"] for row in history] == [65536.0, 32768.0, 32768.0, 32768.0]
    assert [row["a/grad_scale"] for row in history] == [65536.0] * 4
    a, b = (p for p in poisoned.phases)
    assert a.scheduler.last_epoch == 4 and int(a.ema.n_averaged) == 4
    assert b.scheduler.last_epoch == 3  # no schedule step for the step b stood still
    mine, theirs = weights(poisoned), weights(clean)
    assert all(torch.equal(mine["a"][k], theirs["a"][k]) for k in mine["a"])
    assert torch.equal(poisoned.phases[0].ema.module.weight, clean.phases[0].ema.module.weight)
    assert not torch.equal(mine["b"]["weight"], theirs["b"]["weight"])
    assert history[-1]["nonfinite_skipped"] == 0.0


def test_16_mixed_nonfinite_loss_is_a_divergence_and_leaves_the_scalers(tmp_path):
    trainer = toy_trainer(tmp_path, toy_batches({1: "loss"}))
    with pytest.warns(UserWarning, match=r"step 2: non-finite loss or gradient \(b loss = inf\)"):
        history = trainer.fit()
    assert trainer.step == 4 and trainer.nonfinite_skipped == 1 and trainer.position.index == 5
    for scaler in trainer.scalers.values():  # the skipped step neither lowered a scale nor reset a growth count
        assert scaler.state_dict()["scale"] == 65536.0 and scaler.state_dict()["_growth_tracker"] == 4
    assert [row["nonfinite_skipped"] for row in history] == [0.0, 1.0, 1.0, 1.0]


def test_16_mixed_nonfinite_losses_in_a_row_stop_the_run(tmp_path):
    trainer = toy_trainer(tmp_path, toy_batches({i: "loss" for i in range(6)}), max_nonfinite_steps=3)
    with pytest.warns(UserWarning), pytest.raises(Exception, match="3 steps in a row had a non-finite loss"):
        trainer.fit()


class Interrupted(Exception):
    pass


def test_16_mixed_resumes_exactly_with_the_scalers_state(tmp_path):
    batches = toy_batches({1: "gradient"})
    whole = toy_trainer(tmp_path / "whole", batches, max_steps=5)
    expected = whole.fit()

    def until_step_3(epoch):
        for i, batch in enumerate(batches):
            if i == 3:
                raise Interrupted
            yield batch

    out = tmp_path / "killed"
    with pytest.raises(Interrupted):
        toy_trainer(out, until_step_3, max_steps=5, ckpt_every=3).fit()
    saved = ckpt.load(out / "last.pt")
    assert saved["step"] == 3 and saved["grad_scalers"]["b"]["scale"] == 32768.0
    resumed = toy_trainer(out, batches, max_steps=5)
    assert resumed.resume()
    assert resumed.scalers["b"].get_scale() == 32768.0
    rest = resumed.fit()

    def values(rows):
        return [{k: v for k, v in row.items() if k != "clips_per_s"} for row in rows]

    assert values(rest) == values(expected[3:])
    mine, theirs = weights(resumed), weights(whole)
    assert all(torch.equal(mine[p][k], theirs[p][k]) for p in mine for k in mine[p])
    assert {n: s.state_dict() for n, s in resumed.scalers.items()} == {n: s.state_dict()
                                                                       for n, s in whole.scalers.items()}


def test_a_checkpoint_without_scaler_state_resumes_with_fresh_scalers(tmp_path):
    out = tmp_path / "run"
    toy_trainer(out, toy_batches({}), max_steps=2, precision="32").fit()
    state = ckpt.load(out / "last.pt")
    del state["grad_scalers"]  # a checkpoint without scaler state
    ckpt.save_atomic(state, out / "last.pt")
    resumed = toy_trainer(out, toy_batches({}), max_steps=4)
    assert resumed.resume() and resumed.step == 2
    assert {n: s.get_scale() for n, s in resumed.scalers.items()} == {"a": 65536.0, "b": 65536.0}
    resumed.fit()
    assert resumed.step == 4
