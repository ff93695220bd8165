"""Fault suite: a malicious pickle through every path that loads a file, and code-like strings in configs.

The payload is what an attacker would ship: an object whose ``__reduce__`` calls ``os.system`` (or
``builtins.exec``) to create a marker file when the file is unpickled. Every loading path must refuse it
as data: exit code 2 (or a :class:`MagvitError`) with one line that names the file, never torch's advice
to retry with ``weights_only=False``, the marker file absent and the file itself untouched.

Also covered elsewhere: the I3D converter's ``NumpyOnlyUnpickler`` (the one place that unpickles a
foreign pickle, numeric numpy arrays only) in ``tests/metrics/test_i3d_weights.py``
(``test_unpickler_refuses_os_system``, ``test_unpickler_refuses_builtins_and_object_arrays``).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from magvit import checkpoint as ckpt
from magvit.cli import main
from magvit.errors import MagvitError
from magvit.metrics.i3d import I3D
from magvit.pipeline import CONFIG_NAME, WEIGHTS_NAME, MagvitPipeline
from magvit.safe_load import RefusedFileError
from magvit.tokenizers.losses import PerceptualLoss
from tests.faults.conftest import CONFIGS, fit_args, transformer_args
from tests.helpers.cli import one_line_error

REFUSED = "holds Python objects other than tensors and plain data"


class _SystemPayload:
    """Unpickling it runs ``touch MARKER`` through ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _ExecPayload:
    """Unpickling it runs Python source through ``builtins.exec`` that creates MARKER."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _checkpoint_body(payload: object) -> dict:
    """A checkpoint that looks like magvit's (format, stage, step) with the payload among its entries."""
    return {"format": ckpt.FORMAT, "stage": "transformer", "step": 1, "models": {"transformer": payload}}


def torch_system(path: Path, marker: Path) -> None:
    torch.save(_checkpoint_body(_SystemPayload(marker)), path)


def torch_exec(path: Path, marker: Path) -> None:
    torch.save(_checkpoint_body(_ExecPayload(marker)), path)


def plain_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(_checkpoint_body(_SystemPayload(marker)), f)


WRITERS: dict[str, Callable[[Path, Path], None]] = {
    "torch-os.system": torch_system, "torch-exec": torch_exec, "plain-pickle": plain_pickle,
}
#: What the refusal line says for each writer (a plain pickle is refused before it names a global).
MESSAGES = {"torch-os.system": REFUSED, "torch-exec": REFUSED,
            "plain-pickle": "is a pickle other than torch.save's tensors and plain data"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def evil(tmp_path) -> Callable[..., tuple[Path, Path, str]]:
    """``evil(name, writer="torch-os.system")`` -> (malicious file, marker path, sha256 of the file)."""
    marker = tmp_path / "MARKER"

    def make(name: str, writer: str = "torch-os.system") -> tuple[Path, Path, str]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        WRITERS[writer](path, marker)
        return path, marker, _sha256(path)

    return make


def _untouched(path: Path, digest: str, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert _sha256(path) == digest


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", list(WRITERS))
def test_generate_checkpoint(evil, tmp_path, capsys, writer):
    path, marker, digest = evil("last.pt", writer)
    out = tmp_path / "out.gif"
    assert main(["generate", "--checkpoint", str(path), "--task", "cg", "--label", "1", "--out", str(out)]) == 2
    one_line_error(capsys, f"checkpoint {str(path)!r} could not be read: it ", MESSAGES[writer],
                   "refused: weights and checkpoints are loaded as data, never as code")
    _untouched(path, digest, marker)
    assert not out.exists()


def test_evaluate_checkpoint(evil, synthetic, tmp_path, capsys):
    path, marker, digest = evil("last.pt")
    assert main(["evaluate", "--checkpoint", str(path), "--data", str(synthetic / "val"), "--no_fvd",
                 "--out", str(tmp_path / "eval")]) == 2
    one_line_error(capsys, f"checkpoint {str(path)!r}", REFUSED, "it asks for posix.system")
    _untouched(path, digest, marker)
    assert not (tmp_path / "eval").exists()


def test_fit_resume_checkpoint(evil, synthetic, tmp_path, capsys):
    path, marker, digest = evil("run/last.pt")
    assert main(fit_args("tiny/tokenizer.yaml", synthetic / "train", path.parent, "--resume")) == 2
    one_line_error(capsys, f"checkpoint {str(path)!r}", REFUSED)
    _untouched(path, digest, marker)


def test_transformer_stage_tokenizer_checkpoint(evil, synthetic, tmp_path, capsys):
    path, marker, digest = evil("tokenizer.pt", "torch-exec")
    out = tmp_path / "run"
    assert main(transformer_args(path, synthetic / "train", out)) == 2
    one_line_error(capsys, f"checkpoint {str(path)!r}", REFUSED, "it asks for exec")
    _untouched(path, digest, marker)
    assert not (out / "last.pt").exists()


def test_data_tokenize_tokenizer_checkpoint(evil, synthetic, tmp_path, capsys):
    path, marker, digest = evil("tokenizer.pt")
    out = tmp_path / "tokens"
    assert main(["data", "tokenize", "--tokenizer_checkpoint", str(path), "--src", str(synthetic / "val"),
                 "--out", str(out), "--tasks", "fp"]) == 2
    one_line_error(capsys, f"checkpoint {str(path)!r}", REFUSED)
    _untouched(path, digest, marker)
    assert not any(out.glob("*.tar"))


@pytest.mark.parametrize("name", ["resnet.pt", "resnet.safetensors"])
def test_fit_perceptual_weights(evil, synthetic, tmp_path, capsys, name):
    """A pickle as the perceptual-loss weights: refused as a .pt, not a safetensors file as a .safetensors."""
    path, marker, digest = evil(name)
    out = tmp_path / "run"
    assert main(fit_args("tiny/tokenizer.yaml", synthetic / "train", out,
                         "--model.init_args.perceptual_weights", str(path))) == 2
    expected = REFUSED if name.endswith(".pt") else "is not a valid safetensors file"
    one_line_error(capsys, f"perceptual-loss weights {str(path)!r}", expected)
    _untouched(path, digest, marker)
    assert not (out / "last.pt").exists()


def test_fit_config_class_path_to_a_shell_function(synthetic, tmp_path, capsys):
    """A shared YAML naming ``os.system`` as the model: refused by type, never called."""
    marker = tmp_path / "MARKER"
    config = tmp_path / "evil.yaml"
    config.write_text(f"model:\n  class_path: os.system\n  init_args:\n    command: touch {marker}\n")
    out = tmp_path / "run"
    assert main(["fit", "--config", str(CONFIGS / "tiny/tokenizer.yaml"), "--config", str(config),
                 "--data.train", str(synthetic / "train"), "--trainer.out_dir", str(out)]) == 2
    one_line_error(capsys, "Import path os.system does not correspond to a subclass of Stage")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["tokenizer"].update(name="os.system"), "unknown tokenizer 'os.system'; registered tokenizers:"),
        (lambda c: c["tasks"][0].update(name="builtins.exec"), "unknown task 'builtins.exec'; registered tasks:"),
        (lambda c: c["tokenizer"]["config"].update(padding="__import__('os').system('touch MARKER')"),
         "padding must be one of"),
    ],
    ids=["tokenizer-name", "task-name", "code-as-a-value"],
)
def test_checkpoint_config_with_code_like_strings(transformer_run, tmp_path, capsys, edit, message):
    """Names in a checkpoint's config are looked up in the registry, never imported or evaluated
    (already the case; kept as a regression test)."""
    state = ckpt.load(transformer_run / "last.pt")
    edit(state["model_config"])
    state.pop("format")
    forged = ckpt.save_atomic(state, tmp_path / "forged.pt")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # where the value's 'touch MARKER' would land
    try:
        assert main(["generate", "--checkpoint", str(forged), "--task", "cg", "--label", "1",
                     "--out", str(tmp_path / "out.gif")]) == 2
    finally:
        os.chdir(cwd)
    one_line_error(capsys, message)
    assert not (tmp_path / "MARKER").exists()


