"""Checkpoints: written atomically, read as data.

A checkpoint is a dict of tensors, numbers, strings and nested dicts/lists, so that
``torch.load(weights_only=True)`` reads it: never code (DESIGN.md "Conventions"). It is written to a temp
file in the same folder, fsync'ed, then renamed over the target, so a run killed at any moment leaves
either the previous complete checkpoint or the new complete one, never a half-written file. (A writer
killed mid-write leaves its temp file; the next save of the same path removes it -- one writer per path.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from magvit.errors import MagvitError

FORMAT = "magvit-checkpoint-v1"


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **obj}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a magvit checkpoint with ``weights_only=True``; a missing or foreign file is a MagvitError."""
    path = Path(path)
    if not path.is_file():
        raise MagvitError(f"checkpoint {str(path)!r} does not exist; pass the path of a .pt file written by `magvit fit`")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user-facing error
        raise MagvitError(f"checkpoint {str(path)!r} could not be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise MagvitError(f"{str(path)!r} is not a magvit checkpoint (expected format {FORMAT!r})")
    return obj


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with a one-line error when the checkpoint is from another model size."""
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
    module.load_state_dict(state)
