"""The whole fit: counts in, the results AnnData of the DESIGN.md contract out.

`run` chains io validation → preprocessing → veloVI training → one posterior pass → the paper's
analyses, records every parameter and per-stage timings in ``uns['velodash']``, and reports
progress through one callback; after each stage the freed heap goes back to the OS
(:mod:`core.memory`); the stages after the posterior are in :mod:`core.analyses`. `fit_file`
wraps it with reading, and writes the results stage by stage (:mod:`core.staged_results`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from anndata import AnnData

from core import __version__
from core.analyses import Stages, planned_late_stages, quiet_libraries, run_analyses
from core.derived_layers import drop_rebuildable
from core.io import (
    DatasetError,
    detect_groupby,
    file_fingerprint,
    read_dataset,
    validate_counts,
)
from core.options import STAGE_SPAN
from core.params import FitParams, ProgressCallback, ProgressEvent
from core.preprocess import PreprocessConfig, preprocess
from core.results_io import drop_rebuildable_raw_moments
from core.stage_files import BASE
from core.staged_results import StageFailed, StageWriter
from core.threads import fit_threads

if TYPE_CHECKING:  # torch is imported only when a fit runs
    from core.train import History
    from core.velovi import VeloVI

#: Most held-out reference cells the velocity check fits veloVI on (twice).
VELOCITY_CHECK_CELLS = 2000
#: obs column holding the single group used when a dataset has no cell-type annotation.
SINGLE_GROUP_KEY = "velodash_group"


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
    stages = Stages(progress)
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


def _prepare(adata: AnnData, params: FitParams, stages: Stages) -> _Prepared:
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
        quiet_libraries(),
    ):
        result = preprocess(adata, PreprocessConfig(**params.for_config(PreprocessConfig)))
    return _Prepared(result, groupby, notes)


def train_velovi(
    prepared: AnnData,
    params: FitParams,
    progress: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[VeloVI, History]:
    """veloVI built and trained on preprocessed ``prepared`` (its ``layers['Ms'|'Mu']``) with
    ``params``' model and training options: ``(model, history)``. ``progress`` gets each
    epoch's report; training stops when ``should_stop()`` becomes true."""
    from core.convergence import ConvergenceRule
    from core.train import TrainConfig
    from core.velovi import ModelConfig, VeloVI

    model = VeloVI(
        prepared.layers["Ms"],
        prepared.layers["Mu"],
        ModelConfig(**params.for_config(ModelConfig)),
        device=params.device,
        seed=params.seed,
    )
    history = model.train(
        TrainConfig(
            **params.for_config(TrainConfig),
            convergence=ConvergenceRule() if params.stopping == "velocity" else None,
        ),
        progress=progress,
        should_stop=should_stop,
    )
    return model, history


def _fit_prepared(
    prepared: _Prepared,
    params: FitParams,
    stages: Stages,
    should_stop: Callable[[], bool] | None,
    fingerprint: str,
    n_threads: int,
) -> AnnData:
    """Train, take the posterior and run the analyses on preprocessed data (see :func:`run`)."""
    from core.posterior import add_posterior_to_adata

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
        model, history = train_velovi(result, params, on_epoch, should_stop)

    with stages.stage("posterior", f"posterior: {params.n_samples} samples"):
        posterior = model.posterior(
            n_samples=params.n_samples,
            mode=params.posterior_mode,
            time_statistic=params.time_statistic,
            # staged: the layers no stage before the base landing reads wait on disk for it
            spill=stages.writer.row_spill(result.shape) if stages.writer is not None else None,
        )
        add_posterior_to_adata(result, posterior)
        del posterior  # its arrays now live in result

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
    failed = run_analyses(result, model, params, codes, cell_types, stages)
    result.uns["velodash"]["timings"] = dict(stages.timings)
    if failed:
        result.uns["velodash"]["stages"] = {"failed": failed}
    return result


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

    The results land stage by stage while the fit runs (:mod:`core.staged_results`: the
    posterior and graph first, then each late analysis), and the whole file is written to
    ``output_path`` at the end. A late stage that fails leaves the others in the file, records
    itself in ``uns['velodash']['stages']['failed']`` (stage -> message) and raises
    :class:`~core.staged_results.StageFailed` after the write.

    With ``splicing_reference`` (a dataset with spliced/unspliced counts; its sha256 must equal
    ``params.splicing_reference_sha256`` when that is set) the input's S/U are predicted from
    it first (:func:`predict_splicing_stage`) and ``uns['velodash']['splicing']`` records how.
    """
    input_path = Path(input_path)
    fingerprint = file_fingerprint(input_path)
    stages = Stages(progress)
    n_threads = _set_threads(threads)
    with StageWriter(output_path, [BASE, *planned_late_stages(params)]) as writer:
        stages.writer = writer
        try:
            result = _fit_staged(
                input_path, params, stages, should_stop, splicing_reference, fingerprint, n_threads
            )
        except BaseException as err:
            writer.abandon(f"{type(err).__name__}: {err}")
            raise
        with stages.stage("write", f"writing {Path(output_path).name}"):
            result.uns["velodash"]["timings"] = dict(stages.timings)
            path = writer.finish(result)
    stages.report(ProgressEvent("done", 1.0, f"results written to {path}"))
    failed = result.uns["velodash"].get("stages", {}).get("failed")
    if failed:
        raise StageFailed(failed, path)
    return path


def _fit_staged(
    input_path: Path,
    params: FitParams,
    stages: Stages,
    should_stop: Callable[[], bool] | None,
    splicing_reference: str | Path | None,
    fingerprint: str,
    n_threads: int,
) -> AnnData:
    """Read, (predict S/U,) preprocess and fit: the body of :func:`fit_file`."""
    adata = read_dataset(input_path)
    record = None
    if splicing_reference is not None or params.predicts_splicing:
        adata, params, record = predict_splicing_stage(
            adata, params, splicing_reference, stages, should_stop
        )
    # the raw counts live only while they are preprocessed (at 50,000 cells, over 1 GB)
    prepared = _prepare(adata, params, stages)
    del adata
    # the file leaves out layers that its other slots rebuild (raw moments from the counts, a
    # simulation's true velocity from its truth); so does the fit's memory
    drop_rebuildable_raw_moments(prepared.result)
    drop_rebuildable(prepared.result)
    prepared.result.uns["velodash"] = {"input": input_path.name}
    if record is not None:
        prepared.result.uns["velodash"]["splicing"] = record
    return _fit_prepared(prepared, params, stages, should_stop, fingerprint, n_threads)


def predict_splicing_stage(
    query: AnnData,
    params: FitParams,
    reference_path: str | Path | None,
    stages: Stages,
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
    from core.splicing_validation import totals_graph, velocity_agreement

    n_cells = prediction.held_out_true.n_obs
    cells = np.sort(np.random.default_rng(params.seed).permutation(n_cells)[:VELOCITY_CHECK_CELLS])
    held_out = [prediction.held_out_true[cells].copy(), prediction.held_out_predicted[cells].copy()]
    embedding = totals_graph(
        held_out[1].X, params.seed, params.n_pcs, params.n_neighbors, umap=True
    )
    check = replace(
        params,
        groupby=None,
        splicing_reference_sha256=None,
        skip=("intrinsic", "extrinsic", "coherence", "permutation", "baseline"),
    )
    fits = []
    for held in held_out:
        held.obsm["X_umap"] = embedding.obsm["X_umap"]
        with quiet_libraries():
            fits.append(run(held, check))
    return velocity_agreement(*fits)
