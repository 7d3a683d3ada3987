"""SplicedVAE on the pancreas subset: held-out splicing-ratio metrics against the paper's
(R 0.67, RMSE 0.127), the three splicing losses, ablations, the velocity from predicted vs
true S/U (retrained and not), its sensitivity to the prediction error, and timings.

    .venv/bin/python bench/bench_splicing.py [--epochs 150] [--threads 2] [--losses ...]
        [--no-velocity] [--no-latent] [--draws 2]

The reference is the pancreas subset (../shared/data/pancreas_739.h5ad); SplicedVAE trains
on 70 % of its cells and every metric is measured on the 30 % it held out. Ablations: each
gene's mean share (no cell-to-cell variation), one global share (no head at all), and scVI
without the head (λ = 0) for the latent structure (silhouette of the cell types in z of the
held-out cells).

Velocity (with the default loss's prediction when it is among ``--losses``): on one kNN graph
and UMAP of the held-out cells' total counts, veloVI is fitted on the held-out cells' true and
on their predicted S/U (retrained, as the pipeline's check does), and a veloVI fitted on the
true S/U of the training cells takes the held-out cells' true and predicted moments without
retraining (``core.splicing_validation.new_cells_result``). Every pair is compared per cell
(cosine over genes, cosine of the velocities projected on the UMAP, latent-time Spearman), and
the predicted shares are moved by their held-out per-gene RMSE (``--draws`` draws) to see how
much the same model's velocity moves. Prints markdown tables and writes bench/out/splicing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import anndata
import numpy as np
import torch

from core.params import FitParams
from core.preprocess import moment_kernel
from core.splicing import Prediction, predict_splicing
from core.splicing_vae import SplicedVAE, SplicingConfig
from core.splicing_validation import (
    fit_reference_velovi,
    new_cells_result,
    perturbed_moments,
    ratio_metrics,
    raw_moments,
    totals_graph,
    velocity_agreement,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pancreas_739.h5ad"
OUT = Path(__file__).resolve().parent / "out" / "splicing.json"
HEADLINE = ("ratio_pearson", "ratio_rmse", "ratio_pearson_unweighted", "ratio_rmse_unweighted")
HEADLINE += ("ratio_pearson_entry", "ratio_rmse_entry")
#: The analyses the velocity fits skip (as the pipeline's check).
SKIPPED = ("intrinsic", "extrinsic", "coherence", "permutation", "baseline")
#: The velocity comparisons: (row, fit with the fewer cells, other fit). "retrained": veloVI
#: fitted on the held-out cells themselves; "reference fit": veloVI fitted on the true S/U of
#: the training cells, taking the held-out cells without retraining.
PAIRS = (
    (
        "retrained: true vs predicted (the pipeline's check)",
        "retrained true",
        "retrained predicted",
    ),
    ("reference fit: true vs predicted", "reference fit true", "reference fit predicted"),
    ("reference fit predicted vs retrained true", "retrained true", "reference fit predicted"),
    (
        "reference fit predicted vs retrained predicted",
        "retrained predicted",
        "reference fit predicted",
    ),
    ("control, both true: reference fit vs retrained", "retrained true", "reference fit true"),
)


def _query(reference: anndata.AnnData) -> anndata.AnnData:
    """The reference's cells with their total counts only (no S/U)."""
    return anndata.AnnData(
        X=reference.layers["spliced"] + reference.layers["unspliced"],
        obs=reference.obs.copy(),
        var=reference.var.copy(),
    )


def _say(line: str) -> None:
    """Print one line of the report as soon as it is measured."""
    print(line, flush=True)


def _row(name: str, metrics: dict, seconds: float | None) -> str:
    cells = " | ".join(f"{metrics[k]:.3f}" for k in HEADLINE)
    return f"| {name} | {cells} | {'' if seconds is None else f'{seconds:.0f}'} |"


