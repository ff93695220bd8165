"""The glibc heap on the CPU: keep freed blocks during training, give them back before a decode.

These settings hold for the whole process, so no model, trainer or pipeline applies them: the ``magvit``
commands do (``magvit fit`` and ``magvit demo --train`` keep freed memory on the CPU; ``magvit generate`` and
``evaluate`` release it before each tokenizer decode), and so do the benchmarks that measure those commands'
workloads. A program using the library calls the functions here itself if it wants the same.

A training step on the CPU allocates and frees the same large tensors every step: at the B size each
attention layer makes several ``[B, heads, 1026, 1026]`` float32 temporaries (100 MB each at batch 2).
By default glibc serves blocks above its mmap threshold (at most 32 MB) with ``mmap`` and unmaps them on
free, so the kernel maps and zero-fills those pages again every step.

:func:`keep_freed_memory` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB with
``mallopt``, the in-process form of ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``. The price is
resident memory kept between steps, which is why generation and evaluation do not apply it.
``MAGVIT_KEEP_FREED_MEMORY=0`` (:data:`ENV_SWITCH`) turns it off.

:func:`release_freed_memory` goes the other way (``malloc_trim``). Generation calls it between the
transformer's decoding loop and the tokenizer's decoder, whose full-resolution activations are the peak
of a generation (:func:`release_before_decoding`): the loop's medium-sized tensors (below the mmap
threshold) leave freed but resident pages in the heap; returned to the kernel they no longer add to that
peak. Speed and memory effects of both: benchmarks/README.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

#: mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1
#: ``0`` turns :func:`keep_freed_memory` off
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


def release_before_decoding(tokenizer: Any) -> RemovableHandle | None:
    """Call :func:`release_freed_memory` before every forward of ``tokenizer.decoder`` (a forward pre-hook),
    i.e. after a generation's decoding loop and before the decoder's full-resolution activations. Returns the
    hook's handle (``.remove()`` undoes it), or None for a tokenizer without a ``decoder`` network."""
    decoder = getattr(tokenizer, "decoder", None)
    if not hasattr(decoder, "register_forward_pre_hook"):
        return None

    def release(module: Any, args: Any) -> None:
        release_freed_memory()

    return decoder.register_forward_pre_hook(release)
