"""One writer per output folder: an exclusive lock held for the whole run.

Two ``magvit fit`` runs into one ``out_dir`` (or two ``magvit data tokenize`` into one ``--out``) would
interleave their checkpoints, logs and shards. The writer therefore takes an OS-level lock on a file in
the folder (``filelock``: ``flock`` on POSIX) before it writes anything, and a second writer is refused at
once. The kernel drops the lock when its process dies, so a run killed with ``kill -9`` never leaves a
lock that blocks the next one; the pid recorded beside the lock only serves the error message and tells a
live holder from a dead one's leftover record.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import TracebackType

import filelock

from magvit.errors import MagvitError

LOCK_NAME = ".magvit.lock"
OWNER_NAME = ".magvit.lock.owner"


class FolderLockedError(MagvitError):
    """Another live process writes into the folder."""


class FolderLock:
    """Exclusive lock on ``folder`` for one writer (a context manager; re-entrant in one object).

    Args:
        folder: the output folder; created if missing.
        what: how the message names the folder (``"run folder"``, ``"token folder"``).
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "output folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._lock = filelock.FileLock(str(self.folder / LOCK_NAME), timeout=0)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderLockedError` naming the holder (never waits)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise MagvitError(f"{self.what} {self.folder} is a file, not a folder: choose another path")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise FolderLockedError(
                f"{self.what} {self.folder} is in use by another magvit process ({self._holder()}); "
                "wait for it to finish or choose another folder"
            ) from None
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        tmp = self.folder / f"{OWNER_NAME}.{os.getpid()}"
        try:
            tmp.write_text(json.dumps(owner), encoding="utf-8")
            os.replace(tmp, self.folder / OWNER_NAME)
        except OSError:  # e.g. a read-only folder whose lock file already exists: do not keep the lock
            self._lock.release(force=True)
            raise
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            (self.folder / OWNER_NAME).unlink(missing_ok=True)
            self._lock.release(force=True)

    def _holder(self) -> str:
        try:
            owner = json.loads((self.folder / OWNER_NAME).read_text(encoding="utf-8"))
            return f"pid {int(owner['pid'])} on {owner['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "pid unknown"

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
