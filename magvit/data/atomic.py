"""Atomic file creation: write to a hidden temporary sibling, then ``os.replace`` it into place.

A reader therefore sees either the complete old file, the complete new file, or nothing -- never a
half-written one, even if the writer is killed. The temporary name keeps the file's extension because
some writers (PyAV, PIL) pick the container format from it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def partial_path(path: Path) -> Path:
    """The temporary sibling used while ``path`` is being written (hidden, same extension)."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}{path.suffix}")


def fsync_file(path: Path) -> None:
    """Flush ``path`` to disk, so that the rename that follows cannot expose an empty file after a crash."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on error it is deleted.

    The parent folder is created if needed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    finally:
        # On success tmp no longer exists; on any error this removes the half-written file.
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
