"""Fault suite: the command line's error boundary, ``generate``/``evaluate`` and the Python API's input checks.

Each case asserts the exact outcome: exit code, exactly one ``magvit: error: ...`` line on stderr and no
traceback, and no output file from a failed command. A forged checkpoint config (unknown options, wrong
types, absurd sizes) is refused before any weight is allocated.
"""

from __future__ import annotations

import errno
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

import magvit.cli
from magvit import checkpoint as ckpt
from magvit.cli import main
from magvit.data import read_video, write_video
from magvit.errors import InputError, MagvitError
from magvit.pipeline import MagvitPipeline
from tests.faults.conftest import FRAMES, SIZE, fit_args, transformer_args
from tests.helpers.cli import one_line_error


def _clip(frames: int = FRAMES) -> np.ndarray:
    """uint8 ``[T, H, W, 3]``: a bright square moving right over a dark background."""
    clip = np.full((frames, SIZE, SIZE, 3), 30, dtype=np.uint8)
    for t in range(frames):
        clip[t, 8:20, t : t + 12] = (220, 180, 40)
    return clip


# -- generate --input with real video files --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_generate_from_a_video_file(transformer_run, tmp_path, capsys, suffix):
    """``generate --input`` a real mp4/gif: read_video's numpy frames reach the model (was: a dtype error)."""
    video = write_video(tmp_path / f"input{suffix}", _clip())
    out = tmp_path / "out.gif"
    assert main(["generate", "--checkpoint", str(transformer_run / "last.pt"), "--task", "fp", "--input", str(video),
                 "--out", str(out), "--steps", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    frames = read_video(out)
    assert frames.shape[0] == FRAMES  # condition | generation | input, side by side, 2x enlarged
    assert frames.shape[1] == 2 * SIZE and frames.shape[2] == 2 * (3 * SIZE + 2 * 2)


def test_generate_from_a_video_shorter_than_the_model(transformer_run, tmp_path, capsys):
    """Already one line before ``--input`` could read a file; kept with the video-file cases it belongs to."""
    video = write_video(tmp_path / "short.gif", _clip(4))
    out = tmp_path / "out.gif"
    assert main(["generate", "--checkpoint", str(transformer_run / "last.pt"), "--task", "fp", "--input", str(video),
                 "--out", str(out)]) == 2
    one_line_error(capsys, f"{video} has 4 frames; the model needs clips of {FRAMES}")
    assert not out.exists()


def test_generate_from_a_file_that_is_not_a_video(transformer_run, tmp_path, capsys):
    """Already one line before ``--input`` could read a file; kept with the video-file cases it belongs to."""
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 20)
    out = tmp_path / "out.gif"
    assert main(["generate", "--checkpoint", str(transformer_run / "last.pt"), "--task", "fp", "--input", str(notes),
                 "--out", str(out)]) == 2
    one_line_error(capsys, f"{notes}: cannot decode")
    assert not out.exists()


# -- generate: arguments refused before the model runs ---------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "fp", "--input", "{val}", "--label", "3"], "task 'fp' does not use a class label: drop --label"),
        (["--task", "cg"], "task 'cg' is class-conditional: pass --label <class index>"),
        (["--task", "cg", "--label", "2", "--steps", "0"], "--steps must be at least 1, got 0"),
        (["--task", "fp", "--input", "{val}", "--sample", "-1"], "--sample must be at least 0, got -1"),
    ],
    ids=["label-for-a-task-without-class", "cg-without-label", "steps-0", "negative-sample"],
)
def test_generate_bad_argument(transformer_run, synthetic, tmp_path, capsys, extra, message):
    out = tmp_path / "out.gif"
    extra = [arg.format(val=synthetic / "val") for arg in extra]
    assert main(["generate", "--checkpoint", str(transformer_run / "last.pt"), "--out", str(out), *extra]) == 2
    one_line_error(capsys, message)
    assert not out.exists()


def test_generate_output_is_a_folder(transformer_run, synthetic, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(transformer_run / "last.pt"), "--task", "fp", "--input",
                 str(synthetic / "val"), "--out", str(tmp_path)]) == 2
    one_line_error(capsys, f"--out {str(tmp_path)!r} is a folder")


