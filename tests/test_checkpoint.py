"""Checkpoints: atomic writes, loads as data (weights_only), one-line errors and the file hash."""

import hashlib
import os

import pytest
import torch
from torch import nn

from magvit.errors import MagvitError
from magvit import checkpoint as ckpt


def _state(value: float) -> dict:
    return {
        "step": 7,
        "stage": "tokenizer",
        "models": {"generator": {"w": torch.full((2, 3), value), "n": torch.tensor(3, dtype=torch.long)}},
        "data": {"epoch": 1, "index": 4},
        "history": [1.5, "x", None],
    }


def test_save_atomic_round_trip(tmp_path):
    path = ckpt.save_atomic(_state(0.25), tmp_path / "sub" / "last.pt")  # parents are created
    assert path == tmp_path / "sub" / "last.pt"
    assert os.listdir(tmp_path / "sub") == ["last.pt"]  # the temp file was renamed, nothing else left
    got = ckpt.load(path)
    assert got["format"] == ckpt.FORMAT == "magvit-checkpoint-v1"
    assert got["step"] == 7 and got["stage"] == "tokenizer"
    assert got["data"] == {"epoch": 1, "index": 4} and got["history"] == [1.5, "x", None]
    torch.testing.assert_close(got["models"]["generator"]["w"], torch.full((2, 3), 0.25), rtol=0, atol=0)
    assert got["models"]["generator"]["n"].dtype == torch.long and int(got["models"]["generator"]["n"]) == 3
    # readable with weights_only=True by plain torch too (a checkpoint is data, never code)
    assert torch.load(path, weights_only=True)["step"] == 7


def test_save_atomic_replaces_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_atomic(_state(1.0), path)
    ckpt.save_atomic({**_state(2.0), "step": 8}, path)
    got = ckpt.load(path)
    assert got["step"] == 8 and float(got["models"]["generator"]["w"][0, 0]) == 2.0
    assert os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch, error):
    path = tmp_path / "last.pt"
    ckpt.save_atomic(_state(1.0), path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the temp file, then the write dies
        raise error

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(type(error)):
        ckpt.save_atomic(_state(2.0), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.pt"]  # no .last.pt.*.tmp left behind
    assert path.read_bytes() == before
    assert float(ckpt.load(path)["models"]["generator"]["w"][0, 0]) == 1.0


def test_load_missing_file(tmp_path):
    missing = tmp_path / "nope" / "last.pt"
    with pytest.raises(MagvitError, match=r"does not exist; pass the path of a \.pt file written by `magvit fit`") as exc:
        ckpt.load(missing)
    assert str(missing) in str(exc.value)


def test_load_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(MagvitError, match="does not exist"):
        ckpt.load(tmp_path)


def test_load_foreign_torch_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(MagvitError) as exc:
        ckpt.load(path)
    assert str(exc.value) == f"{str(path)!r} is not a magvit checkpoint (expected format 'magvit-checkpoint-v1')"
    torch.save([torch.zeros(1)], path)  # not even a dict
    with pytest.raises(MagvitError, match="is not a magvit checkpoint"):
        ckpt.load(path)


def test_load_garbage_file(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"this is not a torch file\x00\x01\x02" * 10)
    with pytest.raises(MagvitError) as exc:
        ckpt.load(path)
    msg = str(exc.value)
    assert msg.startswith(f"checkpoint {str(path)!r} could not be read (")
    assert "\n" not in msg.strip()
    path.write_bytes(b"")  # an empty (truncated) file
    with pytest.raises(MagvitError, match="could not be read"):
        ckpt.load(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling without weights_only would create the marker file
        return (open, (str(self.marker), "w"))


def test_load_refuses_pickled_code(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"format": ckpt.FORMAT, "x": _Payload(marker)}, path)
    with pytest.raises(MagvitError, match="could not be read"):
        ckpt.load(path)
    assert not marker.exists()


# -- load_module_state -------------------------------------------------------------------------------


def test_load_module_state_loads_matching_weights():
    src, dst = nn.Linear(4, 3), nn.Linear(4, 3)
    ckpt.load_module_state(dst, src.state_dict(), "generator weights")
    torch.testing.assert_close(dst.weight, src.weight, rtol=0, atol=0)
    torch.testing.assert_close(dst.bias, src.bias, rtol=0, atol=0)


def test_load_module_state_other_size_is_a_one_line_error():
    model = nn.Linear(4, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MagvitError) as exc:
        ckpt.load_module_state(model, nn.Linear(4, 3).state_dict(), "generator weights")
    assert str(exc.value) == (
        "the checkpoint's generator weights does not match the configured model: 2 shape mismatches "
        "(e.g. weight: checkpoint (3, 4) vs model (5, 4)). Use the same preset/size as the run that wrote it, "
        "or start without --resume"
    )
    for k, v in model.state_dict().items():  # the model was not touched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_load_module_state_missing_and_unexpected_keys():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    state = nn.Sequential(nn.Linear(2, 2)).state_dict() | {"9.weight": torch.zeros(2, 2)}
    with pytest.raises(MagvitError) as exc:
        ckpt.load_module_state(model, state, "transformer weights")
    msg = str(exc.value)
    assert msg.startswith("the checkpoint's transformer weights does not match the configured model: ")
    assert "2 missing keys (e.g. 1.bias)" in msg and "1 unexpected keys (e.g. 9.weight)" in msg
    assert "shape mismatches" not in msg and "without --resume" in msg


def test_save_removes_a_killed_writers_temp_file(tmp_path):
    stale = tmp_path / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    ckpt.save_atomic({"step": 3}, tmp_path / "last.pt")
    assert not stale.exists() and ckpt.load(tmp_path / "last.pt")["step"] == 3


def test_file_sha256_is_the_hash_of_the_contents_whatever_the_chunk_size(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"abc")
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 test vector
    assert ckpt.file_sha256(path) == ckpt.file_sha256(path, chunk=1) == abc
    path.write_bytes(b"magvit" * 1000)
    assert ckpt.file_sha256(path, chunk=7) == hashlib.sha256(b"magvit" * 1000).hexdigest()
