"""Fault suite, training (``magvit fit`` and the trainer): a diverging run, weights that are not finite,
two writers of one run folder, settings out of range or not matching the data, a resume with changed
settings, a resume of a finished run, replayed metrics rows, checkpoint file mode, a full disk, a
read-only or file ``out_dir``, ``--device cuda`` without CUDA.

Each test names the fault it covers and asserts the exact outcome: exit code, one ``magvit: error:``
line, checkpoints byte-identical, nothing written where nothing should be.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from magvit import checkpoint as ckpt
from magvit.cli import main
from magvit.errors import MagvitError
from magvit.locking import FolderLock
from magvit.train.data import DataConfig
from magvit.train.distributed import resolve_device
from magvit.train.optim import OptimConfig
from magvit.train.settings import SettingError
from magvit.train.stage import PhaseSpec, Stage, StepContext
from magvit.train.tokenize import tokenize_shards
from magvit.train.tokenizer_stage import TokenizerStage
from magvit.train.trainer import Trainer, TrainerConfig
from tests.faults.conftest import fit_args, transformer_args
from tests.helpers.cli import assert_one_line_error, one_line_error

TOKENIZER = "tiny/tokenizer.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metric_rows(out: Path) -> list[tuple[int, str, float]]:
    with (out / "metrics.csv").open(newline="") as f:
        return [(int(r["step"]), r["name"], float(r["value"])) for r in csv.DictReader(f)]


@pytest.fixture
def run_copy(tokenizer_run, tmp_path) -> Path:
    """A copy of the one-step tokenizer run, free to modify (out_dir is not a setting a resume compares)."""
    return Path(shutil.copytree(tokenizer_run, tmp_path / "run"))


def resume_two_steps(synthetic: Path, out: Path, *extra: str) -> list[str]:
    """Continue the one-step run of ``out`` to step 2 (max_steps is a changed setting: accepted)."""
    return fit_args(TOKENIZER, synthetic / "train", out, "--resume", "--resume_override", "--trainer.max_steps", "2",
                    "--trainer.log_every", "1", *extra)


# -- divergence ---------------------------------------------------------------------------------------


def test_nan_run_stops_with_one_error_and_keeps_the_last_good_checkpoint(synthetic, tmp_path, capsys):
    """Fault: an absurd learning rate makes a tokenizer run NaN; it used to exit 0 and overwrite last.pt
    with NaN weights. Now the NaN steps are skipped, warned about once, and the run stops after
    max_nonfinite_steps in a row with last.pt still the last good (finite) state."""
    out = tmp_path / "nan"
    code = main(fit_args(TOKENIZER, synthetic / "train", out, "--model.init_args.optim.lr", "1e30",
                         "--trainer.max_steps", "20", "--trainer.ckpt_every", "2", "--trainer.log_every", "1",
                         "--trainer.max_nonfinite_steps", "2"))
    err = capsys.readouterr().err
    assert code == 2
    state = ckpt.load(out / "last.pt")
    saved = state["step"]
    assert 1 <= saved < 20
    line = assert_one_line_error(err, f"training stopped at step {saved + 1}: 2 steps in a row had a non-finite loss",
                                 f"the last good checkpoint {out / 'last.pt'} (step {saved}) is kept")
    warnings = [w for w in err.splitlines() if w.startswith("magvit: warning: ")]
    assert len(warnings) == 1 and f"step {saved + 1}: non-finite loss or gradient" in warnings[0], err
    for part in ("models", "ema"):
        for name, weights in state[part].items():
            assert ckpt.nonfinite_keys(weights) == [], (part, name)
    rows = metric_rows(out)
    assert max(step for step, _, _ in rows) == saved and all(math.isfinite(v) for _, _, v in rows), line


class ToyStage(Stage):
    """Two linear phases ``a`` (with EMA) and ``b``; a batch marked poisoned gives ``b`` a finite loss but a
    NaN gradient (d sqrt(u)/du is infinite at 0)."""

    name = "toy"

    def __init__(self, lr: float = 0.1) -> None:
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 1), nn.Linear(4, 1)
        self.optim = OptimConfig(lr=lr, weight_decay=0.0, warmup_steps=0, grad_clip=0.0)

    def phases(self) -> list[PhaseSpec]:
        return [PhaseSpec("a", self.a, self.optim, ema_decay=0.5), PhaseSpec("b", self.b, self.optim)]

    def loss(self, phase, model, batch, ctx):
        x, poisoned = batch
        loss = model(x).pow(2).mean()
        if poisoned and phase == "b":
            loss = loss + torch.sqrt((model.weight * 0).sum())
        return loss, {f"{phase}/loss": float(loss.detach())}

    def model_config(self) -> dict:
        return {}


def toy_batches(poisoned_at: int | None, n: int = 5) -> list:
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(3, 4, generator=g), False) for _ in range(n)]
    if poisoned_at is not None:
        batches.insert(poisoned_at, (torch.randn(3, 4, generator=g), True))
    return batches


def toy_trainer(out: Path, batches: list, lr: float = 0.1, **cfg) -> Trainer:
    settings = {"max_steps": 4, "log_every": 1, "ckpt_every": 100, "progress": False, "tensorboard": False, **cfg}
    return Trainer(ToyStage(lr), lambda epoch: batches, TrainerConfig(out_dir=str(out), **settings))


def test_nonfinite_gradient_skips_the_step_of_every_phase(tmp_path, capsys):
    """Fault: a NaN gradient (finite loss, no clipping) reached the optimiser and made the weights NaN.
    Now the whole step is skipped -- both phases, schedules and the EMA -- exactly as if that batch were
    not in the data; it is warned about once and counted in metrics.csv."""
    skipped = toy_trainer(tmp_path / "skipped", toy_batches(poisoned_at=1))
    with pytest.warns(UserWarning) as caught:
        skipped.fit()
    messages = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    assert len(messages) == 1 and "step 2: non-finite loss or gradient (b gradient norm = nan)" in messages[0]
    clean = toy_trainer(tmp_path / "clean", toy_batches(poisoned_at=None))
    clean.fit()
    assert skipped.step == clean.step == 4 and skipped.nonfinite_skipped == 1
    for p, q in zip(skipped.phases, clean.phases, strict=True):
        for x, y in zip(p.module.state_dict().values(), q.module.state_dict().values(), strict=True):
            assert torch.equal(x, y), p.spec.name
        assert p.scheduler.last_epoch == q.scheduler.last_epoch == 4
    assert torch.equal(skipped.phases[0].ema.module.weight, clean.phases[0].ema.module.weight)
    assert int(skipped.phases[0].ema.n_averaged) == 4
    counts = {step: v for step, name, v in metric_rows(tmp_path / "skipped") if name == "nonfinite_skipped"}
    assert counts == {1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0}


def test_nonfinite_weights_are_never_written_over_the_last_good_checkpoint(tmp_path):
    """Fault: weights that overflowed to inf (finite gradients, lr 1e39) were saved over last.pt. Now the
    save is refused with one line and last.pt stays byte-identical. (The resumed run's own lr takes effect,
    not the checkpoint's.)"""
    out = tmp_path / "run"
    toy_trainer(out, toy_batches(None), max_steps=1).fit()
    before = sha256(out / "last.pt")
    trainer = toy_trainer(out, toy_batches(None), lr=1e39, max_steps=2, ckpt_every=1)
    assert trainer.resume()
    with pytest.raises(MagvitError) as exc:
        trainer.fit()
    msg = str(exc.value)
    assert msg.startswith("step 2: the a weights are not finite (NaN or inf in ")
    assert f"no checkpoint was written; the last good checkpoint {out / 'last.pt'} (step 1) is kept" in msg
    assert "\n" not in msg and sha256(out / "last.pt") == before


def test_nan_batch_does_not_poison_the_lecam_anchors():
    """Fault: discriminator logits that are not finite moved the LeCam anchors (stage state, outside the
    optimiser the trainer skips) to NaN for good, so every later step of a GAN run was NaN too."""
    stage = TokenizerStage(preset="tiny", resolution=32, frames=16, discriminator_start_step=0, lecam_weight=0.001)
    batch = types.SimpleNamespace(video=torch.full((1, 3, 16, 32, 32), float("nan")))
    ctx = StepContext(0, torch.Generator())
    stage.loss("generator", stage.tokenizer, batch, ctx)
    before = {k: v.clone() for k, v in stage.objective.lecam.state_dict().items()}
    loss, _ = stage.loss("discriminator", stage.discriminator, batch, ctx)
    assert not torch.isfinite(loss)
    assert all(torch.equal(v, before[k]) for k, v in stage.objective.lecam.state_dict().items())


def _with_nan(source: Path, dest: Path, part: str, phase: str) -> str:
    """Copy checkpoint ``source`` to ``dest`` with one NaN in ``state[part][phase]``; returns the key."""
    state = ckpt.load(source)
    weights = state[part][phase]
    key = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1)
    weights[key] = weights[key].clone().view(-1).index_fill(0, torch.tensor([0]), float("nan")).view_as(weights[key])
    ckpt.save_atomic({k: v for k, v in state.items() if k != "format"}, dest)
    return key


