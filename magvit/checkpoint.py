"""Checkpoint files: written atomically, read as data, named by their hash.

The trainer writes them, the pipeline saves and loads them, and the token cache records the hash of the
tokenizer checkpoint it was made with (so that training can check it reads tokens of its own tokenizer).

A checkpoint is a dict of tensors, numbers, strings and nested dicts/lists, so that
``torch.load(weights_only=True)`` reads it: never code. It is written to a temp
file in the same folder, fsync'ed, then renamed over the target, so a run killed at any moment leaves
either the previous complete checkpoint or the new complete one, never a half-written file. (A writer
killed mid-write leaves its temp file, named with its pid; the next save of the same path removes it once
that pid is gone.)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from magvit.errors import MagvitError
from magvit.safe_load import load_torch_data

__all__ = ["FORMAT", "file_sha256", "load", "load_module_state", "nonfinite_keys", "save_atomic", "stage_of"]

FORMAT = "magvit-checkpoint-v1"


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temp file + fsync + rename.

    The file gets the mode of any other new file (``0o666`` minus the umask). A failed write (no space
    left, quota, permissions) raises its ``OSError`` naming ``path``, removes the temp file and leaves
    ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _new_file_mode())  # mkstemp creates 0600
            _torch_save({"format": FORMAT, **obj}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None  # name the file (a write error does not)
        raise
    return path


class _RecordingWriter:
    """The file ``torch.save`` writes through, keeping the ``OSError`` of a failed write: torch reports
    that as a ``RuntimeError`` ("unexpected pos ..."), which hides the cause (e.g. no space left)."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(obj: dict[str, Any], file: Any) -> None:
    writer = _RecordingWriter(file)
    try:
        torch.save(obj, writer)
    except RuntimeError:
        if writer.error is None:
            raise
        raise writer.error from None


def _new_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` gives a new file."""
    try:  # Linux reports the umask without changing it (setting it is process-wide, racy with threads)
        with open("/proc/self/status", encoding="ascii") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _remove_stale_temp_files(path: Path) -> None:
    """Remove the temp files of writers killed mid-write; a live writer's temp file is left alone."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{prefix}*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if not (pid.isdigit() and _process_alive(int(pid))):  # no pid: an older writer's name
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def nonfinite_keys(state: dict[str, Any]) -> list[str]:
    """Keys of the floating-point tensors in ``state`` holding a NaN or an infinity."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a magvit checkpoint with ``weights_only=True``; a missing or foreign file is a MagvitError."""
    path = Path(path)
    if not path.is_file():
        raise MagvitError(f"checkpoint {str(path)!r} does not exist; pass the path of a .pt file written by `magvit fit`")
    obj = load_torch_data(path, "checkpoint", map_location)  # data only: a refused pickle is one error line
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise MagvitError(f"{str(path)!r} is not a magvit checkpoint (expected format {FORMAT!r})")
    return obj


def stage_of(path: str | os.PathLike) -> str | None:
    """The stage that wrote the checkpoint at ``path`` (``"tokenizer"``, ``"transformer"``), read memory-mapped
    so that no tensor is loaded; None for anything that is not a readable magvit checkpoint (:func:`load` and
    the pipeline's loaders then say what is wrong with it)."""
    if not Path(path).is_file():
        return None
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file: the loader that follows names the problem
        return None
    stage = obj.get("stage") if isinstance(obj, dict) and obj.get("format") == FORMAT else None
    return stage if isinstance(stage, str) else None


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with a one-line error when the checkpoint is from another model size or its
    weights are not finite (a diverged run); ``module`` is untouched on error."""
    own = module.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if mismatched or missing or unexpected:
        detail = []
        if mismatched:
            k = mismatched[0]
            detail.append(f"{len(mismatched)} shape mismatches (e.g. {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise MagvitError(
            f"the checkpoint's {what} does not match the configured model: {'; '.join(detail)}. "
            "Use the same preset/size as the run that wrote it, or start without --resume"
        )
    bad = nonfinite_keys(state)
    if bad:
        raise MagvitError(
            f"the checkpoint's {what} has non-finite values (NaN or inf) in {len(bad)} of {len(state)} tensors, "
            f"e.g. {bad[0]}: written by a diverged run? Use a checkpoint saved before the run diverged, or train "
            "again with a lower learning rate"
        )
    module.load_state_dict(state)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large weight files do not sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
