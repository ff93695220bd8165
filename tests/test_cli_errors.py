"""Every user mistake on the command line is a one-line error with a non-zero exit, never a traceback.

The commands run in-process through ``magvit.cli.main`` (what the console script calls); one test runs the
real console script to check that the exit code and stderr reach the shell.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magvit.cli import main
from magvit.data import write_synthetic, write_video
from tests.helpers.cli import one_line_error

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, num_clips=16, num_val_clips=4, frames=16, size=32)
    return root


def fit_args(data: Path | str, out_dir: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(CONFIGS / "tiny/tokenizer.yaml"), "--data.train", str(data),
            "--data.batch_size", "2", "--trainer.max_steps", "1", "--trainer.out_dir", str(out_dir),
            "--trainer.progress", "false", "--trainer.tensorboard", "false", *extra]


@pytest.fixture(scope="module")
def tokenizer_run(synthetic, tmp_path_factory) -> Path:
    """A tiny tokenizer stage trained for one step: out_dir/last.pt exists."""
    out = tmp_path_factory.mktemp("run") / "tokenizer"
    assert main(fit_args(synthetic / "train", out)) == 0
    assert (out / "last.pt").is_file()
    return out


# -- magvit fit -----------------------------------------------------------------------------------------


def test_fit_missing_data_folder(tmp_path, capsys):
    missing = tmp_path / "no-such-data" / "train"
    assert main(fit_args(missing, tmp_path / "out")) == 2
    one_line_error(capsys, f"dataset {missing} does not exist")
    assert not (tmp_path / "out").exists()  # failed before anything was written


def test_fit_data_folder_without_meta(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    assert main(fit_args(tmp_path / "shards", tmp_path / "out")) == 2
    one_line_error(capsys, f"{tmp_path / 'shards'} is not a magvit clip dataset (no meta.json)")


def test_fit_fewer_clips_than_a_batch(synthetic, tmp_path, capsys):
    assert main(fit_args(synthetic / "val", tmp_path / "out", "--data.batch_size", "8")) == 2  # val: 4 clips
    one_line_error(capsys, "epoch 0 delivered no batch", "batch_size 8")
    assert not (tmp_path / "out" / "last.pt").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer.bogus", "3"], "magvit: error: unrecognized arguments: --trainer.bogus 3"),
        (["--trainer.max_steps", "many"], 'Parser key "trainer.max_steps"'),
    ],
    ids=["unknown-key", "bad-value"],
)
def test_fit_bad_command_line_key(synthetic, tmp_path, capsys, args, message):
    assert main(fit_args(synthetic / "train", tmp_path / "out", *args)) == 2
    one_line_error(capsys, message, "(see `magvit fit --help`)")


def test_fit_unknown_key_in_config_file(synthetic, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_step: 3\n")  # typo of max_steps
    assert main(fit_args(synthetic / "train", tmp_path / "out", "--config", str(bad))) == 2
    one_line_error(capsys, "does not accept option 'trainer.max_step'")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ('{"bogus": 1}', "unknown tokenizer arguments ['bogus']"),
        (None, "unknown tokenizer 'nosuch'; registered tokenizers: vq3d, vq2d"),
    ],
    ids=["tokenizer-option", "tokenizer-name"],
)
def test_fit_bad_model_argument(synthetic, tmp_path, capsys, option, message):
    extra = (["--model.init_args.tokenizer_options", option] if option
             else ["--model.init_args.tokenizer", "nosuch"])
    assert main(fit_args(synthetic / "train", tmp_path / "out", *extra)) == 2
    one_line_error(capsys, message)


def test_fit_refuses_to_overwrite_a_run(synthetic, tokenizer_run, capsys):
    before = (tokenizer_run / "last.pt").read_bytes()
    assert main(fit_args(synthetic / "train", tokenizer_run)) == 2
    one_line_error(capsys, f"{tokenizer_run / 'last.pt'} already exists: pass --resume to continue that run")
    assert (tokenizer_run / "last.pt").read_bytes() == before


def test_fit_resume_flag_alone_continues_the_run(synthetic, tokenizer_run, capsys):
    """What the overwrite error tells the user to do works: bare `--resume` (the run is already at max_steps,
    so it says there is nothing to do and does not claim to have written a checkpoint)."""
    before = (tokenizer_run / "last.pt").read_bytes()
    assert main(fit_args(synthetic / "train", tokenizer_run, "--resume")) == 0
    captured = capsys.readouterr()
    assert f"resuming from {tokenizer_run / 'last.pt'} at step 1" in captured.err
    assert captured.out.strip().endswith("\nalready at step 1 = max_steps; nothing to do")
    assert (tokenizer_run / "last.pt").read_bytes() == before


def test_fit_resume_from_another_model_size(synthetic, tokenizer_run, capsys):
    """Even with the changed settings accepted (--resume_override), weights of another size are refused."""
    before = (tokenizer_run / "last.pt").read_bytes()
    code = main(fit_args(synthetic / "train", tokenizer_run, "--resume", "--resume_override",
                         "--model.init_args.tokenizer_options", '{"embedding_dim": 16}'))
    assert code == 2
    line = one_line_error(capsys, "the checkpoint's generator weights does not match the configured model",
                          "shape mismatches", "checkpoint (8, ", "vs model (16, ",
                          "Use the same preset/size as the run that wrote it, or start without --resume")
    assert "encoder.conv_out.weight" in line
    assert (tokenizer_run / "last.pt").read_bytes() == before


# -- magvit data shards -------------------------------------------------------------------------------


def test_shards_missing_source(tmp_path, capsys):
    assert main(["data", "shards", "--src", str(tmp_path / "videos"), "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, f"source folder {tmp_path / 'videos'} does not exist")


def test_shards_empty_source(tmp_path, capsys):
    (tmp_path / "videos" / "class_a").mkdir(parents=True)
    (tmp_path / "videos" / "class_a" / "notes.txt").write_text("no videos here")
    assert main(["data", "shards", "--src", str(tmp_path / "videos"), "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, f"no video files (.mp4,", f"under {tmp_path / 'videos'}", "(1 other files found)")


def _frames(n: int, value: int) -> np.ndarray:
    return np.full((n, 32, 32, 3), value, dtype=np.uint8)


def test_shards_short_video_is_skipped(tmp_path, capsys):
    src = tmp_path / "videos"
    write_video(src / "jump" / "short.mp4", _frames(4, 60))
    write_video(src / "run" / "long.mp4", _frames(20, 200))
    out = tmp_path / "out"
    assert main(["data", "shards", "--src", str(src), "--out", str(out), "--frames", "16", "--size", "32"]) == 0
    report = capsys.readouterr().out
    assert "wrote 1 clips from 1 of 2 videos into 1 shards" in report
    assert "skipped 1 videos:\n  jump/short.mp4: too short: 4 frames, one clip needs 16 (frames=16, stride=1)" in report
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped"] == [{"path": "jump/short.mp4",
                                "reason": "too short: 4 frames, one clip needs 16 (frames=16, stride=1)"}]


def test_shards_no_usable_video(tmp_path, capsys):
    src = tmp_path / "videos"
    write_video(src / "jump" / "short.mp4", _frames(4, 60))
    assert main(["data", "shards", "--src", str(src), "--out", str(tmp_path / "out"), "--frames", "16",
                 "--size", "32"]) == 2
    one_line_error(capsys, f"no clip could be cut from the 1 videos under {src}",
                   "jump/short.mp4: too short: 4 frames, one clip needs 16")
    assert not (tmp_path / "out" / "meta.json").exists()


# -- magvit generate ----------------------------------------------------------------------------------


def test_generate_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / "last.pt"
    assert main(["generate", "--checkpoint", str(missing), "--task", "fp", "--out", str(tmp_path / "x.gif")]) == 2
    one_line_error(capsys, f"checkpoint {str(missing)!r} does not exist")
    assert not (tmp_path / "x.gif").exists()


def test_generate_from_a_tokenizer_checkpoint(tokenizer_run, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tokenizer_run / "last.pt"), "--task", "fp",
                 "--out", str(tmp_path / "x.gif")]) == 2
    one_line_error(capsys, "is a 'tokenizer' checkpoint; generation needs a transformer-stage checkpoint")


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> Path:
    from magvit.pipeline import MagvitPipeline

    path = tmp_path_factory.mktemp("pipe") / "pipe.pt"
    MagvitPipeline.from_preset("tiny", tasks=["fp"], resolution=32).save(path)
    return path


@pytest.mark.parametrize(
    ("task", "extra", "message"),
    [
        ("nosuch", [], "task 'nosuch' is not configured in this pipeline; configured: fp"),
        ("fi", [], "task 'fi' is not configured in this pipeline; configured: fp"),  # registered, not trained
        ("fp", [], "task 'fp' needs --input (a video file or a shard folder)"),
        ("fp", ["--input", "no-such.mp4"], "input 'no-such.mp4' does not exist"),
    ],
    ids=["unknown-task", "untrained-task", "missing-input", "missing-input-file"],
)
def test_generate_bad_task_or_input(pipeline_file, tmp_path, capsys, task, extra, message):
    out = tmp_path / "x.gif"
    assert main(["generate", "--checkpoint", str(pipeline_file), "--task", task, "--out", str(out), *extra]) == 2
    one_line_error(capsys, message)
    assert not out.exists()


def test_console_script_exit_code_and_stderr(tmp_path):
    script = Path(sys.executable).parent / "magvit"
    res = subprocess.run([str(script), "generate", "--checkpoint", str(tmp_path / "nope.pt"), "--task", "fp",
                          "--out", str(tmp_path / "x.gif")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"magvit: error: checkpoint {str(tmp_path / 'nope.pt')!r} does not exist; pass the path of a .pt file "
        "written by `magvit fit`"
    ]
    assert res.stdout == ""