def test_tokenizer_with_nan_weights_is_refused_by_fit_and_tokenize(synthetic, tokenizer_run, tmp_path, capsys):
    """Fault: a tokenizer checkpoint with NaN weights (a diverged run) was loaded as the frozen tokenizer of
    a transformer run and by `data tokenize` (every token 0, "complete"). Both refuse it in one line."""
    bad = tmp_path / "nan-tokenizer.pt"
    key = _with_nan(tokenizer_run / "last.pt", bad, "ema", "generator")
    out = tmp_path / "transformer"
    assert main(transformer_args(bad, synthetic / "train", out)) == 2
    fragments = ("the checkpoint's tokenizer weights has non-finite values (NaN or inf) in 1 of ", f"e.g. {key}:",
                 "written by a diverged run?")
    one_line_error(capsys, *fragments)
    assert not out.exists()
    tokens = tmp_path / "tokens"
    assert main(["data", "tokenize", "--tokenizer_checkpoint", str(bad), "--src", str(synthetic / "train"),
                 "--out", str(tokens)]) == 2
    one_line_error(capsys, *fragments)
    assert not (tokens / "meta.json").exists()


def test_resume_from_nan_weights_is_refused(synthetic, run_copy, capsys):
    """Fault: --resume loaded NaN weights of a diverged run and trained on. Now one line names the part."""
    key = _with_nan(run_copy / "last.pt", run_copy / "last.pt", "models", "discriminator")
    before = sha256(run_copy / "last.pt")
    assert main(resume_two_steps(synthetic, run_copy)) == 2
    one_line_error(capsys, "the checkpoint's discriminator weights has non-finite values", f"e.g. {key}:")
    assert sha256(run_copy / "last.pt") == before