def test_generate_output_under_a_file(transformer_run, synthetic, tmp_path, capsys):
    """An OSError while writing (here: a file where the output's folder should be) is one line naming it."""
    (tmp_path / "plain.txt").write_text("a file, not a folder")
    out = tmp_path / "plain.txt" / "out.gif"
    assert main(["generate", "--checkpoint", str(transformer_run / "last.pt"), "--task", "fp", "--input",
                 str(synthetic / "val"), "--out", str(out), "--steps", "1"]) == 2
    one_line_error(capsys, "plain.txt")
    assert (tmp_path / "plain.txt").read_text() == "a file, not a folder"


# -- evaluate: counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"), [("--num_clips", "0"), ("--num_clips", "-1"), ("--steps", "0")],
    ids=["num_clips-0", "num_clips-negative", "steps-0"],
)
def test_evaluate_bad_count(transformer_run, synthetic, tmp_path, capsys, flag, value):
    assert main(["evaluate", "--checkpoint", str(transformer_run / "last.pt"), "--data", str(synthetic / "val"),
                 "--no_fvd", "--out", str(tmp_path / "eval"), flag, value]) == 2
    one_line_error(capsys, f"{flag} must be at least 1, got {value}")
    assert not (tmp_path / "eval").exists()


# -- task options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "options", "message"),
    [
        ("task_options", '{"fp": {"foo": 1}}',
         "task 'fp' has no option 'foo'; its options: cond_frames, cond_latent_frames, prompt"),
        ("task_options", '{"fp": {"cond_frames": 0}}',
         "task 'fp' refuses the options {'cond_frames': 0}: cond_frames must be >= 1"),
        ("transformer_options", '{"foo": 1}', "unknown transformer option 'foo'; known: codebook_size, num_classes"),
        ("transformer_options", '{"hidden_size": 1000000000}',
         "MaskedTransformer: hidden_size must be an integer in [1, 65536], got 1000000000"),
    ],
    ids=["task-unknown-option", "task-refused-value", "transformer-unknown-option", "transformer-absurd-size"],
)
def test_fit_bad_stage_options(tokenizer_run, synthetic, tmp_path, capsys, flag, options, message):
    """Options the transformer stage passes on to its tasks (through magvit.tasks.build_task) and to the
    transformer: one line naming the option, before anything is built or written."""
    out = tmp_path / "run"
    assert main(transformer_args(tokenizer_run / "last.pt", synthetic / "train", out,
                                 f"--model.init_args.{flag}", options)) == 2
    one_line_error(capsys, message)
    assert not (out / "last.pt").exists()


# -- forged checkpoint configs -------------------------------------------------------------------------


def _forge(source: Path, target: Path, edit) -> Path:
    state = ckpt.load(source)
    edit(state["model_config"])
    state.pop("format")
    return ckpt.save_atomic(state, target)


