"""The fit's stages as the pipeline runs them: :class:`Stages` times each stage, reports its
progress and lands it when the fit writes stage by stage (:mod:`core.staged_results`), and
:func:`run_analyses` runs the analyses after the posterior (velocity graph, uncertainty,
coherence, permutation scores, scVelo baseline), each a stage that lands on its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from core.derived_layers import drop_rebuildable
from core.memory import release_free_memory
from core.options import STAGE_SPAN
from core.params import FitParams, ProgressCallback, ProgressEvent
from core.stage_files import BASE, LATE_STAGES
from core.staged_results import StageWriter, discard_added, slot_keys

if TYPE_CHECKING:  # torch stays out of modules that only describe a fit
    from core.graph import VelocityGraph
    from core.velovi import VeloVI


class Stages:
    """Times stages (``timings``: seconds per stage) and reports their progress to the
    callback and, when the fit writes stage by stage, to its ``writer``."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.writer: StageWriter | None = None

    def report(self, event: ProgressEvent) -> None:
        """Pass ``event`` on to the writer's status and the progress callback."""
        if self.writer is not None:
            self.writer.progress(event.stage, event.fraction, event.epoch, event.max_epochs)
        if self.progress is not None:
            self.progress(event)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the block's seconds to stage ``name``'s timing without reporting progress."""
        start = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)

    def land(
        self, stage: str, result: AnnData, before: Mapping[str, set[str]] | None = None
    ) -> None:
        """Land ``stage`` of ``result`` when the fit writes stage by stage (timed as "write")."""
        if self.writer is not None:
            with self.timed("write"):
                self.writer.land(stage, result, before)

    def within(self, name: str, done: float, message: str) -> None:
        """Report that stage ``name`` is a fraction ``done`` in [0, 1] through."""
        start, end = STAGE_SPAN[name]
        self.report(ProgressEvent(name, start + (end - start) * done, message))

    @contextmanager
    def stage(self, name: str, message: str) -> Iterator[None]:
        """Report the stage's start, time it, and return its freed memory to the OS after it."""
        self.report(ProgressEvent(name, STAGE_SPAN[name][0], message))
        with self.timed(name):
            yield
            release_free_memory()


#: Layers the late stages read (uncertainty and permutation: Ms, Mu; coherence and the
#: baseline's agreement: velocity); every other layer stays on disk once the base has landed.
LATE_STAGE_LAYERS = ("Ms", "Mu", "velocity")


def release_landed_layers(result: AnnData) -> None:
    """Drop from ``result`` (in place) the layers no late stage reads, once the base landing
    holds them: the final file copies them from there (:meth:`StageWriter.finish`), so a fit's
    memory after the graph is the late stages' inputs, not the whole posterior (at 50,000 ×
    1,839 genes, ~0.37 GB per float32 layer, a dozen of them)."""
    for key in [key for key in result.layers if key not in LATE_STAGE_LAYERS]:
        del result.layers[key]
    release_free_memory()


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence scanpy/scVelo's console logging (progress goes through the callback instead)."""
    import scanpy as sc
    import scvelo as scv

    before = scv.settings.verbosity, sc.settings.verbosity
    scv.settings.verbosity = sc.settings.verbosity = 1  # errors only
    try:
        yield
    finally:
        scv.settings.verbosity, sc.settings.verbosity = before


def run_analyses(
    result: AnnData,
    model: VeloVI,
    params: FitParams,
    codes: np.ndarray,
    cell_types: list[str],
    stages: Stages,
) -> dict[str, str]:
    """Velocity graph, uncertainties, coherence, permutation score and baseline, in place.

    When the fit writes stage by stage (``stages.writer``), the results land once the graph is
    done (`BASE`), then each late stage as it ends; a late stage that raises is recorded and
    the others still run, and its ``{"stage", "message"}`` is returned. Without a writer an
    error propagates. Returns None when every stage ran."""
    wanted = params.analyses()
    graph = None
    if "graph" in wanted:
        from core.graph import add_velocity_graph

        with stages.stage("graph", "velocity graph and embedding"):
            graph = add_velocity_graph(result)
    stages.land(BASE, result)
    if stages.writer is not None:
        release_landed_layers(result)
    late = {
        "uncertainty": lambda: _uncertainty_stage(result, model, params, graph, stages),
        "coherence": lambda: _coherence_stage(result, graph, codes, cell_types, stages),
        "permutation": lambda: _permutation_stage(result, model, params, codes, cell_types, stages),
        "baseline": lambda: _baseline_stage(result, params, graph, stages),
    }
    failed: dict[str, str] = {}
    for name in planned_late_stages(params):
        before = slot_keys(result)
        try:
            late[name]()
        except Exception as err:
            if stages.writer is None:
                raise
            discard_added(result, before)  # what the stage wrote before it failed
            failed[name] = f"{type(err).__name__}: {err}"
            stages.writer.fail(name, failed[name])
            stages.report(
                ProgressEvent(name, STAGE_SPAN[name][1], f"{name} failed: {failed[name]}")
            )
            continue
        stages.land(name, result, before)
    return failed


