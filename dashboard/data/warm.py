"""Build a results file's default views into the machine's view cache as soon as the fit has
written it, so the first visitor of each page reads them instead of waiting for them.

The views are the ones every visit needs and that cost seconds to minutes at atlas scale: the
gene table, the default streamlines of veloVI (and of the scVelo baseline when the file holds
its projection) with their agreement map, and the whole-layer moments that selection
statistics start from. A fit job calls :func:`warm_results_file` in its own process after the
write (``dashboard.jobs.runner``); a failure there only leaves the views to be built on first
use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from dashboard.data import view_cache
from dashboard.data.projections import agreement, baseline_missing_reason
from dashboard.data.results import Results, load_results
from dashboard.data.selections import layer_moments
from dashboard.data.stream_geometry import stream_geometry

log = logging.getLogger(__name__)


def default_views(results: Results) -> dict[str, Callable[[], object]]:
    """The views :func:`warm_views` builds for ``results``, by name (only those it has)."""
    views: dict[str, Callable[[], object]] = {"gene table": results.gene_table}
    if results.has("streams"):
        views["veloVI streams"] = lambda: stream_geometry(results)
        if baseline_missing_reason(results) is None:
            views["scVelo streams"] = lambda: stream_geometry(results, "scvelo")
            views["agreement"] = lambda: agreement(results)
    for layer in ("velocity", "velocity_coherence"):
        if results.has_layer(layer):
            views[f"{layer} moments"] = lambda layer=layer: layer_moments(results, layer)
    return views


def warm_views(results: Results) -> dict[str, float]:
    """Build every default view of ``results`` through its memo (and so into the view cache
    this process uses); returns the seconds each took."""
    seconds = {}
    for name, build in default_views(results).items():
        start = time.perf_counter()
        build()
        seconds[name] = round(time.perf_counter() - start, 3)
    return seconds


def warm_results_file(results_path: str | Path) -> dict[str, float] | None:
    """Warm the views of a fit's results file, written in ``cache_dir/results``, into
    ``cache_dir/views`` (the cache the dashboard reads, with its own size limit); returns the
    seconds per view, or None when it failed (logged: the views are then built on first use)."""
    path = Path(results_path)
    try:
        view_cache.use(path.parent.parent / view_cache.VIEWS)
        return warm_views(load_results(path))
    except Exception:  # warming is an optimisation: never fail the fit for it
        log.exception("could not build the default views of %s", path)
        return None
