"""core.memory: freed heap held between live blocks goes back to the OS (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Run in a fresh interpreter: a test process that ran other tests first has a heap of its own
#: history (holes reused by the new blocks, a raised mmap threshold), which hides what is freed.
PINNED_HOLES = """
import json, os
import numpy as np
from core.memory import release_free_memory

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

# 2,000 blocks of 100 kB (below glibc's mmap threshold: heap memory), each followed by a
# 2 kB array that stays alive (above numpy's small-buffer cache, so it sits on the heap right
# after its block): freeing the blocks leaves ~200 MB of holes that glibc keeps resident, the
# pattern that made a fit's RSS ratchet up stage by stage
blocks, pins = [], []
for _ in range(2000):
    blocks.append(np.ones(100_000 // 8))
    pins.append(np.ones(256))
del blocks
before = rss()
released = release_free_memory()
print(json.dumps({"released": released, "freed": before - rss(),
                  "pins_intact": all(pin.sum() == 256 for pin in pins)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_freed_blocks_pinned_by_live_ones_are_returned():
    run = subprocess.run(
        [sys.executable, "-c", PINNED_HOLES], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if not result["released"]:
        pytest.skip("no glibc malloc_trim here (another C library)")
    assert result["freed"] > 150 * 2**20
    assert result["pins_intact"]  # the live arrays are untouched


#: Two threads each allocate, fill and free three 12 MB buffers again and again, as the
#: posterior's chunk workers do with a chunk's temporaries; the minor page faults count the
#: pages the kernel had to zero-fill anew.
THREAD_CHURN = """
import json, resource, sys, threading
import numpy as np
from core.memory import keep_thread_heaps

kept = keep_thread_heaps() if sys.argv[1] == "keep" else False

def churn():
    for _ in range(40):
        buffers = [np.empty(3_000_000, dtype=np.float32) for _ in range(3)]  # 12 MB each
        for buffer in buffers:
            buffer.fill(1.0)
        del buffers, buffer

warm = threading.Thread(target=churn)
warm.start(); warm.join()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=churn) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"kept": kept,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _churn_faults(mode: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", THREAD_CHURN, mode], capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts Linux page faults")
def test_kept_thread_heaps_stop_refaulting_freed_chunk_buffers():
    kept = _churn_faults("keep")
    if not kept["kept"]:
        pytest.skip("no glibc mallopt here (another C library)")
    default = _churn_faults("default")
    pages_per_pass = 36e6 / 4096
    # by default each thread's arena gives the freed buffer back and faults it in again
    assert default["faults"] > 3 * pages_per_pass
    # kept: a thread's first buffers fault in once, then the pages are reused
    assert kept["faults"] < default["faults"] / 5
