"""magvit.train.malloc: the trainer's glibc allocator setting (its speed effect is measured in benchmarks/)."""

import resource
import subprocess
import sys

import pytest

from magvit.train import malloc

_PROBE = """
import ctypes, ctypes.util, resource
from magvit.train.malloc import keep_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 64 << 20  # above glibc's default mmap threshold, below ours

def faults_per_block(n=4):
    def one():
        p = libc.malloc(size); libc.memset(p, 1, size); libc.free(p)
    one()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        one()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n

default = faults_per_block()
assert keep_freed_memory()
print(default, faults_per_block())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_large_blocks_are_reused_after_the_setting():
    # A fresh interpreter: earlier tests in this process may already have built a Trainer (which applies it).
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120)
    default, kept = map(float, out.stdout.split())
    pages = (64 << 20) / resource.getpagesize()
    assert default > 0.9 * pages  # glibc's default: a freed 64 MB block is unmapped and faults in again
    assert kept < 0.01 * pages  # with the setting it is reused from the heap


def test_switch_off_by_environment(monkeypatch):
    monkeypatch.setenv(malloc.ENV_SWITCH, "0")
    assert malloc.keep_freed_memory() is False