@pytest.mark.parametrize("forge", ["drop-models", "drop-phase", "scalar-step"])
def test_resume_from_an_incomplete_checkpoint_is_one_line(synthetic, run_copy, capsys, forge):
    """Fault: a last.pt without the parts `fit` writes (edited, or written by other code) ended --resume in a
    KeyError traceback. Now one line says it is not a complete training checkpoint; the file is untouched."""
    state = {k: v for k, v in ckpt.load(run_copy / "last.pt").items() if k != "format"}
    if forge == "drop-models":
        del state["models"]
    elif forge == "drop-phase":
        del state["optimizers"]["discriminator"]
    else:
        state["data"] = {"epoch": 0, "index": 0, "bogus": 1}
    ckpt.save_atomic(state, run_copy / "last.pt")
    before = sha256(run_copy / "last.pt")
    assert main(resume_two_steps(synthetic, run_copy)) == 2
    one_line_error(capsys, f"{run_copy / 'last.pt'} is not a complete tokenizer training checkpoint")
    assert sha256(run_copy / "last.pt") == before


def test_pipeline_with_nan_weights_is_refused(transformer_run, tmp_path, capsys):
    """Fault: `generate` (MagvitPipeline.from_checkpoint) loaded NaN transformer weights, then died in torch.
    Now one error line."""
    bad = tmp_path / "nan-transformer.pt"
    key = _with_nan(transformer_run / "last.pt", bad, "models", "transformer")
    gif = tmp_path / "x.gif"
    assert main(["generate", "--checkpoint", str(bad), "--task", "cg", "--label", "0", "--out", str(gif)]) == 2
    one_line_error(capsys, "transformer weights has non-finite values (NaN or inf)", key)
    assert not gif.exists()


