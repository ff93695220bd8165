"""One writer per folder: a second lock is refused at once, naming the holder; a dead holder blocks nothing."""

import os
import subprocess
import sys

import pytest

from magvit.errors import MagvitError
from magvit.locking import LOCK_NAME, OWNER_NAME, FolderLock, FolderLockedError

HOLD = "import sys, time; from magvit.locking import FolderLock; lock = FolderLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); time.sleep(120)"


def test_second_lock_in_the_same_process_is_refused(tmp_path):
    with FolderLock(tmp_path / "run", "run folder"):
        with pytest.raises(FolderLockedError, match=rf"run folder {tmp_path / 'run'} is in use .*pid {os.getpid()}"):
            FolderLock(tmp_path / "run", "run folder").acquire()
    with FolderLock(tmp_path / "run") as again:  # released on exit
        assert again.held
    assert not (tmp_path / "run" / OWNER_NAME).exists()


def test_a_live_holder_in_another_process_is_named_and_a_killed_one_blocks_nothing(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid} "):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, its owner record stays behind
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists() and (tmp_path / OWNER_NAME).exists()
    lock = FolderLock(tmp_path).acquire()
    try:
        assert f'"pid": {os.getpid()}' in (tmp_path / OWNER_NAME).read_text()
    finally:
        lock.release()


def test_a_file_where_the_folder_should_be_is_an_error(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(MagvitError, match="is a file, not a folder"):
        FolderLock(tmp_path / "out", "run folder").acquire()
    assert (tmp_path / "out").read_text() == "not a folder"
