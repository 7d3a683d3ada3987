"""core.memory: freed heap held between live blocks goes back to the OS (glibc only)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from core.memory import release_free_memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_freed_blocks_pinned_by_live_ones_are_returned():
    # 2,000 blocks of 100 kB (below glibc's mmap threshold: heap memory), each followed by a
    # 2 kB array that stays alive (above numpy's small-buffer cache, so it sits on the heap
    # right after its block): freeing the blocks leaves ~200 MB of holes that glibc keeps
    # resident, the pattern that made a fit's RSS ratchet up stage by stage
    blocks, pins = [], []
    for _ in range(2000):
        blocks.append(np.ones(100_000 // 8))
        pins.append(np.ones(256))
    del blocks
    before = _rss_bytes()
    released = release_free_memory()
    if not released:
        pytest.skip("no glibc malloc_trim here (another C library)")
    assert before - _rss_bytes() > 150 * 2**20
    assert all(pin.sum() == 256 for pin in pins)  # the live arrays are untouched
