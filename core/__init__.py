"""velodash core: spliced/unspliced counts in, a results AnnData out (no Dash here)."""

__version__ = "0.1.0"
