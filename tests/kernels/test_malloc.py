"""magvit.kernels.malloc: the glibc heap settings of training and generation (speed and memory effects: benchmarks/)."""

import resource
import subprocess
import sys

import pytest
import torch

from magvit.kernels import malloc
from magvit.registry import get_tokenizer

_PROBE = """
import ctypes, ctypes.util, resource
from magvit.kernels.malloc import keep_freed_memory
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
    # A fresh interpreter: earlier tests in this process may already have run `magvit fit` (which applies it).
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120)
    default, kept = map(float, out.stdout.split())
    pages = (64 << 20) / resource.getpagesize()
    assert default > 0.9 * pages  # glibc's default: a freed 64 MB block is unmapped and faults in again
    assert kept < 0.01 * pages  # with the setting it is reused from the heap


def test_switch_off_by_environment(monkeypatch):
    monkeypatch.setenv(malloc.ENV_SWITCH, "0")
    assert malloc.keep_freed_memory() is False


_RELEASE_PROBE = """
import ctypes, ctypes.util
from magvit.kernels.malloc import keep_freed_memory, release_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

assert keep_freed_memory()  # freed blocks stay in the heap, resident
p = libc.malloc(64 << 20); libc.memset(p, 1, 64 << 20); libc.free(p)
kept = rss_kb()
assert release_freed_memory()
print(kept - rss_kb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_release_freed_memory_returns_free_heap_pages():
    out = subprocess.run([sys.executable, "-c", _RELEASE_PROBE], capture_output=True, text=True, check=True, timeout=120)
    assert int(out.stdout) > 0.9 * (64 << 10)  # kB: the freed 64 MB block left the resident set


def test_release_before_decoding_hooks_the_decoder_network(monkeypatch):
    calls = []
    monkeypatch.setattr(malloc, "release_freed_memory", lambda: calls.append("trim") or True)
    tok = get_tokenizer("vq3d", preset="tiny", resolution=16).eval()
    handle = malloc.release_before_decoding(tok)
    tokens = tok.encode(torch.rand(1, 3, 8, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert calls == []  # encoding does not run the decoder
    tok.decode(tokens)
    assert calls == ["trim"]  # once per decode, before the decoder's forward
    handle.remove()
    tok.decode(tokens)
    assert calls == ["trim"]
    assert malloc.release_before_decoding(object()) is None  # a tokenizer without a decoder network
