"""SplicedVAE on the pancreas subset: held-out splicing-ratio metrics against the paper's
(R 0.67, RMSE 0.127), the three splicing losses, ablations, the velocity from predicted vs
true S/U, and timings.

    .venv/bin/python bench/bench_splicing.py [--epochs 150] [--threads 2] [--no-velocity]

The reference is the pancreas subset (../shared/data/pancreas_739.h5ad); SplicedVAE trains
on 70 % of its cells and every metric is measured on the 30 % it held out. Ablations: each
gene's mean share (no cell-to-cell variation), one global share (no head at all), and scVI
without the head (λ = 0) for the latent structure (silhouette of the cell types in z of the
held-out cells). Prints a markdown table and writes bench/out/splicing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import anndata
import numpy as np
import torch

from core.params import FitParams
from core.splicing import predict_splicing
from core.splicing_vae import SplicedVAE, SplicingConfig
from core.splicing_validation import ratio_metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pancreas_739.h5ad"
OUT = Path(__file__).resolve().parent / "out" / "splicing.json"
HEADLINE = ("ratio_pearson", "ratio_rmse", "ratio_pearson_unweighted", "ratio_rmse_unweighted")
HEADLINE += ("ratio_pearson_entry", "ratio_rmse_entry")


def _query(reference: anndata.AnnData) -> anndata.AnnData:
    """The reference's cells with their total counts only (no S/U)."""
    query = anndata.AnnData(
        X=reference.layers["spliced"] + reference.layers["unspliced"],
        obs=reference.obs.copy(),
        var=reference.var.copy(),
    )
    return query


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--losses", nargs="+", default=["binomial", "mse", "weighted_mse"])
    parser.add_argument("--no-velocity", action="store_true")
    parser.add_argument("--no-latent", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = anndata.read_h5ad(DATA)
    query = _query(reference)
    labels = reference.obs["clusters"].to_numpy().astype(str)
    results: dict = {"load_average": os.getloadavg(), "epochs": args.epochs, "losses": {}}
    _say(f"load average at start {results['load_average']}")
    _say(
        "| predictor | R (weighted) | RMSE (weighted) | R (unweighted) | RMSE (unweighted) "
        "| R (entries) | RMSE (entries) | s |"
    )
    _say("|---|---|---|---|---|---|---|---|")
    first = None
    for loss in args.losses:
        config = SplicingConfig(loss=loss, max_epochs=args.epochs)
        start = time.perf_counter()
        prediction = predict_splicing(reference, query, config)
        seconds = time.perf_counter() - start
        held = prediction.record["held_out"]
        results["losses"][loss] = {k: held[k] for k in HEADLINE} | {"seconds": seconds}
        _say(_row(f"SplicedVAE, {loss}", held, seconds))
        if first is None:
            first = prediction
            record = prediction.record
            _say(
                _row(
                    "each gene's mean share (no cell variation)", record["gene_mean_baseline"], None
                )
            )
            true = prediction.held_out_true
            spliced = np.asarray(true.layers["spliced"].toarray())
            totals = spliced + np.asarray(true.layers["unspliced"].toarray())
            share = np.full(totals.shape, spliced.sum() / totals.sum())
            constant = ratio_metrics(share, spliced, totals, list(true.var_names))
            _say(_row("one global share (no head)", constant, None))
            results["gene_mean"] = {k: record["gene_mean_baseline"][k] for k in HEADLINE}
            results["global_share"] = {k: constant[k] for k in HEADLINE}
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1, default=float))

    if not args.no_velocity:
        from core.pipeline import _velocity_check

        start = time.perf_counter()
        velocity = _velocity_check(first, FitParams(device="cpu"))
        seconds = time.perf_counter() - start
        results["velocity"] = {
            k: v for k, v in velocity.items() if not isinstance(v, np.ndarray)
        } | {"seconds": seconds}
        cosine = velocity["cosine"]
        _say(
            f"velocity ({args.losses[0]}; veloVI from true vs predicted S/U, {len(cosine)} "
            f"held-out cells, {velocity['n_genes']} shared genes): cosine median "
            f"{velocity['cosine_median']:.3f} (quartiles {np.nanpercentile(cosine, 25):.3f}–"
            f"{np.nanpercentile(cosine, 75):.3f}), embedding cosine median "
            f"{velocity.get('cosine_embedding_median', float('nan')):.3f}, latent-time "
            f"Spearman {velocity['latent_time_spearman']:.3f}; {seconds:.0f} s"
        )
        OUT.write_text(json.dumps(results, indent=1, default=float))

    if not args.no_latent:
        genes = list(first.held_out_true.var_names)
        ref = reference[:, genes]
        s_all = np.asarray(ref.layers["spliced"].toarray())
        t_all = s_all + np.asarray(ref.layers["unspliced"].toarray())
        for name, weight in (("SplicedVAE (λ = 1)", 1.0), ("scVI without the head (λ = 0)", 0.0)):
            config = SplicingConfig(splice_weight=weight, max_epochs=args.epochs)
            model = SplicedVAE(t_all, s_all, config)
            model.train()
            value = _silhouette(model, t_all, labels)
            results.setdefault("silhouette", {})[name] = value
            _say(f"latent silhouette of cell types (held-out cells), {name}: {value:.3f}")
    results["load_average_end"] = os.getloadavg()
    _say(f"load average at end {results['load_average_end']}")
    OUT.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
