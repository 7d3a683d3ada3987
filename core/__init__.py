"""velodash core: spliced/unspliced counts in, a results AnnData out (no Dash here)."""

from core.threads import set_process_defaults

__version__ = "0.1.0"

# Before torch/numba load their OpenMP pools: sleep, don't spin, when waiting (core.threads).
set_process_defaults()
