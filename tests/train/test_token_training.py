"""Training the transformer from token shards: same loss as on the fly, refusals, `magvit fit`, random tasks."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from magvit import checkpoint as ckpt
from magvit import cli, registry
from magvit.batch import ClipBatch
from magvit.data import make_eval_loader
from magvit.errors import MagvitError
from magvit.hookspecs import hookimpl
from magvit.protocols import Condition
from magvit.train.data import DataConfig
from magvit.train.distributed import DistInfo
from magvit.train.stage import StepContext
from magvit.train.token_cache import make_token_loader
from magvit.train.tokenize import tokenize_shards
from magvit.train.transformer_stage import TransformerStage
from tests.train.conftest import FRAMES, SIZE

TASKS = ["fp", "opc", "cg", "cfp"]
SMALL = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "mlp_dim": 64, "dropout": 0.0, "attention_dropout": 0.0}


@pytest.fixture(scope="module")
def token_dir(tiny_data, tokenizer_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokens")
    # Same batch size as the checks below: the encoder rounds by batch size (magvit.train.tokenize).
    tokenize_shards(tokenizer_checkpoint, tiny_data / "train", out, tasks=TASKS, batch_size=4)
    return out


def make_stage(checkpoint: Path, **kw: Any) -> TransformerStage:
    args = {"tokenizer_checkpoint": str(checkpoint), "num_classes": 8, "tasks": TASKS, "frames": FRAMES,
            "resolution": SIZE, "transformer_options": SMALL, **kw}
    return TransformerStage(**args)


def first_step_of(stage: TransformerStage) -> dict[str, int]:
    steps: dict[str, int] = {}
    for step in range(len(stage.objective.cycle)):
        steps.setdefault(stage.objective.task_for_step(step).name, step)
    return steps


def loss_at(stage: TransformerStage, batch: Any, step: int) -> float:
    stage.transformer.eval()
    with torch.no_grad():
        loss, _ = stage.loss("transformer", stage.transformer, batch, StepContext(step, torch.Generator().manual_seed(step)))
    return float(loss)


def test_loss_from_token_shards_equals_the_on_the_fly_loss(tiny_data, tokenizer_checkpoint, token_dir):
    on_the_fly = make_stage(tokenizer_checkpoint)
    cached = make_stage(tokenizer_checkpoint, token_shards=str(token_dir))
    video_batch = next(iter(make_eval_loader(tiny_data / "train", 4)))
    token_batch = next(iter(make_token_loader(token_dir, 4, shuffle=False)))
    assert token_batch.keys == video_batch.keys and token_batch.video is None
    steps = first_step_of(cached)
    assert sorted(steps) == sorted(TASKS)
    for name, step in steps.items():
        assert loss_at(cached, token_batch, step) == loss_at(on_the_fly, video_batch, step), name


def _other_checkpoint(path: Path, tmp_path: Path) -> Path:
    state = ckpt.load(path)
    state["step"] = int(state["step"]) + 1  # same weights, a different file: refused by hash
    other = tmp_path / "other.pt"
    ckpt.save_atomic(state, other)
    return other


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("checkpoint", "tokenizer differs"),
        ({"task_options": {"fp": {"cond_frames": 2}}}, "'fp' argument cond_frames differs: 1 in the shards, 2"),
        ({"frames": 4}, "clip size differs"),
        ({"objective": {"token_rule": "analytic"}}, "token_rule differs"),
        ({"tasks": ["fp", "ipc"]}, "task 'ipc' is not cached"),
    ],
    ids=["tokenizer", "task-args", "clip-size", "token-rule", "missing-task"],
)
def test_mismatched_token_shards_are_refused(tokenizer_checkpoint, token_dir, tmp_path, change, message):
    from magvit.objective import ObjectiveConfig

    kw: dict[str, Any] = {"token_shards": str(token_dir)}
    checkpoint = tokenizer_checkpoint
    if change == "checkpoint":
        checkpoint = _other_checkpoint(tokenizer_checkpoint, tmp_path)
    else:
        kw.update(change)
        if "objective" in kw:
            kw["objective"] = ObjectiveConfig(**kw["objective"])
    with pytest.raises(MagvitError, match=message.replace("(", r"\(")):
        make_stage(checkpoint, **kw)


def fit_argv(tokenizer: Path, token_dir: Path, out: Path, **init: Any) -> list[str]:
    model = {"class_path": "magvit.train.transformer_stage.TransformerStage",
             "init_args": {"tokenizer_checkpoint": str(tokenizer), "num_classes": 8, "tasks": TASKS, "frames": FRAMES,
                           "resolution": SIZE, "transformer_options": SMALL, "token_shards": str(token_dir), **init}}
    return ["fit", "--model", json.dumps(model), "--data.train", str(out / "not-read"), "--data.batch_size", "4",
            "--trainer.max_steps", "3", "--trainer.log_every", "1", "--trainer.out_dir", str(out),
            "--trainer.progress", "false", "--trainer.tensorboard", "false"]


def test_magvit_fit_trains_from_token_shards(tokenizer_checkpoint, token_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(fit_argv(tokenizer_checkpoint, token_dir, out)) == 0, capsys.readouterr().err
    with (out / "metrics.csv").open() as f:
        losses = {int(r["step"]): float(r["value"]) for r in csv.DictReader(f) if r["name"] == "transformer/loss"}
    assert sorted(losses) == [1, 2, 3] and all(v > 0 for v in losses.values())
    saved = ckpt.load(out / "last.pt")
    assert saved["step"] == 3 and saved["run_config"]["model"]["init_args"]["token_shards"] == str(token_dir)

    # A mismatch is one line on stderr and exit code 2, before any training.
    bad = fit_argv(tokenizer_checkpoint, token_dir, tmp_path / "bad", task_options={"fp": {"cond_frames": 3}})
    assert cli.main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cond_frames differs" in err


# -- a task with a random condition: not cached, tokenised on the fly ---------------------------------


@attrs.frozen
class RandomFramePrediction:
    """Frame prediction from a random number of first frames (a condition no cache can hold)."""

    prompt: str = "rfp"
    name = "rfp"
    uses_class = False
    needs_video = True
    deterministic = False

    def condition(self, video: torch.Tensor, generator: torch.Generator | None = None) -> Condition:
        t = video.shape[2]
        k = int(torch.randint(1, t, (1,), generator=generator))
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool)
        mask[:, :, :k] = True
        return Condition(video.index_select(2, torch.arange(t).clamp(max=k - 1)), mask)


@hookimpl
def magvit_add_tasks() -> Mapping[str, Callable[..., Any]]:
    return {"rfp": RandomFramePrediction}


@pytest.fixture
def with_random_task(monkeypatch):
    reg = registry.Registry(builtins=(*registry.BUILTIN_PLUGINS, __name__), entry_points=[])
    monkeypatch.setattr(registry, "default_registry", lambda: reg)


def test_a_random_task_falls_back_to_on_the_fly_tokenisation(tiny_data, tokenizer_checkpoint, tmp_path,
                                                             with_random_task, monkeypatch):
    tasks = ["fp", "rfp"]
    out = tmp_path / "tok"
    report = tokenize_shards(tokenizer_checkpoint, tiny_data / "train", out, tasks=tasks, batch_size=4)
    assert report.cached_tasks == ("fp",) and report.skipped_tasks == ("rfp",)
    assert report.meta.has_video and report.meta.skipped_tasks[0]["name"] == "rfp"

    cached = make_stage(tokenizer_checkpoint, tasks=tasks, num_classes=0, token_shards=str(out))
    on_the_fly = make_stage(tokenizer_checkpoint, tasks=tasks, num_classes=0)
    batch = next(iter(cached.data(DataConfig(batch_size=4), DistInfo())(0)))
    assert isinstance(batch, ClipBatch) and batch.video is not None and set(batch.cond_tokens) == {"fp"}
    video_batch = ClipBatch(label=batch.label, keys=batch.keys, video=batch.video)  # the same clips, no tokens

    encodes = []
    encode = cached.tokenizer.encode
    monkeypatch.setattr(cached.tokenizer, "encode", lambda v: encodes.append(v.shape[0]) or encode(v))
    steps = first_step_of(cached)
    for name, calls in [("fp", []), ("rfp", [8])]:  # rfp: the clip and its condition, in one call
        encodes.clear()
        assert loss_at(cached, batch, steps[name]) == loss_at(on_the_fly, video_batch, steps[name]), name
        assert encodes == calls, name

    # Shards without clips cannot serve a random task.
    no_video = tmp_path / "fp-only"
    tokenize_shards(tokenizer_checkpoint, tiny_data / "train", no_video, tasks=["fp"], batch_size=8)
    with pytest.raises(MagvitError, match="'rfp' has a random condition.*hold no clips"):
        make_stage(tokenizer_checkpoint, tasks=tasks, num_classes=0, token_shards=str(no_video))