def planned_late_stages(params: FitParams) -> list[str]:
    """The late stages (`LATE_STAGES`) a fit with ``params`` runs, in order (uncertainty when
    either kind is wanted)."""
    wanted = params.analyses()
    runs = {
        "uncertainty": bool({"intrinsic", "extrinsic"} & set(wanted)),
        "coherence": "coherence" in wanted,
        "permutation": "permutation" in wanted,
        "baseline": "baseline" in wanted,
    }
    return [name for name in LATE_STAGES if runs[name]]


def _uncertainty_stage(
    result: AnnData, model: VeloVI, params: FitParams, graph: VelocityGraph | None, stages: Stages
) -> None:
    """Intrinsic and/or extrinsic uncertainty from one stream of velocity samples."""
    from core.uncertainty import add_uncertainty_to_adata, uncertainty_from_sample_chunks

    wanted = params.analyses()
    intrinsic, extrinsic = "intrinsic" in wanted, "extrinsic" in wanted
    n_draws = max(
        params.n_samples_intrinsic if intrinsic else 0,
        params.n_samples_extrinsic if extrinsic else 0,
    )
    message = f"uncertainty: {n_draws} velocity samples per cell"
    with stages.stage("uncertainty", message):

        def chunks():
            for cells, samples in model.velocity_sample_chunks(n_draws):
                stages.within("uncertainty", cells.stop / result.n_obs, message)
                yield cells, samples

        frames = uncertainty_from_sample_chunks(
            chunks(),
            result.layers["Ms"],
            graph.candidates if extrinsic else None,
            n_extrinsic=params.n_samples_extrinsic,
            intrinsic=intrinsic,
        )
        add_uncertainty_to_adata(result, *frames)


def _coherence_stage(
    result: AnnData, graph: VelocityGraph, codes: np.ndarray, cell_types: list[str], stages: Stages
) -> None:
    """Velocity coherence per cell and gene, and its mean per cell type."""
    from core.coherence import add_coherence_to_adata, velocity_coherence
    from core.graph import transition_matrix

    with stages.stage("coherence", "velocity coherence"):
        T = transition_matrix(graph, self_transitions=True, use_negative_cosines=True)
        per_cell, per_type = velocity_coherence(
            T, result.layers["Ms"], result.layers["velocity"], codes, len(cell_types)
        )
        add_coherence_to_adata(result, per_cell, per_type)


def _permutation_stage(
    result: AnnData,
    model: VeloVI,
    params: FitParams,
    codes: np.ndarray,
    cell_types: list[str],
    stages: Stages,
) -> None:
    """The permutation scores of every gene and cell type."""
    from core.permutation import add_permutation_to_adata, permutation_scores

    with stages.stage("permutation", "permutation scores"):
        scores = permutation_scores(
            model.expression_fit,
            result.layers["Ms"],
            result.layers["Mu"],
            codes,
            len(cell_types),
            n_cells=params.permutation_cells,
            seed=params.seed,
        )
        add_permutation_to_adata(result, scores)


def _baseline_stage(
    result: AnnData, params: FitParams, graph: VelocityGraph | None, stages: Stages
) -> None:
    """scVelo's baseline velocity, with its streams projected as veloVI's when there is a
    graph (``obsm['velocity_baseline_umap']``)."""
    from core.baseline import add_baseline_to_adata

    with stages.stage("baseline", f"scVelo {params.baseline} baseline"), quiet_libraries():
        add_baseline_to_adata(result, mode=params.baseline)
        if graph is not None:
            from core.graph import add_velocity_graph

            add_velocity_graph(result, vkey="velocity_baseline")
        if stages.writer is not None:  # its landing keeps γ, not the (N, G) Mu − γ·Ms
            drop_rebuildable(result, ["velocity_baseline"])