def _silhouette(model: SplicedVAE, totals: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    held = model.held_out_cells
    return float(silhouette_score(model.latent(totals[held]), labels[held]))


def _ratio_section(reference, losses: list[str], epochs: int, results: dict) -> dict:
    """The held-out share metrics of each loss and of the two baselines; the predictions."""
    query = _query(reference)
    _say(
        "| predictor | R (weighted) | RMSE (weighted) | R (unweighted) | RMSE (unweighted) "
        "| R (entries) | RMSE (entries) | s |"
    )
    _say("|---|---|---|---|---|---|---|---|")
    predictions: dict[str, Prediction] = {}
    for loss in losses:
        start = time.perf_counter()
        prediction = predict_splicing(
            reference, query, SplicingConfig(loss=loss, max_epochs=epochs)
        )
        seconds = time.perf_counter() - start
        held = prediction.record["held_out"]
        results["losses"][loss] = {k: held[k] for k in HEADLINE} | {"seconds": seconds}
        _say(_row(f"SplicedVAE, {loss}", held, seconds))
        if not predictions:
            _baselines(prediction, results)
        predictions[loss] = prediction
        _write(results)
    return predictions


def _baselines(prediction: Prediction, results: dict) -> None:
    """Each gene's mean share and one global share, on the same held-out cells."""
    gene_mean = prediction.record["gene_mean_baseline"]
    _say(_row("each gene's mean share (no cell variation)", gene_mean, None))
    true = prediction.held_out_true
    spliced = np.asarray(true.layers["spliced"].toarray())
    totals = spliced + np.asarray(true.layers["unspliced"].toarray())
    share = np.full(totals.shape, spliced.sum() / totals.sum())
    constant = ratio_metrics(share, spliced, totals, list(true.var_names))
    _say(_row("one global share (no head)", constant, None))
    results["gene_mean"] = {k: gene_mean[k] for k in HEADLINE}
    results["global_share"] = {k: constant[k] for k in HEADLINE}


def _agreement_row(name: str, a: anndata.AnnData, b: anndata.AnnData) -> dict:
    """velocity_agreement of ``a`` (fewer or the same cells) and ``b``, printed as a row."""
    agreement = velocity_agreement(a, b)
    cosine = agreement["cosine"]
    q1, q3 = np.nanpercentile(cosine, [25, 75])
    _say(
        f"| {name} | {len(cosine)} | {agreement['n_genes']} | {agreement['cosine_median']:.3f} "
        f"({q1:.3f}–{q3:.3f}) | {agreement.get('cosine_embedding_median', float('nan')):.3f} "
        f"| {agreement['latent_time_spearman']:.3f} |"
    )
    return {k: v for k, v in agreement.items() if not isinstance(v, np.ndarray)} | {
        "cosine_quartiles": [float(q1), float(q3)]
    }


def _velocity_section(
    reference, prediction: Prediction, params: FitParams, draws: int, results: dict
) -> None:
    """Retrained and frozen veloVI on the held-out cells' true and predicted S/U, compared."""
    from core.pipeline import run

    held_true, held_pred = prediction.held_out_true, prediction.held_out_predicted
    graph = totals_graph(
        held_pred.X, params.seed, params.n_pcs, params.n_neighbors, True, held_pred.obs_names
    )
    timings = results.setdefault("velocity_seconds", {})
    start = time.perf_counter()
    check = replace(params, groupby=None, skip=SKIPPED)
    retrained = {}
    for name, held in (("true", held_true), ("predicted", held_pred)):
        held = held.copy()
        held.obsm["X_umap"] = graph.obsm["X_umap"]
        retrained[name] = run(held, check)
    timings["retrained_fits"] = time.perf_counter() - start
    start = time.perf_counter()
    training = ~reference.obs_names.isin(held_true.obs_names)
    fitted = fit_reference_velovi(reference[training, held_true.var_names].copy(), params)
    timings["reference_fit"] = time.perf_counter() - start
    kernel = moment_kernel(graph.obsp["connectivities"])
    moments = {
        n: raw_moments(fitted, h, kernel)
        for n, h in (("true", held_true), ("predicted", held_pred))
    }
    frozen = {n: new_cells_result(fitted, m, graph) for n, m in moments.items()}
    loss = prediction.record["model"]["loss"]
    _say(
        f"\nvelocity ({loss}; {held_true.n_obs} held-out cells; reference veloVI on "
        f"{int(training.sum())} training cells x {len(fitted.var)} genes, "
        f"{fitted.model.history.stopped_epoch} epochs)\n"
    )
    _say(
        "| comparison | cells | genes | gene cosine median (quartiles) | embedding cosine "
        "| latent-time Spearman |"
    )
    _say("|---|---|---|---|---|---|")
    fits = {f"retrained {n}": fit for n, fit in retrained.items()}
    fits |= {f"reference fit {n}": fit for n, fit in frozen.items()}
    velocity = {name: _agreement_row(name, fits[a], fits[b]) for name, a, b in PAIRS}
    rmse = _per_gene_rmse(prediction, fitted.var.index)
    rng = np.random.default_rng(params.seed)
    for draw in range(draws):
        moved = new_cells_result(fitted, perturbed_moments(moments["predicted"], rmse, rng), graph)
        name = f"predicted vs predicted moved by its per-gene RMSE, draw {draw + 1}"
        velocity[name] = _agreement_row(name, frozen["predicted"], moved)
    results["velocity"] = velocity | {
        "loss": loss,
        "rmse_median": float(np.nanmedian(rmse)),
    }
    _say(f"\nmedian held-out per-gene RMSE of the fitted genes {np.nanmedian(rmse):.3f}")
    _say(f"seconds: {timings}")
    _write(results)


def _per_gene_rmse(prediction: Prediction, genes) -> np.ndarray:
    """The held-out per-gene RMSE of the predicted share (weighted moments) of ``genes``."""
    per_gene = prediction.record["held_out"]["per_gene"]
    position = {g: i for i, g in enumerate(per_gene["genes"])}
    return np.asarray([per_gene["rmse"][position[g]] for g in genes], dtype=np.float64)


def _latent_section(reference, prediction: Prediction, epochs: int, results: dict) -> None:
    """Silhouette of the cell types in the latent space with and without the head."""
    labels = reference.obs["clusters"].to_numpy().astype(str)
    ref = reference[:, list(prediction.held_out_true.var_names)]
    s_all = np.asarray(ref.layers["spliced"].toarray())
    t_all = s_all + np.asarray(ref.layers["unspliced"].toarray())
    for name, weight in (("SplicedVAE (λ = 1)", 1.0), ("scVI without the head (λ = 0)", 0.0)):
        model = SplicedVAE(t_all, s_all, SplicingConfig(splice_weight=weight, max_epochs=epochs))
        model.train()
        value = _silhouette(model, t_all, labels)
        results.setdefault("silhouette", {})[name] = value
        _say(f"latent silhouette of cell types (held-out cells), {name}: {value:.3f}")


def _write(results: dict) -> None:
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1, default=float))


def main() -> None:
    """Run the sections asked for and write bench/out/splicing.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150, help="SplicedVAE epochs")
    parser.add_argument("--max-epochs", type=int, default=FitParams.max_epochs, help="veloVI")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--losses", nargs="+", default=["binomial", "mse", "weighted_mse"])
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--no-velocity", action="store_true")
    parser.add_argument("--no-latent", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = anndata.read_h5ad(DATA)
    results: dict = {"load_average": os.getloadavg(), "epochs": args.epochs, "losses": {}}
    _say(f"load average at start {results['load_average']}")
    predictions = _ratio_section(reference, args.losses, args.epochs, results)
    default = SplicingConfig().loss
    loss = default if default in predictions else args.losses[0]
    if not args.no_velocity:
        params = FitParams(device="cpu", max_epochs=args.max_epochs)
        _velocity_section(reference, predictions[loss], params, args.draws, results)
    if not args.no_latent:
        _latent_section(reference, predictions[args.losses[0]], args.epochs, results)
    results["load_average_end"] = os.getloadavg()
    _say(f"load average at end {results['load_average_end']}")
    _write(results)


if __name__ == "__main__":
    main()
