"""Keeping a CPU rank's C heap at what it uses: freed memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
# Allocations at least this big get their own mapping, returned to the system when freed. glibc's
# default starts at 128 KiB but rises to the largest block freed (up to 32 MiB), after which a
# step's activations and temporaries come from the heap, where freed holes pile up: the CPU demo's
# training call peaked about 0.4 GiB higher that way (measured on its recipe, 2026-12-07). A lower
# threshold saved little more (0.05 GiB at 1 MiB) and made that call 10% slower: mapping and
# faulting in fresh pages costs time.
MMAP_THRESHOLD_BYTES = 8 * 2**20


@functools.cache
def _libc():
    """glibc, or None (another C library, or none found)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both exist in glibc only
        return libc
    except (OSError, AttributeError):
        return None


def bound_heap_growth(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold_bytes` for this process (a CPU rank calls it once).
    The environment's MALLOC_MMAP_THRESHOLD_, when set, wins. False where unavailable or overridden."""
    libc = _libc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))


def release_free_heap() -> bool:
    """Return the C heap's free pages to the system (glibc `malloc_trim(0)`). A CPU rank's training
    and generation each free hundreds of MB of tensors the allocator would otherwise keep, so the
    process's resident memory stays at what the next phase needs. False where unavailable."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
