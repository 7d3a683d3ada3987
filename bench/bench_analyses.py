"""Analyses benchmark: the reference's uncertainty and permutation procedures vs velodash's.

On one simulated dataset (default 3000 cells × 500 genes, the fit benchmark's preprocessing)
both models are trained for ``--train-epochs`` (no early stopping; analysis cost does not depend
on fit quality), then, alternating reference and velodash so both see similar load:

- intrinsic: ``VELOVI.get_directional_uncertainty(n_samples=100)`` (joblib over cells, its
  default n_jobs=-1) vs ``core.uncertainty.intrinsic_uncertainty(VeloVI.velocity_samples(100))``;
- extrinsic: the paper tutorial's loop (reference notes §4.2): 25 × (``get_velocity(n_samples=1)``
  + ``scv.tl.velocity_graph(approx=True, sqrt_transform=False)`` + ``get_transition_matrix(
  self_transitions=True, use_negative_cosines=True)`` + T @ Ms), then the reference's
  directional statistics; vs ``core.uncertainty.extrinsic_uncertainty`` on 25 velocity samples
  (the candidate-neighbour pattern is built inside the timed call);
- permutation: velovi's ``get_permutation_scores(labels_key)`` vs
  ``core.permutation.permutation_scores`` (expression fits with 10 samples, 200 cells per type).

The per-cell (per-gene) agreement of the two models' outputs is reported as a Spearman
correlation: a sanity check that both compute the same quantity, not an accuracy claim.

Run:  .venv-bench/bin/python bench/bench_analyses.py --size 3000x500
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import scipy.stats
from anndata import AnnData
from common import (
    environment,
    load,
    parse_sizes,
    report,
    set_threads,
    simulated_dataset,
    summary,
    timed,
    write_json,
)
from reference import (
    ReferenceVELOVI,
    reference_directional_variance,
    reference_extrinsic_futures,
    reference_model,
    train_reference,
)
from scvelo import settings as scvelo_settings

from core import graph, permutation, uncertainty
from core.train import TrainConfig
from core.velovi import VeloVI


def reference_extrinsic(adata: AnnData, model: ReferenceVELOVI, n_samples: int) -> np.ndarray:
    """The tutorial's ``compute_extrinisic_uncertainty``; returns the per-cell cosine variance."""
    _, futures = reference_extrinsic_futures(adata, model, n_samples)
    return reference_directional_variance(futures)


def ours_extrinsic(adata: AnnData, model: VeloVI, n_samples: int) -> np.ndarray:
    """velodash's extrinsic uncertainty; returns the per-cell cosine variance."""
    candidates = graph.candidate_neighbors(adata)
    samples = model.velocity_samples(n_samples)
    df = uncertainty.extrinsic_uncertainty(samples, adata.layers["Ms"], candidates)
    return df["cosine_variance"].to_numpy()


def ours_permutation(adata: AnnData, model: VeloVI, labels_key: str, seed: int) -> np.ndarray:
    """velodash's permutation score per gene (G,)."""
    labels = adata.obs[labels_key].astype("category")
    result = permutation.permutation_scores(
        lambda s, u: model.expression_fit(s, u, n_samples=10),
        adata.layers["Ms"],
        adata.layers["Mu"],
        labels.cat.codes.to_numpy(),
        len(labels.cat.categories),
        n_cells=200,
        seed=seed,
    )
    return result.score


def compare(
    name: str,
    reference_fn,
    ours_fn,
    repeats: int,
) -> dict[str, Any]:
    """Alternate reference/velodash calls ``repeats`` times; timings, speed-up, agreement."""
    timings: dict[str, list] = {"reference": [], "velodash": []}
    values: dict[str, np.ndarray] = {}
    for repeat in range(repeats):
        for side, fn in (("reference", reference_fn), ("velodash", ours_fn)):
            values[side], timing = timed(fn)
            timings[side].append(timing)
            report(f"{side} {name} (repeat {repeat + 1})", timing)
    result: dict[str, Any] = {side: summary(t) for side, t in timings.items()}
    result["speedup"] = result["reference"]["median_s"] / result["velodash"]["median_s"]
    finite = np.isfinite(values["reference"]) & np.isfinite(values["velodash"])
    result["spearman_reference_vs_velodash"] = float(
        scipy.stats.spearmanr(values["reference"][finite], values["velodash"][finite])[0]
    )
    print(
        f"  -> {name} speed-up {result['speedup']:.1f}x, Spearman(ref, ours) "
        f"{result['spearman_reference_vs_velodash']:.2f}",
        flush=True,
    )
    return result


def main() -> None:
    """Parse options, train both models, time the three analyses, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="3000x500", help="CELLSxGENES")
    parser.add_argument("--train-epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="intrinsic and permutation")
    parser.add_argument("--extrinsic-repeats", type=int, default=1)
    parser.add_argument("--intrinsic-samples", type=int, default=100)
    parser.add_argument("--extrinsic-samples", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="intrinsic,extrinsic,permutation")
    parser.add_argument("--out", default="analyses", help="bench/out/<out>.json")
    args = parser.parse_args()

    set_threads(args.threads)
    scvelo_settings.verbosity = 0
    [(n_cells, n_genes)] = parse_sizes(args.size)
    payload: dict[str, Any] = {"args": vars(args), "environment": environment()}
    adata, timing = timed(lambda: simulated_dataset(n_cells, n_genes, args.seed))
    report(f"simulate + preprocess ({adata.n_vars} genes kept)", timing)
    payload["n_genes_kept"] = int(adata.n_vars)

    ref_adata = adata.copy()
    ref = reference_model(ref_adata, args.seed)
    ours = VeloVI(adata.layers["Ms"], adata.layers["Mu"], device="cpu", seed=args.seed)
    _, timing = timed(lambda: train_reference(ref, args.train_epochs, False))
    report(f"reference train ({args.train_epochs} epochs)", timing)
    fixed = TrainConfig(args.train_epochs, early_stopping=False, convergence=None)
    _, timing = timed(lambda: ours.train(fixed))
    report(f"velodash train ({args.train_epochs} epochs)", timing)

    analyses = {
        "intrinsic": (
            lambda: ref.get_directional_uncertainty(n_samples=args.intrinsic_samples)[0][
                "directional_cosine_sim_variance"
            ].to_numpy(),
            lambda: uncertainty.intrinsic_uncertainty(
                ours.velocity_samples(args.intrinsic_samples)
            )["cosine_variance"].to_numpy(),
            args.repeats,
        ),
        "extrinsic": (
            lambda: reference_extrinsic(ref_adata, ref, args.extrinsic_samples),
            lambda: ours_extrinsic(adata, ours, args.extrinsic_samples),
            args.extrinsic_repeats,
        ),
        "permutation": (
            lambda: np.nanmax(ref.get_permutation_scores("clusters")[0].to_numpy(float), axis=1),
            lambda: ours_permutation(adata, ours, "clusters", args.seed),
            args.repeats,
        ),
    }
    for name in args.only.split(","):
        reference_fn, ours_fn, repeats = analyses[name]
        print(f"== {name} (load {load():.2f})", flush=True)
        payload[name] = compare(name, reference_fn, ours_fn, repeats)
        payload["environment"]["load_at_end"] = load()
        write_json(args.out, payload)


if __name__ == "__main__":
    main()