FORGED = {
    "transformer-hidden-size": (lambda c: c["transformer"].update(hidden_size=10**9),
                                "MaskedTransformer: hidden_size must be an integer in [1, 65536], got 1000000000"),
    "transformer-layers": (lambda c: c["transformer"].update(num_layers=10**6),
                           "MaskedTransformer: num_layers must be an integer in [1, 512], got 1000000"),
    "transformer-codebook": (lambda c: c["transformer"].update(codebook_size=2**40),
                             "MaskedTransformer: codebook_size must be an integer in [2, 1048576]"),
    "transformer-too-large": (lambda c: c["transformer"].update(num_layers=500, hidden_size=8192, num_heads=8,
                                                                mlp_dim=32768),
                              "describe a model of about"),
    "transformer-unknown-option": (lambda c: c["transformer"].update(foo=1),
                                   "unknown transformer option 'foo'; known: codebook_size, num_classes"),
    "transformer-wrong-type": (lambda c: c["transformer"].update(hidden_size="256"),
                               "hidden_size must be an integer in [1, 65536], got '256'"),
    "tokenizer-codebook": (lambda c: c["tokenizer"]["config"].update(codebook_size=2**40),
                           "VQ3D: codebook_size must be an integer in [2, 1048576]"),
    "tokenizer-filters": (lambda c: c["tokenizer"]["config"].update(filters=10**6),
                          "VQ3D: filters must be an integer in [1, 4096], got 1000000"),
    "tokenizer-multipliers": (lambda c: c["tokenizer"]["config"].update(channel_multipliers="abc"),
                              "VQ3D: channel_multipliers must be a list of 1 to 8 integers, got 'abc'"),
    "pipeline-resolution": (lambda c: c.update(resolution=10**6), "MagvitPipeline: clips of 16x1000000x1000000"),
    "task-option": (lambda c: c["tasks"][0].update(config={"foo": 1}), "task 'fp' has no option 'foo'"),
    "tasks-missing": (lambda c: c.pop("tasks"), "its entry model_config.tasks should be a list, got nothing"),
    "tokenizer-spec-not-a-dict": (lambda c: c.update(tokenizer=[1, 2]),
                                  "its entry model_config.tokenizer should be a dict, got list"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_generate_from_a_forged_checkpoint_config(transformer_run, tmp_path, capsys, case):
    """A checkpoint whose model_config was edited: one error line, raised before the model is built."""
    edit, message = FORGED[case]
    forged = _forge(transformer_run / "last.pt", tmp_path / "forged.pt", edit)
    out = tmp_path / "out.gif"
    assert main(["generate", "--checkpoint", str(forged), "--task", "cg", "--label", "1", "--out", str(out)]) == 2
    one_line_error(capsys, message)
    assert not out.exists()


def test_generate_from_a_checkpoint_with_forged_weights(transformer_run, tmp_path, capsys):
    """A weight that is not a tensor: one line naming the entry (was: an AttributeError traceback)."""
    state = ckpt.load(transformer_run / "last.pt")
    state.pop("format")
    for section in ("models", "ema"):
        if state.get(section, {}).get("transformer"):
            state[section]["transformer"]["word.weight"] = "print('hello')"
    forged = ckpt.save_atomic(state, tmp_path / "forged.pt")
    assert main(["generate", "--checkpoint", str(forged), "--task", "cg", "--label", "1",
                 "--out", str(tmp_path / "out.gif")]) == 2
    one_line_error(capsys, ".transformer['word.weight'] should be a tensor, got str")


def test_forged_tokenizer_checkpoint_for_the_transformer_stage(tokenizer_run, synthetic, tmp_path, capsys):
    """The tokenizer checkpoint of the transformer stage is a forged config too: refused, nothing written."""
    forged = _forge(tokenizer_run / "last.pt", tmp_path / "tok.pt",
                    lambda c: c["tokenizer"]["config"].update(embedding_dim=10**7))
    out = tmp_path / "run"
    assert main(transformer_args(forged, synthetic / "train", out)) == 2
    one_line_error(capsys, "VQ3D: embedding_dim must be an integer in [1, 4096], got 10000000")
    assert not (out / "last.pt").exists()


# -- perceptual-loss weights -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("resnet.pt", b"PK\x03\x04 truncated zip" * 4, "perceptual-loss weights '{path}' could not be read ("),
        ("resnet.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "is not a valid safetensors file"),
        ("other.pt", None, "does not match timm 'resnet50': "),
    ],
    ids=["corrupt-pt", "corrupt-safetensors", "other-architecture"],
)
def test_fit_with_bad_perceptual_weights(synthetic, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is None:
        torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    else:
        path.write_bytes(content)
    out = tmp_path / "run"
    assert main(fit_args("tiny/tokenizer.yaml", synthetic / "train", out,
                         "--model.init_args.perceptual_weights", str(path))) == 2
    one_line_error(capsys, message.format(path=path))
    assert not (out / "last.pt").exists()


# -- the error boundary ----------------------------------------------------------------------------------


def _safetensor_error() -> Exception:
    from safetensors.torch import load

    try:
        load(b"\xff" * 16)
    except Exception as exc:  # noqa: BLE001 - the library's own exception type, whatever it is called
        return exc
    raise AssertionError("safetensors accepted junk")


@attrs.frozen
class _Validated:
    steps: int = attrs.field(validator=attrs.validators.gt(0))


def _attrs_error() -> Exception:
    try:
        _Validated(0)
    except ValueError as exc:
        return exc
    raise AssertionError("attrs accepted 0")


BOUNDARY = {
    "permission": (lambda: PermissionError(errno.EACCES, "Permission denied", "/ro/out/last.pt"),
                   "Permission denied: '/ro/out/last.pt' (check the permissions, or choose another path)"),
    "no-space": (lambda: OSError(errno.ENOSPC, "No space left on device", "/full/last.pt"),
                 "No space left on device: '/full/last.pt' (free some space, or choose another path)"),
    "is-a-directory": (lambda: IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out"),
                       "Is a directory: '/data/out' (a folder is where a file was expected)"),
    "safetensors": (_safetensor_error, "a weights file could not be read (SafetensorError: "),
    "unpickling": (lambda: pickle.UnpicklingError("Weights only load failed. Re-running `torch.load` with "
                                                  "`weights_only` set to `False` will likely succeed"),
                   "it holds Python objects other than tensors and plain data (refused)"),
    "bad-zip": (lambda: zipfile.BadZipFile("File is not a zip file"),
                "a weights file could not be read (BadZipFile: File is not a zip file)"),
    "attrs-validator": (_attrs_error, "'steps' must be > 0: 0"),
}


@pytest.mark.parametrize("case", list(BOUNDARY))
def test_error_boundary_prints_one_line(monkeypatch, capsys, case):
    make, message = BOUNDARY[case]
    exc = make()

    def fail(argv):
        raise exc

    monkeypatch.setattr(magvit.cli, "run", fail)
    assert main(["tasks"]) == 2
    one_line_error(capsys, message)


def test_unexpected_exception_shows_its_traceback(monkeypatch, capsys):
    """A bug is not dressed up as a user error: traceback, one internal-error line, exit code 1."""
    def fail(argv):
        return 1 / 0

    monkeypatch.setattr(magvit.cli, "run", fail)
    assert main(["tasks"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert err.rstrip().splitlines()[-1].startswith("magvit: internal error: ZeroDivisionError: division by zero")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_reraises(monkeypatch, tmp_path, how):
    argv = ["generate", "--checkpoint", str(tmp_path / "nope.pt"), "--task", "fp", "--out", str(tmp_path / "x.gif")]
    if how == "flag":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv("MAGVIT_DEBUG", "1")
    with pytest.raises(MagvitError, match="does not exist"):
        main(argv)


def test_bad_argument_is_one_line(capsys):
    assert main(["generate", "--checkpoint", "x.pt", "--task", "fp", "--out", "x.gif", "--steps", "many"]) == 2
    one_line_error(capsys, 'Parser key "steps": Expected a', "(see `magvit generate --help`)")


def test_warnings_are_one_line_and_the_hook_is_restored(monkeypatch, capsys):
    before = warnings.showwarning

    def warn(argv):
        warnings.warn("first line\nsecond line", UserWarning, stacklevel=1)
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
        return "ok"

    monkeypatch.setattr(magvit.cli, "run", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["tasks"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["magvit: warning: first line second line",
                                "magvit: warning: DeprecationWarning: old api"]
    assert warnings.showwarning is before


# -- Python API input checks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe() -> MagvitPipeline:
    return MagvitPipeline.from_preset("tiny", tasks=["fp", "cg"], num_classes=4, resolution=SIZE, frames=FRAMES)


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_api_non_finite_video(pipe, value):
    video = torch.rand(1, 3, FRAMES, SIZE, SIZE)
    video[0, 1, 3, 4, 5] = value
    expected = "expected a float video [B, 3, T, H, W] with values in [0, 1], got"
    total = 3 * FRAMES * SIZE * SIZE
    with pytest.raises(InputError, match=re.escape(f"task 'fp': {expected} 1 NaN or infinite values of {total}")):
        pipe.generate("fp", video, steps=1)
    with pytest.raises(InputError, match=re.escape(f"{expected} {total} NaN or infinite values of {total}")):
        pipe.task("fp").condition(torch.full((1, 3, FRAMES, SIZE, SIZE), value))
    name = type(pipe.tokenizer).__name__
    with pytest.raises(InputError, match=re.escape(f"{name}: {expected} 1 NaN or infinite values of {total}")):
        pipe.tokenizer.encode(video)


@pytest.mark.parametrize(
    "label", ["3", 1.5, True, torch.tensor(2.0), np.float32(1.0), torch.tensor([True])],
    ids=["str", "float", "bool", "float-tensor", "numpy-float", "bool-tensor"],
)
def test_api_label_that_is_not_an_int(pipe, label):
    with pytest.raises(InputError, match=r"label must be an int class index in \[0, 4\)"):
        pipe.generate("cg", label=label, steps=1)


@pytest.mark.parametrize("label", [np.int64(2), torch.tensor([2]), torch.tensor(2)], ids=["numpy-int", "tensor-1", "tensor-0d"])
def test_api_integer_labels_are_accepted(pipe, label):
    out = pipe.generate("cg", label=label, steps=1)
    assert out.shape == (1, 3, FRAMES, SIZE, SIZE) and torch.isfinite(out).all()


def test_api_class_task_of_a_model_without_classes():
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp", "cg"], num_classes=0, resolution=SIZE, frames=FRAMES)
    with pytest.raises(InputError, match="trained without classes"):
        pipe.generate("cg", label=0, steps=1)