# -- one writer per run folder ----------------------------------------------------------------------


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock until its stdin closes."""
    code = ("import sys; from magvit.locking import FolderLock; "
            "lock = FolderLock(sys.argv[1], 'run folder').acquire(); print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=ENV, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_fit_refused_while_another_process_holds_the_run_folder(synthetic, tokenizer_run, capsys):
    """Fault: two writers of one out_dir. A second fit (here a resume) is refused at once with one line
    naming the holder's pid; the first run's files are untouched."""
    before = {name: sha256(tokenizer_run / name) for name in ("last.pt", "metrics.csv")}
    holder = _hold_lock(tokenizer_run)
    try:
        assert main(fit_args(TOKENIZER, synthetic / "train", tokenizer_run, "--resume")) == 2
        one_line_error(capsys, f"run folder {tokenizer_run} is in use by another magvit process (pid {holder.pid} on ")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert {name: sha256(tokenizer_run / name) for name in before} == before


def test_second_fit_into_a_running_runs_folder_is_refused(synthetic, tmp_path, capsys):
    """Fault: a second `magvit fit` into the out_dir of a running one started and mixed both runs' files.
    Now it stops with one line naming the first run's pid, and the first run's metrics.csv and last.pt are
    byte-identical; once the first is killed (-9) its lock is gone with it."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "magvit.cli",
                              *fit_args(TOKENIZER, synthetic / "train", out, "--trainer.max_steps", "1000",
                                        "--trainer.ckpt_every", "1", "--trainer.log_every", "1")],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not ((out / "last.pt").exists() and (out / "metrics.csv").exists()):
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # freeze it so that its files can be compared
        before = {name: sha256(out / name) for name in ("last.pt", "metrics.csv")}
        assert main(fit_args(TOKENIZER, synthetic / "train", out)) == 2
        one_line_error(capsys, f"run folder {out} is in use by another magvit process (pid {first.pid} on ")
        assert {name: sha256(out / name) for name in before} == before
    finally:
        first.kill()
        first.wait(timeout=30)
    with FolderLock(out, "run folder"):  # a killed holder leaves no lock behind
        pass


DDP_LOCK = """
import sys
from magvit.errors import MagvitError
from magvit.train import distributed
info = distributed.setup("cpu")
try:
    distributed.lock_folder(sys.argv[1], "run folder", info)
    print("locked")
except MagvitError as exc:
    print(f"refused: {exc}")
print("all finite:", distributed.all_ranks_true(info.rank == 0, info))
distributed.teardown()
"""


