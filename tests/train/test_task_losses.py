"""The transformer stage's per-task guard rails: interval means of each task's loss, and the warning for a
task whose condition is every token of the configured grid."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from magvit import registry
from magvit.data import make_eval_loader
from magvit.hookspecs import hookimpl
from magvit.masking import ConditionCoverageWarning
from tests.helpers.tasks import EverySecondPixel
from magvit.train.data import DataConfig, make_data
from magvit.train.distributed import DistInfo
from magvit.train.stage import StepContext
from magvit.train.trainer import Trainer, TrainerConfig
from magvit.train.transformer_stage import TransformerStage
from tests.train.conftest import FRAMES, SIZE

TASKS = ["fp", "opc", "cg", "cfp"]
SMALL = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "mlp_dim": 64, "dropout": 0.0, "attention_dropout": 0.0}


def make_stage(checkpoint: Path, tasks: list[str] = TASKS) -> TransformerStage:
    return TransformerStage(str(checkpoint), num_classes=8, tasks=tasks, frames=FRAMES, resolution=SIZE,
                            transformer_options=SMALL)


def test_each_task_is_logged_as_its_mean_over_the_log_interval(tiny_data, tokenizer_checkpoint, tmp_path):
    stage = make_stage(tokenizer_checkpoint)
    losses: list[tuple[int, str, float]] = []
    loss_of = stage.loss

    def recording_loss(phase: str, model: Any, batch: Any, ctx: StepContext):
        loss, parts = loss_of(phase, model, batch, ctx)
        losses.append((ctx.step, stage.objective.task_for_step(ctx.step).name, float(loss.detach())))
        return loss, parts

    stage.loss = recording_loss
    data = make_data(DataConfig(train=str(tiny_data / "train"), batch_size=2), DistInfo())
    cfg = TrainerConfig(max_steps=6, log_every=3, out_dir=str(tmp_path), progress=False, tensorboard=False)
    Trainer(stage, data, cfg).fit()

    expected: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for step, task, loss in losses:
        expected[(step // 3 + 1) * 3][f"task/{task}/loss"].append(loss)
    logged: dict[int, dict[str, float]] = defaultdict(dict)
    with (tmp_path / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row["name"].startswith("task/"):
                logged[int(row["step"])][row["name"]] = float(row["value"])
    assert sorted(logged) == [3, 6]
    for step, per_task in expected.items():
        assert sorted(logged[step]) == sorted(per_task), step  # tasks not drawn in the interval are absent
        for name, values in per_task.items():
            assert logged[step][name] == pytest.approx(sum(values) / len(values), rel=1e-5), (step, name)
    assert any(len(values) > 1 for per_task in expected.values() for values in per_task.values())


def test_a_skipped_step_is_not_counted(tiny_data, tokenizer_checkpoint):
    stage = make_stage(tokenizer_checkpoint, tasks=["fp"])
    batch = next(iter(make_eval_loader(tiny_data / "train", 2)))
    losses = []
    for step in (0, 0, 1):  # step 0 is tried twice, as after a skipped step; the first try is dropped
        loss, _ = stage.loss("transformer", stage.transformer, batch, StepContext(step, torch.Generator()))
        losses.append(float(loss.detach()))
    total, count = stage.pop_interval_sums()["task/fp/loss"]
    assert count == 2 and total == pytest.approx(losses[1] + losses[2])
    assert stage.pop_interval_sums() == {"task/fp/loss": (0.0, 0.0)}


@hookimpl
def magvit_add_tasks() -> Mapping[str, Callable[..., Any]]:
    return {"every2": EverySecondPixel}


def test_a_condition_covering_every_token_warns_at_construction(tokenizer_checkpoint, monkeypatch):
    reg = registry.Registry(builtins=(*registry.BUILTIN_PLUGINS, __name__), entry_points=[])
    monkeypatch.setattr(registry, "default_registry", lambda: reg)
    with pytest.warns(ConditionCoverageWarning) as caught:
        make_stage(tokenizer_checkpoint, tasks=["fp", "every2"])
    assert [str(w.message) for w in caught if w.category is ConditionCoverageWarning] == [
        "task 'every2': its condition covers all 128 tokens of the 2x8x8 token grid under the tokenizer's 4x4x4 "
        "supervoxels: no token is left to generate, only the condition's tokens to refine; leave whole "
        "supervoxels without condition pixels"
    ]
