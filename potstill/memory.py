"""Hand memory that one stage freed back to the system before the next stage allocates.

Freed Python and Arrow memory normally stays with the process: glibc keeps freed blocks in its
malloc arenas and Arrow's allocator (mimalloc or jemalloc) keeps its pages for reuse, so each
stage of `potstill.job.finish` would start from the previous stage's high-water mark instead of
from what is live. `release()` collects garbage, then asks both allocators to return what is
unused: `pyarrow.default_memory_pool().release_unused()` and glibc's `malloc_trim(0)`, where the
C library has it (glibc; elsewhere it is skipped).

`fewer_collections()` is how a job runs: Python's collector, at its defaults, scans every
object it tracks each time ~70,000 more have been allocated and a quarter of the heap is new.
A job's heap holds millions (the models' libraries, the runner's buffers), and its rows
allocate fast, so those full scans cost ~5 s of a 100,000-row job's ~80 on one core (measured
in docs/measurements/graph-overhead.md). The job's own garbage is freed by reference counts;
cycles are still found, young ones at the first and second collections, the rest where the job
calls `release()` between its stages. `frozen_heap()` makes those calls cheap where a stage
makes them often (the gate, once per chunk): only what the stage allocated is scanned.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from typing import Iterator

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


# the collector's thresholds while a job runs: a young collection per 50,000 net allocations
# (the default: 700), a middle one per 20 of those, a full one per 100 middle ones
JOB_THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def fewer_collections(thresholds: tuple[int, int, int] = JOB_THRESHOLDS) -> Iterator[None]:
    """Garbage collections at most as often as `thresholds` say while the block runs (never
    more often than the process had them), then the process's own thresholds again. A
    decorator too: a function that runs a job."""
    before = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(before, thresholds)))
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect garbage once, then leave every object alive now out of the collector's scans
    while the block runs (`gc.freeze`): a full collection inside it, `release()`'s included,
    scans only what the block allocated (the gate's 21 calls at a million rows: 0.07 s against
    4.9). Objects frozen before the block stay frozen after it."""
    outer = gc.get_freeze_count()
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if not outer:
            gc.unfreeze()
