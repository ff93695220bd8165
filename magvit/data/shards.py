"""Writing shards so that none is ever seen half-written.

:class:`ShardSink` wraps ``webdataset.ShardWriter``: its ``opener`` hook makes each shard start life as
``shard-NNNNNN.tar.partial`` and its ``post`` hook (called once the tar is closed) flushes and renames it
to ``shard-NNNNNN.tar``. If writing fails (an exception inside the ``with`` block) the current partial
shard is deleted instead; the shards completed before it stay, and the caller does not write
``meta.json``, so the folder is recognisably incomplete. Samples are encoded by webdataset's own
extension-based encoder (``.npy`` arrays, ``.cls`` integers, ``.json`` dicts); tar mtimes are fixed so
the same samples give byte-identical shards. One writer per dataset folder (:func:`dataset_lock`): a second
``magvit data shards`` or ``magvit data synthetic`` into a folder being written is refused at once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import webdataset as wds

from magvit.data.paths import local_path
from magvit.data.shard_format import META_NAME, SHARD_GLOB, SHARD_PATTERN, ShardInfo
from magvit.errors import InputError, MagvitError
from magvit.locking import FolderLock

__all__ = ["ShardSink", "dataset_folder", "dataset_lock", "prepare_output_dir"]

_PARTIAL = ".partial"


def prepare_output_dir(out: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Create ``out``; refuse (or, with ``overwrite``, clear) a folder that already holds a dataset.

    Only files this library writes are removed: ``meta.json`` first (so an interrupted clean-up leaves an
    obviously incomplete folder), then ``shard-*.tar`` and leftover ``.partial`` shards.
    """
    out = _local_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob(SHARD_GLOB)) + sorted(out.glob(SHARD_GLOB + _PARTIAL))
    meta = out / META_NAME
    if (existing or meta.exists()) and not overwrite:
        raise MagvitError(
            f"{out} already holds a dataset ({len(existing)} shard files{', meta.json' if meta.exists() else ''}); "
            "choose an empty folder or pass overwrite=True (--overwrite) to replace it"
        )
    meta.unlink(missing_ok=True)
    for path in existing:
        path.unlink()
    return out


def _local_folder(out: str | os.PathLike[str]) -> Path:
    out = local_path(out, "output folder", use="writes data to")
    if out.exists() and not out.is_dir():
        raise MagvitError(f"output {out} exists and is not a folder; choose a folder path")
    return out


def dataset_lock(out: str | os.PathLike[str]) -> FolderLock:
    """The lock of one writer on dataset folder ``out`` (:class:`magvit.locking.FolderLock`, taken by ``with``):
    a second writer into the same folder is refused at once, instead of interleaving its shards with the first
    one's or clearing them. A writer of several folders takes every lock before it clears any folder."""
    return FolderLock(_local_folder(out), "dataset folder")


@contextlib.contextmanager
def dataset_folder(out: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """``out`` locked for this writer until the block ends (:func:`dataset_lock`), then prepared for a new
    dataset (:func:`prepare_output_dir`)."""
    with dataset_lock(out):
        yield prepare_output_dir(out, overwrite=overwrite)


class ShardSink:
    """Write samples (dicts with ``__key__``) into numbered shards of at most ``shard_size`` samples.

    Use as a context manager; :attr:`shards` lists the completed shards and their counts.
    """

    def __init__(self, out: str | os.PathLike[str], *, shard_size: int) -> None:
        if shard_size < 1:
            raise InputError(f"shard_size must be >= 1 sample per shard, got {shard_size}")
        self.out = Path(out)
        self.shard_size = shard_size
        self.shards: list[ShardInfo] = []
        self._writer: wds.ShardWriter | None = None
        self._open_files: dict[str, BinaryIO] = {}
        self._aborting = False

    def _open(self, fname: str) -> BinaryIO:
        handle = open(fname + _PARTIAL, "wb")  # noqa: SIM115 - closed in _publish
        self._open_files[fname] = handle
        return handle

    def _publish(self, fname: str) -> None:
        handle = self._open_files.pop(fname)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        if self._aborting:
            os.remove(fname + _PARTIAL)
            return
        os.replace(fname + _PARTIAL, fname)
        assert self._writer is not None
        self.shards.append(ShardInfo(Path(fname).name, self._writer.count))

    def write(self, sample: dict[str, Any]) -> None:
        """Append one sample; a new shard is started when the current one is full."""
        if self._writer is None:
            # Created lazily: ShardWriter opens its first shard at construction, and a sink that
            # receives nothing must not leave an empty shard behind.
            self.out.mkdir(parents=True, exist_ok=True)
            self._writer = wds.ShardWriter(
                str(self.out / SHARD_PATTERN),
                maxcount=self.shard_size,
                maxsize=float("inf"),
                post=self._publish,
                opener=self._open,
                verbose=0,
                mtime=0,  # an int: a float mtime costs a PAX header per member
                encoder=True,
            )
        self._writer.write(sample)

    def close(self) -> list[ShardInfo]:
        """Finish the last shard and return all completed shards."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return list(self.shards)

    def abort(self) -> None:
        """Delete the shard being written (completed shards stay)."""
        self._aborting = True
        try:
            self.close()
        finally:
            for fname, handle in self._open_files.items():
                handle.close()
                Path(fname + _PARTIAL).unlink(missing_ok=True)
            self._open_files.clear()

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
