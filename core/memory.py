"""Give memory freed by a finished stage back to the operating system.

glibc keeps freed blocks in its heaps (the main one and one arena per thread that allocated),
and returns pages to the OS only from the top of a heap. After a chunked stage the many freed
buffers between the arrays that stay alive are still resident, so a fit's RSS ratcheted up from
stage to stage (bench/RESULTS.md, "Scale"). ``malloc_trim(0)`` returns every whole free page of
every arena; it takes milliseconds and changes nothing the program can observe but its RSS.

The opposite problem slows chunked work in threads (the posterior's and the uncertainty's
cell chunks, :func:`core.posterior._in_order`): until the process has freed a large block
(which raises glibc's adaptive thresholds), a worker thread's arena hands the top of its heap
back (``madvise``) as soon as a chunk's buffers are freed, so the next chunk page-faults its
buffers in again, zero-filled by the kernel (about 500,000 faults per 300 cells × 100 draws,
12 % of the draws). :func:`keep_thread_heaps` stops that whatever ran before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

#: glibc's ``mallopt`` parameters (malloc.h).
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3
#: Blocks above this are mapped on their own and unmapped when freed: glibc's own ceiling for
#: its adaptive threshold (4 × 1024 × 1024 × sizeof(long)), which a running process reaches.
_MMAP_THRESHOLD = 32 << 20
#: Free space kept at the top of a heap: a thread arena's heap is at most 64 MiB, so a pad of
#: 64 MiB keeps its pages resident between chunks.
_TOP_PAD = 64 << 20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, or None where it cannot be loaded."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None off glibc (macOS, musl)."""
    return getattr(_libc(), "malloc_trim", None)


@functools.cache
def keep_thread_heaps() -> bool:
    """Keep the pages that threads free at the top of their heaps, for their next chunk.

    Sets glibc's mmap threshold to 32 MiB (fixed at the value its adaptive one converges to)
    and its top pad to 64 MiB, once per process. Freed memory stays reusable by the process
    (at most one heap's worth per arena) and :func:`release_free_memory` still returns it all.
    True if set; False off glibc, where nothing changes.
    """
    if _malloc_trim() is None:  # not glibc: its mallopt parameters mean nothing here
        return False
    libc = _libc()
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TOP_PAD, _TOP_PAD)
    )


def release_free_memory() -> bool:
    """Return the process's free heap pages to the OS; True if anything was released."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
