"""Give memory freed by a finished stage back to the operating system.

glibc keeps freed blocks in its heaps (the main one and one arena per thread that allocated),
and returns pages to the OS only from the top of a heap. After a chunked stage the many freed
buffers between the arrays that stay alive are still resident, so a fit's RSS ratcheted up from
stage to stage (bench/RESULTS.md, "Scale"). ``malloc_trim(0)`` returns every whole free page of
every arena; it takes milliseconds and changes nothing the program can observe but its RSS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None off glibc (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_free_memory() -> bool:
    """Return the process's free heap pages to the OS; True if anything was released."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
