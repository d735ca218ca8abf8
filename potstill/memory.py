"""Hand memory that one stage freed back to the system before the next stage allocates.

Freed Python and Arrow memory normally stays with the process: glibc keeps freed blocks in its
malloc arenas and Arrow's allocator (mimalloc or jemalloc) keeps its pages for reuse, so each
stage of `potstill.job.finish` would start from the previous stage's high-water mark instead of
from what is live. `release()` collects garbage, then asks both allocators to return what is
unused: `pyarrow.default_memory_pool().release_unused()` and glibc's `malloc_trim(0)`, where the
C library has it (glibc; elsewhere it is skipped).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

import pyarrow as pa


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release() -> None:
    """Collect garbage and return the allocators' free pages to the system."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