def test_torchrun_ranks_of_a_refused_job_all_stop_with_the_same_error(tmp_path):
    """Fault: under torchrun only rank 0 takes the run-folder lock; the other ranks must stop with the same
    error instead of waiting for it. (Also: a skip flag raised on one rank is seen by all.)"""
    out = tmp_path / "run"
    holder = _hold_lock(out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        ranks = [subprocess.Popen([sys.executable, "-c", DDP_LOCK, str(out)], stdout=subprocess.PIPE, text=True,
                                  env={**ENV, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
                 for r in range(2)]
        outputs = [p.communicate(timeout=120)[0].splitlines() for p in ranks]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    refused = f"refused: run folder {out} is in use by another magvit process (pid {holder.pid} on "
    assert [o[0].startswith(refused) for o in outputs] == [True, True], outputs
    assert outputs[0] == outputs[1] and outputs[0][1] == "all finite: False"


def test_save_leaves_a_live_writers_temp_file(tmp_path):
    """Fault: a save removed every `.last.pt.*.tmp` as stale, including one a live writer was writing.
    Now only temp files of dead writers (pid in the name) are removed."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live, stale = tmp_path / f".last.pt.{os.getppid()}.abc.tmp", tmp_path / f".last.pt.{dead.pid}.def.tmp"
    live.write_bytes(b"being written")
    stale.write_bytes(b"half a checkpoint")
    ckpt.save_atomic({"step": 1}, tmp_path / "last.pt")
    assert live.read_bytes() == b"being written" and not stale.exists()


# -- settings checked at start ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer.grad_accum", "0"], "--trainer.grad_accum must be >= 1, got 0"),
        (["--trainer.max_steps", "0"], "--trainer.max_steps must be >= 1, got 0"),
        (["--trainer.ckpt_every", "0"], "--trainer.ckpt_every must be >= 1, got 0"),
        (["--trainer.log_every", "0"], "--trainer.log_every must be >= 1, got 0"),
        (["--trainer.sample_every", "-1"], "--trainer.sample_every must be >= 0, got -1"),
        (["--trainer.max_nonfinite_steps", "0"], "--trainer.max_nonfinite_steps must be >= 1, got 0"),
        (["--data.batch_size", "0"], "--data.batch_size must be >= 1, got 0"),
        (["--data.num_workers", "-1"], "--data.num_workers must be >= 0, got -1"),
        (["--model.init_args.optim.lr", "0"], "--model.init_args.optim.lr must be a finite number > 0, got 0.0"),
        (["--model.init_args.optim.warmup_steps", "-5"], "--model.init_args.optim.warmup_steps must be >= 0, got -5"),
        (["--model.init_args.optim.grad_clip", "-1"], "--model.init_args.optim.grad_clip must be a finite number >= 0"),
        (["--model.init_args.optim.betas", "[0.9, 1.0]"],
         "--model.init_args.optim.betas must be two numbers in [0, 1)"),
        (["--model.init_args.ema_decay", "1.5"], "--model.init_args.ema_decay must be in [0, 1), got 1.5"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_setting_out_of_range_is_one_line_before_anything_is_written(synthetic, tmp_path, capsys, args, message):
    """Fault: grad_accum 0 "trained" without data, ckpt_every/log_every 0 crashed after step 1, max_steps 0
    claimed a checkpoint, a zero lr or batch size was accepted. Now one line naming the flag, at start."""
    out = tmp_path / "out"
    assert main(fit_args(TOKENIZER, synthetic / "train", out, *args)) == 2
    one_line_error(capsys, message)
    assert not out.exists()


def test_settings_out_of_range_refused_by_the_python_api():
    """Fault: the Python API accepted the same values (TrainerConfig(grad_accum=0) ...)."""
    cases = [(TrainerConfig, {"grad_accum": 0}, "TrainerConfig.grad_accum must be >= 1, got 0"),
             (DataConfig, {"batch_size": 0}, "DataConfig.batch_size must be >= 1, got 0"),
             (OptimConfig, {"lr": float("nan")}, "OptimConfig.lr must be a finite number > 0, got nan")]
    for cls, kwargs, message in cases:
        with pytest.raises(SettingError) as exc:
            cls(**kwargs)
        assert str(exc.value) == message


def test_fewer_classes_than_the_data_is_refused_at_start(synthetic, tokenizer_run, tmp_path, capsys):
    """Fault: num_classes smaller than the data's labels crashed only when a class task was first drawn."""
    out = tmp_path / "out"
    assert main(transformer_args(tokenizer_run / "last.pt", synthetic / "train", out,
                                 "--model.init_args.num_classes", "4")) == 2
    one_line_error(capsys, f"{synthetic / 'train'} has 8 classes but model.init_args.num_classes is 4")
    assert not out.exists()


def test_fewer_classes_than_the_token_shards_is_refused_at_start(synthetic, tokenizer_run, tmp_path, capsys):
    """Fault: the same class-count mismatch with a transformer training from token shards."""
    tokens = tmp_path / "tokens"
    tokenize_shards(tokenizer_run / "last.pt", synthetic / "train", tokens, tasks=["cg"], batch_size=16)
    out = tmp_path / "out"
    assert main(transformer_args(tokenizer_run / "last.pt", synthetic / "train", out, "--model.init_args.tasks",
                                 "[cg]", "--model.init_args.token_shards", str(tokens),
                                 "--model.init_args.num_classes", "4")) == 2
    one_line_error(capsys, f"token shards {tokens} has 8 classes but model.init_args.num_classes is 4")
    assert not out.exists()


def test_clip_size_not_matching_the_data_is_refused_at_start(synthetic, tmp_path, capsys):
    """Fault: a model configured for another clip size than the shards' failed inside torch, or not at all."""
    out = tmp_path / "out"
    assert main(fit_args(TOKENIZER, synthetic / "train", out, "--model.init_args.frames", "8")) == 2
    one_line_error(capsys, f"the clips of {synthetic / 'train'} are 16x32x32", "configured for 8x32x32")
    assert not out.exists()


# -- resume ---------------------------------------------------------------------------------------------


def test_resume_with_changed_settings_is_refused(synthetic, tokenizer_run, capsys):
    """Fault: --resume with a changed lr or batch size was accepted silently (the lr was ignored, the data
    position no longer meant the same clips). Now one line lists every such change."""
    before = sha256(tokenizer_run / "last.pt")
    assert main(fit_args(TOKENIZER, synthetic / "train", tokenizer_run, "--resume", "--model.init_args.optim.lr",
                         "0.01", "--data.batch_size", "4", "--trainer.grad_accum", "2",
                         "--model.init_args.ema_decay", "0.9")) == 2
    one_line_error(capsys, f"{tokenizer_run / 'last.pt'} was written with other settings that change what the run "
                           "computes: data.batch_size: 2 -> 4; model.init_args.ema_decay: 0.99 -> 0.9; "
                           "model.init_args.optim.lr: 0.001 -> 0.01; trainer.grad_accum: 1 -> 2; resume with the "
                           "checkpoint's settings, or pass --resume_override")
    assert sha256(tokenizer_run / "last.pt") == before


def test_resume_ignores_settings_that_do_not_change_the_run(synthetic, tokenizer_run, capsys):
    """Logging and checkpoint cadence may change on resume; a finished run then says there is nothing to
    do (it used to say it wrote a checkpoint it did not write)."""
    before = sha256(tokenizer_run / "last.pt")
    assert main(fit_args(TOKENIZER, synthetic / "train", tokenizer_run, "--resume", "--trainer.log_every", "7",
                         "--trainer.ckpt_every", "3", "--trainer.sample_every", "5",
                         "--trainer.max_nonfinite_steps", "4")) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err and "warning" not in captured.err
    assert captured.out.splitlines()[-1] == "already at step 1 = max_steps; nothing to do"
    assert sha256(tokenizer_run / "last.pt") == before


def test_resume_override_applies_and_records_the_new_lr(synthetic, run_copy, capsys):
    """Faults: (1) a changed lr on resume was silently replaced by the checkpoint's schedule; with
    --resume_override the new lr is what the optimiser uses (logged), with one warning line and a record.
    (2) After a kill and resume, metrics.csv repeated the replayed steps (readers double-count): the run
    folder here is as a kill leaves it, with rows logged after the last checkpoint, the last cut short."""
    with (run_copy / "metrics.csv").open("a", newline="") as f:
        f.write("2,g/loss,999\r\n2,generator/lr,999\r\n3,g/loss,999\r\n3,g/l")
    assert main(resume_two_steps(synthetic, run_copy, "--model.init_args.optim.lr", "0.002")) == 0
    err = capsys.readouterr().err
    changes = "model.init_args.optim.lr: 0.001 -> 0.002; trainer.max_steps: 1 -> 2"
    assert f"magvit: warning: resuming with changed settings: {changes}" in err.splitlines()
    lrs = {step: v for step, name, v in metric_rows(run_copy) if name == "generator/lr"}
    # warm-up of 100 steps: the configured lr x 2/100 at step 2 (the checkpoint's 0.001 would give 2e-5)
    assert lrs[2] == pytest.approx(0.002 * 2 / 100)
    log = (run_copy / "resume_overrides.log").read_text().splitlines()
    assert len(log) == 1 and log[0].endswith(f"resumed at step 1 with changed settings: {changes}")
    rows = metric_rows(run_copy)
    assert Counter((step, name) for step, name, _ in rows).most_common(1)[0][1] == 1
    assert {step for step, _, _ in rows} == {1, 2} and 999 not in {v for _, _, v in rows}


# -- files and devices ---------------------------------------------------------------------------------


def test_checkpoint_mode_is_that_of_other_outputs(tokenizer_run, tmp_path):
    """Fault: checkpoints were written 0600 while every other output is 0644 (under the default umask)."""
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tokenizer_run / "last.pt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tokenizer_run / "last.pt").stat().st_mode & 0o777 == (tokenizer_run / "metrics.csv").stat().st_mode & 0o777
    old = os.umask(0o027)
    try:
        ckpt.save_atomic({"step": 1}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o640


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(synthetic, run_copy, capsys, monkeypatch):
    """Fault: a full disk during a checkpoint ended fit with torch's `unexpected pos` traceback. Now one
    line naming the file and the cause; last.pt byte-identical, no temp file left."""
    before = sha256(run_copy / "last.pt")
    real_fdopen = os.fdopen

    class FullDisk:
        """The checkpoint's temp file on a disk that fills after 64 KiB."""

        def __init__(self, file) -> None:
            self.file, self.written = file, 0

        def write(self, data) -> int:
            if self.written + len(data) > 65536:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    def fdopen(fd, *args, **kwargs):
        file = real_fdopen(fd, *args, **kwargs)
        return FullDisk(file) if ".last.pt." in os.readlink(f"/proc/self/fd/{fd}") else file

    monkeypatch.setattr(ckpt.os, "fdopen", fdopen)
    assert main(resume_two_steps(synthetic, run_copy)) == 2
    one_line_error(capsys, "step 2: could not write the checkpoint ([Errno 28] No space left on device: "
                           f"'{run_copy / 'last.pt'}'); the last good checkpoint", "(step 1) is kept")
    assert sha256(run_copy / "last.pt") == before
    assert not list(run_copy.glob(".last.pt.*.tmp"))


def _refuse_writes(folder: Path):
    def mkstemp(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))

    return types.SimpleNamespace(mkstemp=mkstemp)


def test_unwritable_out_dir_is_one_line_simulated(synthetic, run_copy, capsys, monkeypatch):
    """Fault: an out_dir that cannot be written (permissions) ended fit with a traceback. Simulated (the
    tests may run as root, where file modes do not stop writes): the checkpoint's temp file is refused."""
    before = sha256(run_copy / "last.pt")
    monkeypatch.setattr(ckpt, "tempfile", _refuse_writes(run_copy))
    assert main(resume_two_steps(synthetic, run_copy)) == 2
    one_line_error(capsys, f"could not write the checkpoint ([Errno 13] Permission denied: '{run_copy}')")
    assert sha256(run_copy / "last.pt") == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes; the simulated variant covers this case")
def test_read_only_out_dir_is_one_line(synthetic, run_copy, capsys):
    """Fault: a read-only out_dir (chmod 0555) ended fit with a traceback."""
    before = sha256(run_copy / "last.pt")
    run_copy.chmod(0o555)
    try:
        assert main(resume_two_steps(synthetic, run_copy)) == 2
    finally:
        run_copy.chmod(0o755)
    one_line_error(capsys, f"cannot write to run folder {run_copy}: [Errno 13] Permission denied")
    assert sha256(run_copy / "last.pt") == before


def test_out_dir_that_is_a_file_is_one_line(synthetic, tmp_path, capsys):
    """Fault: an out_dir that is an existing file ended fit with a traceback after the first step."""
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert main(fit_args(TOKENIZER, synthetic / "train", out)) == 2
    one_line_error(capsys, f"run folder {out} is a file, not a folder")
    assert out.read_text() == "not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda_is_one_line(synthetic, tmp_path, capsys):
    """Fault: --device cuda without CUDA ended in a torch traceback."""
    out = tmp_path / "out"
    assert main(fit_args(TOKENIZER, synthetic / "train", out, "--device", "cuda")) == 2
    one_line_error(capsys, "--device cuda was asked for but torch.cuda.is_available() is False; use --device cpu")
    assert not out.exists()
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MagvitError, match="--device 'gpu0' is not a device name; use cpu or cuda"):
        resolve_device("gpu0")
