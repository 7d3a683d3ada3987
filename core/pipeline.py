"""The whole fit: counts in, the results AnnData of the DESIGN.md contract out.

`run` chains io validation → preprocessing → veloVI training → one posterior pass → the paper's
analyses, records every parameter and per-stage timings in ``uns['velodash']``, and reports
progress through one callback; after each stage the freed heap goes back to the OS
(:mod:`core.memory`). `fit_file` wraps it with reading and an atomic write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from anndata import AnnData

from core import __version__
from core.io import (
    DatasetError,
    detect_groupby,
    file_fingerprint,
    read_dataset,
    validate_counts,
)
from core.memory import release_free_memory
from core.options import STAGE_SPAN
from core.params import FitParams, ProgressCallback, ProgressEvent
from core.preprocess import PreprocessConfig, preprocess
from core.results_io import write_results
from core.threads import fit_threads

#: Most held-out reference cells the velocity check fits veloVI on (twice).
VELOCITY_CHECK_CELLS = 2000
#: obs column holding the single group used when a dataset has no cell-type annotation.
SINGLE_GROUP_KEY = "velodash_group"


class _Stages:
    """Times stages and reports their start to the progress callback."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}

    def report(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def within(self, name: str, done: float, message: str) -> None:
        """Report that stage ``name`` is a fraction ``done`` in [0, 1] through."""
        start, end = STAGE_SPAN[name]
        self.report(ProgressEvent(name, start + (end - start) * done, message))

    @contextmanager
    def stage(self, name: str, message: str) -> Iterator[None]:
        """Report the stage's start, time it, and return its freed memory to the OS after it."""
        self.report(ProgressEvent(name, STAGE_SPAN[name][0], message))
        start = time.perf_counter()
        yield
        release_free_memory()
        self.timings[name] = round(time.perf_counter() - start, 4)


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence scanpy/scVelo's console logging (progress goes through the callback instead)."""
    import scanpy as sc
    import scvelo as scv

    before = scv.settings.verbosity, sc.settings.verbosity
    scv.settings.verbosity = sc.settings.verbosity = 1  # errors only
    try:
        yield
    finally:
        scv.settings.verbosity, sc.settings.verbosity = before


def _group_codes(adata: AnnData, groupby: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes (N,) and ordered category names of the cell-type column."""
    column = adata.obs[groupby].astype("category")
    adata.obs[groupby] = column
    return column.cat.codes.to_numpy().astype(np.int64), [str(c) for c in column.cat.categories]


def _h5ad_safe(value):
    """Recursively make a value writable into ``uns`` (no None; tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _h5ad_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_h5ad_safe(v) for v in value]
    return value


class _Prepared(NamedTuple):
    """Preprocessed data ready for training: the results AnnData so far, its cell-type column
    and the notes for ``uns['velodash']``."""

    result: AnnData
    groupby: str
    notes: list[str]


def run(
    adata: AnnData,
    params: FitParams = FitParams(),
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    fingerprint: str = "",
    threads: int | None = None,
) -> AnnData:
    """Fit veloVI on raw spliced/unspliced counts and run every analysis not skipped.

    ``adata`` needs ``layers['spliced'|'unspliced']`` (cells × genes counts); it is not
    modified. Returns the results AnnData (cells × fitted genes) of the DESIGN.md contract.
    ``threads``: torch threads (default ``$VELODASH_THREADS``, else every core; see
    :mod:`core.threads`); results do not depend on it beyond float rounding.
    Raises ``core.io.DatasetError`` on bad input and ``core.train.TrainingCancelled`` when
    ``should_stop()`` becomes true during training.
    """
    stages = _Stages(progress)
    n_threads = _set_threads(threads)
    prepared = _prepare(adata, params, stages)
    return _fit_prepared(prepared, params, stages, should_stop, fingerprint, n_threads)


def _set_threads(threads: int | None) -> int:
    """Set torch's thread count for the fit (see :func:`core.threads.fit_threads`)."""
    # Imported here so that reading this module (e.g. in the web process) does not load torch.
    import torch

    n_threads = fit_threads(threads)
    torch.set_num_threads(n_threads)
    return n_threads


def _prepare(adata: AnnData, params: FitParams, stages: _Stages) -> _Prepared:
    """Validate the counts, find (or make) the cell-type column and preprocess."""
    validate_counts(adata)
    groupby = detect_groupby(adata, params.groupby)
    notes: list[str] = []
    if groupby is None:
        adata = adata.copy()
        adata.obs[SINGLE_GROUP_KEY] = "all cells"
        groupby = SINGLE_GROUP_KEY
        notes.append("no cell-type annotation found: all cells form one group")
        stages.report(ProgressEvent("preprocess", 0.0, notes[-1]))

    with (
        stages.stage("preprocess", "preprocessing: filter, normalise, moments, embedding"),
        _quiet_libraries(),
    ):
        result = preprocess(adata, PreprocessConfig(**params.for_config(PreprocessConfig)))
    return _Prepared(result, groupby, notes)


def _fit_prepared(
    prepared: _Prepared,
    params: FitParams,
    stages: _Stages,
    should_stop: Callable[[], bool] | None,
    fingerprint: str,
    n_threads: int,
) -> AnnData:
    """Train, take the posterior and run the analyses on preprocessed data (see :func:`run`)."""
    from core.convergence import ConvergenceRule
    from core.posterior import add_posterior_to_adata
    from core.train import TrainConfig
    from core.velovi import ModelConfig, VeloVI

    result, groupby, notes = prepared
    codes, cell_types = _group_codes(result, groupby)

    start, end = STAGE_SPAN["train"]

    def on_epoch(report) -> None:
        stages.report(
            ProgressEvent(
                "train",
                start + (end - start) * report.epoch / report.max_epochs,
                f"epoch {report.epoch}/{report.max_epochs}",
                epoch=report.epoch,
                max_epochs=report.max_epochs,
                elbo_train=report.elbo_train,
                elbo_validation=report.elbo_validation,
            )
        )

    with stages.stage("train", "training veloVI"):
        model = VeloVI(
            result.layers["Ms"],
            result.layers["Mu"],
            ModelConfig(**params.for_config(ModelConfig)),
            device=params.device,
            seed=params.seed,
        )
        history = model.train(
            TrainConfig(
                **params.for_config(TrainConfig),
                convergence=ConvergenceRule() if params.stopping == "velocity" else None,
            ),
            progress=on_epoch,
            should_stop=should_stop,
        )

    with stages.stage("posterior", f"posterior: {params.n_samples} samples"):
        posterior = model.posterior(
            n_samples=params.n_samples,
            mode=params.posterior_mode,
            time_statistic=params.time_statistic,
        )
        add_posterior_to_adata(result, posterior)
        del posterior  # its arrays now live in result

    _run_analyses(result, model, params, codes, cell_types, stages)

    result.uns["velodash"] = _h5ad_safe(
        {
            "version": __version__,
            "params": params.to_dict(),
            "groupby": groupby,
            "cell_types": cell_types,
            "device": str(model.device),
            "threads": n_threads,
            "timings": stages.timings,
            "history": {
                "elbo_train": np.asarray(history.elbo_train, dtype=np.float64),
                "elbo_validation": np.asarray(history.elbo_validation, dtype=np.float64),
                "best_epoch": history.best_epoch,
                "stopped_epoch": history.stopped_epoch,
                "stop_reason": history.stop_reason,
                "drift": np.asarray(history.drift, dtype=np.float64).reshape(-1, 4),
            },
            "fingerprint": fingerprint,
            "notes": notes,
            "analyses": params.analyses(),
            **result.uns.get("velodash", {}),
        }
    )
    return result


def _run_analyses(
    result: AnnData,
    model,
    params: FitParams,
    codes: np.ndarray,
    cell_types: list[str],
    stages: _Stages,
) -> None:
    """Velocity graph, uncertainties, coherence, permutation score and baseline, in place."""
    wanted = params.analyses()
    graph = None
    if "graph" in wanted:
        from core.graph import add_velocity_graph

        with stages.stage("graph", "velocity graph and embedding"):
            graph = add_velocity_graph(result)
    intrinsic, extrinsic = "intrinsic" in wanted, "extrinsic" in wanted
    if intrinsic or extrinsic:
        from core.uncertainty import add_uncertainty_to_adata, uncertainty_from_sample_chunks

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
    if "coherence" in wanted:
        from core.coherence import add_coherence_to_adata, velocity_coherence
        from core.graph import transition_matrix

        with stages.stage("coherence", "velocity coherence"):
            T = transition_matrix(graph, self_transitions=True, use_negative_cosines=True)
            per_cell, per_type = velocity_coherence(
                T, result.layers["Ms"], result.layers["velocity"], codes, len(cell_types)
            )
            add_coherence_to_adata(result, per_cell, per_type)
    if "permutation" in wanted:
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
    if "baseline" in wanted:
        from core.baseline import add_baseline_to_adata

        with stages.stage("baseline", f"scVelo {params.baseline} baseline"), _quiet_libraries():
            add_baseline_to_adata(result, mode=params.baseline)
            if graph is not None:
                from core.graph import add_velocity_graph

                # the baseline's streams, projected exactly as veloVI's: obsm[...baseline_umap]
                add_velocity_graph(result, vkey="velocity_baseline")


def fit_file(
    input_path: str | Path,
    output_path: str | Path,
    params: FitParams = FitParams(),
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: int | None = None,
    splicing_reference: str | Path | None = None,
) -> Path:
    """Read a raw dataset, fit it as `run` does, and write the results file atomically; the raw
    counts are dropped once preprocessed.

    With ``splicing_reference`` (a dataset with spliced/unspliced counts; its sha256 must equal
    ``params.splicing_reference_sha256`` when that is set) the input's S/U are predicted from
    it first (:func:`predict_splicing_stage`) and ``uns['velodash']['splicing']`` records how.
    """
    input_path = Path(input_path)
    fingerprint = file_fingerprint(input_path)
    stages = _Stages(progress)
    n_threads = _set_threads(threads)
    adata = read_dataset(input_path)
    record = None
    if splicing_reference is not None or params.predicts_splicing:
        adata, params, record = predict_splicing_stage(
            adata, params, splicing_reference, stages, should_stop
        )
    # the raw counts live only while they are preprocessed (at 50,000 cells, over 1 GB)
    prepared = _prepare(adata, params, stages)
    del adata
    if record is not None:
        prepared.result.uns["velodash"] = {"splicing": record}
    result = _fit_prepared(prepared, params, stages, should_stop, fingerprint, n_threads)
    result.uns["velodash"]["input"] = input_path.name
    with stages.stage("write", f"writing {Path(output_path).name}"):
        path = write_results(result, output_path)
    stages.report(ProgressEvent("done", 1.0, f"results written to {path}"))
    return path


def predict_splicing_stage(
    query: AnnData,
    params: FitParams,
    reference_path: str | Path | None,
    stages: _Stages,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[AnnData, FitParams, dict]:
    """The "splicing" stage: SplicedVAE trained on the reference predicts the query's S/U.

    Returns the query with predicted layers, `params` with the reference's sha256, and the
    record for ``uns['velodash']['splicing']`` (reference name and sha256, options, held-out
    ratio metrics and the velocity agreement of veloVI fits of (at most
    `VELOCITY_CHECK_CELLS` of) the held-out cells from true and from predicted counts).
    """
    from core.splicing import predict_splicing
    from core.splicing_vae import SplicingConfig
    from core.velovi import resolve_device

    if reference_path is None:
        raise DatasetError(
            "this fit predicts spliced/unspliced counts from a reference (sha256 "
            f"{params.splicing_reference_sha256[:12]}…) but no reference file was given."
        )
    reference_path = Path(reference_path)
    digest = file_fingerprint(reference_path)
    if params.predicts_splicing and digest != params.splicing_reference_sha256:
        raise DatasetError(
            f"the splicing reference {reference_path.name} changed since this fit was asked "
            "for (its sha256 differs); ask for the fit again."
        )
    params = replace(params, splicing_reference_sha256=digest)
    config = SplicingConfig(
        loss=params.splicing_loss, max_epochs=params.splicing_epochs, seed=params.seed
    )
    label = reference_path.resolve().name
    with stages.stage("splicing", f"predicting spliced/unspliced from {label}"):
        prediction = predict_splicing(
            read_dataset(reference_path),
            query,
            config,
            min_shared_counts=params.min_shared_counts,
            device=str(resolve_device(params.device)),
            progress=lambda done, message: stages.within("splicing", done, message),
            should_stop=should_stop,
        )
        # a job's reference is a link named by its hash: record the file's own name
        record = {**prediction.record, "reference": label, "reference_sha256": digest}
        started = time.perf_counter()
        stages.within("splicing", 1.0, "velocity from true vs predicted S/U (held-out cells)")
        record["velocity"] = _velocity_check(prediction, params)
        record["timings"]["velocity_check"] = round(time.perf_counter() - started, 3)
    return prediction.query, params, record


def _velocity_check(prediction, params: FitParams) -> dict:
    """veloVI on the held-out reference cells from their true and their predicted S/U, on one
    embedding (a UMAP of their total counts), compared by `velocity_agreement`."""
    import scanpy as sc

    from core.splicing_validation import velocity_agreement

    n_cells = prediction.held_out_true.n_obs
    cells = np.sort(np.random.default_rng(params.seed).permutation(n_cells)[:VELOCITY_CHECK_CELLS])
    held_out = [prediction.held_out_true[cells].copy(), prediction.held_out_predicted[cells].copy()]
    embedding = held_out[1].copy()
    sc.pp.normalize_total(embedding)
    sc.pp.log1p(embedding)
    sc.pp.pca(embedding, n_comps=min(params.n_pcs, embedding.n_obs - 1), random_state=params.seed)
    sc.pp.neighbors(embedding, n_neighbors=min(params.n_neighbors, embedding.n_obs - 1))
    sc.tl.umap(embedding, random_state=params.seed)
    check = replace(
        params,
        groupby=None,
        splicing_reference_sha256=None,
        skip=("intrinsic", "extrinsic", "coherence", "permutation", "baseline"),
    )
    fits = []
    for held in held_out:
        held.obsm["X_umap"] = embedding.obsm["X_umap"]
        with _quiet_libraries():
            fits.append(run(held, check))
    return velocity_agreement(*fits)
