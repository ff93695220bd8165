"""The glibc heap on the CPU: keep freed blocks during training, give them back before a decode.

A training step on the CPU allocates and frees the same large tensors every step: at the B size each
attention layer makes several ``[B, heads, 1026, 1026]`` float32 temporaries (100 MB each at batch 2).
By default glibc serves blocks above its mmap threshold (at most 32 MB) with ``mmap`` and unmaps them on
free, so the kernel maps and zero-fills those pages again every step (~25 000 page faults per 100 MB).

:func:`keep_freed_memory` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB with
``mallopt``, the in-process form of ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``. Measured on
the B transformer step (benchmarks/README.md): 12.0-15.4 s -> 8.8-10.7 s. The price is resident memory
that is kept between steps (that step's peak measured 5.8-6.2 GB with it, 5.8 GB without), which is why only the trainer
applies it, not generation or evaluation. ``MAGVIT_KEEP_FREED_MEMORY=0`` turns it off.

:func:`release_freed_memory` goes the other way (``malloc_trim``): generation calls it between the
transformer's decoding loop and the tokenizer's decoder, whose full-resolution activations are the peak
of a generation. The loop's medium-sized tensors (below the mmap threshold) leave freed but resident
pages in the heap; returned to the kernel they no longer add to that peak (measured in benchmarks/README.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

#: mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1
ENV_SWITCH = "MAGVIT_KEEP_FREED_MEMORY"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Apply the thresholds above; True when glibc accepted them, False where not applicable or turned off."""
    libc = _libc()
    if os.environ.get(ENV_SWITCH, "1") == "0" or libc is None or not hasattr(libc, "mallopt"):  # e.g. musl
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_freed_memory() -> bool:
    """Return the heap's free pages to the kernel (glibc ``malloc_trim(0)``); False where not available."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.malloc_trim(0)
    return True
