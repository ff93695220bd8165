"""`magvit generate` / `magvit evaluate` decoding flags, repeats, and single-task models scored on every task."""

from __future__ import annotations

import json

import pytest
import torch

from magvit.cli import main
from magvit.pipeline import MagvitPipeline
from tests.helpers.cli import one_line_error


@pytest.fixture(scope="module")
def single_fp(tmp_path_factory):
    """A saved single-task fp model without task prompts (paper Table 4's B-FP) and 2 held-out clips."""
    from magvit.data import write_synthetic

    root = tmp_path_factory.mktemp("single")
    torch.manual_seed(0)
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=32, prompt_sharing="none")
    write_synthetic(root / "data", num_clips=2, num_val_clips=2, frames=16, size=32, num_classes=2)
    return pipe.save(root / "fp.pt"), root / "data" / "val"


def test_generate_passes_the_decoding_flags(single_fp, tmp_path, monkeypatch):
    checkpoint, data = single_fp
    seen = {}
    original = MagvitPipeline.generate

    def spy(self, task, *args, **kwargs):
        seen.update(kwargs, task=task.name)
        return original(self, task, *args, **kwargs)

    monkeypatch.setattr(MagvitPipeline, "generate", spy)
    out = tmp_path / "opc.gif"
    assert main(["generate", "--checkpoint", str(checkpoint), "--task", "opc", "--input", str(data), "--steps", "2",
                 "--choice_temperature", "2.0", "--temperature", "0.5", "--schedule", "linear", "--guidance", "1.5",
                 "--precision", "bf16-mixed", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert seen["task"] == "opc"  # a task the single-task model was not trained on
    assert {k: seen[k] for k in ("choice_temperature", "temperature", "schedule", "guidance_scale", "steps",
                                 "precision")} == {
        "choice_temperature": 2.0, "temperature": 0.5, "schedule": "linear", "guidance_scale": 1.5, "steps": 2,
        "precision": "bf16-mixed"}
    seen.clear()
    assert main(["generate", "--checkpoint", str(checkpoint), "--task", "unc", "--steps", "2",
                 "--out", str(tmp_path / "unc.gif")]) == 0
    # unset flags leave the sampler's defaults: nothing is passed for them
    assert seen["task"] == "unc" and not {"choice_temperature", "temperature", "schedule"} & set(seen)
    assert seen["guidance_scale"] == 0.0 and seen["precision"] == "32"


def test_evaluate_scores_unseen_tasks_with_repeats_and_records_the_decoding(single_fp, tmp_path, capsys):
    checkpoint, data = single_fp
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--tasks", "fp,opc,unc",
                 "--num_clips", "2", "--no_fvd", "--steps", "2", "--choice_temperature", "1.0", "--schedule", "linear",
                 "--repeats", "2", "--seed", "3", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "mean±std over 2 repeats" in table
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["fp", "opc", "unc"]
    assert metrics["decoding"] == {
        "sampler": {"name": "commit", "config": {"choice_temperature": 1.0, "temperature": 1.0, "schedule": "linear"}},
        "steps": 2, "guidance_scale": 0.0, "guidance_task": None, "seed": 3, "repeats": 2, "precision": "32"}
    for name in ("fp", "opc", "unc"):
        runs = metrics["repeats"][name]
        assert len(runs) == 2 and runs[0]["psnr_generated"] != runs[1]["psnr_generated"]
        assert metrics["tasks"][name]["psnr_generated"] == pytest.approx(
            (runs[0]["psnr_generated"] + runs[1]["psnr_generated"]) / 2)
        assert metrics["std"][name]["psnr_generated"] == pytest.approx(
            abs(runs[0]["psnr_generated"] - runs[1]["psnr_generated"]) / 2)


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--repeats", "0"], ["--repeats must be at least 1, got 0"]),
        (["--schedule", "zigzag"], ["zigzag"]),
        (["--choice_temperature", "-1"], ["choice_temperature"]),
        (["--precision", "fp16"], ["--precision must be one of 32, bf16-mixed, 16-mixed, got 'fp16'"]),
    ],
    ids=["repeats", "schedule", "choice-temperature", "precision"],
)
def test_evaluate_refuses_bad_decoding_flags_in_one_line(single_fp, tmp_path, capsys, flags, fragments):
    checkpoint, data = single_fp
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--tasks", "fp", "--num_clips",
                 "2", "--no_fvd", "--steps", "2", *flags]) == 2
    one_line_error(capsys, *fragments)


def test_evaluate_decodes_in_the_given_precision_and_records_it(single_fp, tmp_path):
    checkpoint, data = single_fp
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--tasks", "fp", "--num_clips", "2",
                 "--no_fvd", "--steps", "2", "--precision", "bf16-mixed", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["decoding"]["precision"] == "bf16-mixed"
    assert 0 < metrics["tasks"]["fp"]["psnr_generated"] < 100


def test_generate_refuses_an_unknown_precision_before_loading_anything(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "missing.pt"), "--task", "fp", "--precision", "half",
                 "--out", str(tmp_path / "out.gif")]) == 2
    one_line_error(capsys, "--precision must be one of 32, bf16-mixed, 16-mixed, got 'half'")


def test_generate_compile_compiles_the_transformer_and_writes_the_video(single_fp, tmp_path, monkeypatch):
    checkpoint, data = single_fp
    compiled = []
    original = MagvitPipeline.compile

    def spy(self, **options):
        compiled.append(self)
        return original(self, **options)

    monkeypatch.setattr(MagvitPipeline, "compile", spy)
    out = tmp_path / "fp.gif"
    assert main(["generate", "--checkpoint", str(checkpoint), "--task", "fp", "--input", str(data), "--steps", "2",
                 "--compile", "--out", str(out)]) == 0
    assert len(compiled) == 1 and out.stat().st_size > 0
    assert getattr(compiled[0].transformer, "_compiled_call_impl", None) is not None  # nn.Module.compile's mark