# -- the Python API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", list(WRITERS))
def test_pipeline_from_checkpoint(evil, writer):
    path, marker, digest = evil("pipeline.pt", writer)
    with pytest.raises(RefusedFileError) as exc:
        MagvitPipeline.from_checkpoint(path)
    message = str(exc.value)
    assert MESSAGES[writer] in message and "\n" not in message and "weights_only" not in message
    _untouched(path, digest, marker)


@pytest.fixture
def pretrained(tmp_path) -> Path:
    """A tiny pipeline saved by ``save_pretrained`` into ``tmp_path/pretrained``."""
    pipe = MagvitPipeline.from_preset("tiny", tasks=["fp", "cg"], num_classes=2, resolution=32)
    return pipe.save_pretrained(tmp_path / "pretrained")


@pytest.mark.parametrize("writer", list(WRITERS))
def test_pipeline_from_pretrained_weights_that_are_a_pickle(evil, pretrained, writer):
    """``model.safetensors`` is read by safetensors only: a pickle under that name is refused unread."""
    path, marker, digest = evil(f"pretrained/{WEIGHTS_NAME}", writer)
    with pytest.raises(MagvitError, match=r"pipeline weights '.*' is not a valid safetensors file") as exc:
        MagvitPipeline.from_pretrained(pretrained)
    assert "\n" not in str(exc.value) and "weights_only" not in str(exc.value)
    _untouched(path, digest, marker)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["tokenizer"].update(name="os.system"), "unknown tokenizer 'os.system'; registered tokenizers:"),
        (lambda c: c["tasks"][0].update(name="builtins.exec"), "unknown task 'builtins.exec'; registered tasks:"),
        (lambda c: c["transformer"].update(class_path="os.system"), "unknown transformer option 'class_path'"),
    ],
    ids=["tokenizer-name", "task-name", "class-path"],
)
def test_pipeline_from_pretrained_config_with_code_like_strings(pretrained, tmp_path, edit, message):
    """``config.json`` is JSON data: its names are looked up in the registry, never imported."""
    config = json.loads((pretrained / CONFIG_NAME).read_text())
    edit(config)
    (pretrained / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(MagvitError, match=message) as exc:
        MagvitPipeline.from_pretrained(pretrained)
    assert "\n" not in str(exc.value)


def test_i3d_weights_that_are_a_pickle(evil):
    """``I3D.from_pretrained(path)`` reads safetensors only: a pickle named ``.safetensors`` is refused."""
    path, marker, digest = evil("i3d_k400.safetensors")
    with pytest.raises(MagvitError, match=r"I3D weights '.*' is not a valid safetensors file \(SafetensorError: "):
        I3D.from_pretrained(path)
    _untouched(path, digest, marker)


def test_perceptual_loss_weights_api(evil):
    path, marker, digest = evil("resnet.pt", "torch-exec")
    with pytest.raises(RefusedFileError, match=r"perceptual-loss weights .*\(it asks for exec;"):
        PerceptualLoss(path, arch="resnet10t")
    _untouched(path, digest, marker)
