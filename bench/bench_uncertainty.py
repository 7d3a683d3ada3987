"""Uncertainty: velodash's intrinsic and extrinsic uncertainty against the reference veloVI's,
stage by stage on the real pancreas subset, and their calibration on ground truth.

Parts (``--parts``, all by default):

- ``reference``: the reference (scvi-tools ``VELOVI``, defaults, early stopping) on the pancreas
  subset (``../shared/data/pancreas_739.h5ad``, velodash's preprocessing) for each ``--seeds``:
  per-cell intrinsic (``get_directional_uncertainty(n_samples=100)``) and extrinsic (the
  tutorial's 25-sample loop, ``reference.reference_extrinsic_futures``) cosine variance. Its 25
  velocity samples and trained weights are kept for the stages. Cached in
  ``bench/out/uncertainty/`` (``--refresh`` recomputes).
- ``stages`` (reference seed 0), each compared alone: (c) the procedure: the reference's own
  25 samples through velodash's extrinsic, in scVelo's PCA space (as the tutorial) and over
  genes; (b) the draws: the reference's trained weights loaded into velodash's module, then
  velodash's draws and analyses; (a) the training: velodash trained with each set of choices
  in ``VARIANTS``.
- ``velodash``: ``core.pipeline.run`` with every default on the raw subset, for each seed.
- ``agreement`` (printed from the above): per cell type, the median of each uncertainty; per
  run, against the mean of the reference seeds' (log10): the Spearman correlation of its 8
  type medians, their mean difference (level) and mean absolute difference (per-type
  distance); the band is each reference seed against the mean of the others.
- ``truth``: calibration on scVelo's simulation (``--truth-size``) and on the bundled sample,
  reference and velodash defaults on the same preprocessed data: Spearman of each
  uncertainty with the direction error, and the AUROC for the worst 10 % of cells
  (``core.ground_truth``).

``--write-reference PATH`` writes the reference seeds' per-type medians and band (the values
``tests/test_pancreas.py`` checks velodash against). Raw results: bench/out/<out>.json.

Run:  .venv-bench/bin/python bench/bench_uncertainty.py --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.stats
import torch
from common import OUT_DIR, REPO_ROOT, environment, load, parse_sizes, simulated_dataset, write_json
from reference import (
    load_into_velodash,
    reference_directional_variance,
    reference_extrinsic_futures,
    reference_model,
    reference_posterior,
    train_reference,
)

from core import graph, uncertainty
from core.ground_truth import direction_error, uncertainty_calibration
from core.params import FitParams
from core.pipeline import run
from core.preprocess import PreprocessConfig, preprocess
from core.train import TrainConfig
from core.velovi import VeloVI
from dashboard.config import SAMPLE_PATH

PANCREAS = REPO_ROOT.parent / "shared" / "data" / "pancreas_739.h5ad"
SAMPLE = SAMPLE_PATH
CACHE = OUT_DIR / "uncertainty"
#: Cell types in lineage order (the paper's Fig. 4a).
TYPES = (
    "Ductal",
    "Ngn3 low EP",
    "Ngn3 high EP",
    "Pre-endocrine",
    "Alpha",
    "Beta",
    "Delta",
    "Epsilon",
)
#: velodash training choices compared in stage (a): name → TrainConfig options.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults (sampled π, velocity rule, weight average)": {},
    "expected π (the issue-7 default)": {"pi_estimator": "expected"},
    "expected π + ELBO rule": {"pi_estimator": "expected", "convergence": None},
    "expected π, no weight average": {"pi_estimator": "expected", "weight_average": None},
    "reference's choices (sampled π, ELBO rule, last weights)": {
        "convergence": None,
        "weight_average": None,
    },
}


def pancreas() -> tuple[ad.AnnData, ad.AnnData]:
    """The raw subset and velodash's preprocessing of it (what both models are fitted on)."""
    raw = ad.read_h5ad(PANCREAS)
    return raw, preprocess(raw, PreprocessConfig())


def run_reference(adata: ad.AnnData, seed: int) -> dict[str, np.ndarray]:
    """The reference's defaults on ``adata``; per-cell uncertainties, its extrinsic samples,
    velocity and latent time (25 samples each) and its trained weights (``state``)."""
    model = reference_model(adata.copy(), seed)
    started = time.perf_counter()
    epochs = train_reference(model, 500, True)
    trained = time.perf_counter() - started
    intrinsic = model.get_directional_uncertainty(n_samples=100)[0]
    samples, futures = reference_extrinsic_futures(adata.copy(), model, 25)
    posterior = reference_posterior(model, 25)
    return {
        "intrinsic": intrinsic["directional_cosine_sim_variance"].to_numpy(),
        "extrinsic": reference_directional_variance(futures),
        "samples": samples,
        "velocity": posterior["velocity"],
        "fit_t": posterior["fit_t"],
        "epochs": np.asarray(epochs),
        "train_s": np.asarray(trained),
        "seconds": np.asarray(time.perf_counter() - started),
        "state": model,
    }


def cached_reference(adata: ad.AnnData, seed: int, tag: str, refresh: bool) -> dict:
    """:func:`run_reference`, cached as ``CACHE/<tag>_seed<seed>.npz`` (+ ``.pt`` weights)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{tag}_seed{seed}.npz"
    if path.exists() and not refresh:
        out = dict(np.load(path))
        out["state"] = torch.load(path.with_suffix(".pt"))
        return out
    print(f"  reference {tag} seed {seed} (load {load():.2f})", flush=True)
    out = run_reference(adata, seed)
    torch.save(out["state"].module.state_dict(), path.with_suffix(".pt"))
    np.savez(path, **{k: v for k, v in out.items() if k != "state"})
    out["state"] = out["state"].module.state_dict()
    return out


def velodash_uncertainty(model: VeloVI, adata: ad.AnnData) -> dict[str, np.ndarray]:
    """The pipeline's uncertainty stage on a model: 100 draws, extrinsic from the first 25."""
    intrinsic, extrinsic = uncertainty.uncertainty_from_sample_chunks(
        model.velocity_sample_chunks(100), adata.layers["Ms"], graph.candidate_neighbors(adata)
    )
    return {
        "intrinsic": intrinsic["cosine_variance"].to_numpy(),
        "extrinsic": extrinsic["cosine_variance"].to_numpy(),
    }


def with_reference_weights(adata: ad.AnnData, seed: int, state: dict) -> VeloVI:
    """A velodash model carrying the reference's trained weights (stage b)."""
    model = VeloVI(adata.layers["Ms"], adata.layers["Mu"], device="cpu", seed=seed)
    load_into_velodash(state, model.module)
    return model


def type_medians(values: np.ndarray, types: np.ndarray) -> np.ndarray:
    """log10 of the median per cell type, in ``TYPES`` order."""
    return np.log10([np.nanmedian(values[types == t]) for t in TYPES])


def agreement(runs: dict[str, dict], references: list[dict], types: np.ndarray) -> dict:
    """Per-type agreement of every run with the mean of the reference seeds, and the band."""
    out: dict[str, Any] = {}
    for kind in ("intrinsic", "extrinsic"):
        ref = np.array([type_medians(r[kind], types) for r in references])
        mean = ref.mean(0)

        def score(medians: np.ndarray, against: np.ndarray) -> dict[str, float]:
            return {
                "spearman": float(scipy.stats.spearmanr(medians, against)[0]),
                "mean_log10_difference": float(np.mean(medians - against)),
                "mean_abs_log10_difference": float(np.mean(np.abs(medians - against))),
            }

        band = [score(ref[i], np.delete(ref, i, axis=0).mean(0)) for i in range(len(ref))]
        out[kind] = {
            "reference_mean_log10": dict(zip(TYPES, mean.tolist(), strict=True)),
            "band": band,
            "runs": {},
        }
        for name, values in runs.items():
            medians = type_medians(values[kind], types)
            out[kind]["runs"][name] = {
                **score(medians, mean),
                "log10_medians": dict(zip(TYPES, medians.tolist(), strict=True)),
            }
    return out


def print_agreement(table: dict) -> None:
    """The agreement as two aligned tables (log10 type medians; ρ, mean Δ and mean |Δ|)."""
    for kind, part in table.items():
        print(f"\n{kind}: log10 median per type; ρ and Δ vs the mean of the reference seeds")
        header = "".join(f"{t[:7]:>8s}" for t in TYPES) + "       ρ       Δ     |Δ|"
        print(f"  {'':52s}{header}")
        mean = part["reference_mean_log10"]
        print(f"  {'reference (mean of seeds)':52s}" + "".join(f"{mean[t]:8.2f}" for t in TYPES))
        for i, b in enumerate(part["band"]):
            scores = f"{b['spearman']:8.2f}{'':8s}{b['mean_abs_log10_difference']:8.3f}"
            print(f"  {f'reference seed {i} vs the others':52s}{'':64s}{scores}")
        for name, r in part["runs"].items():
            medians = "".join(f"{r['log10_medians'][t]:8.2f}" for t in TYPES)
            scores = (
                f"{r['spearman']:8.2f}{r['mean_log10_difference']:8.2f}"
                f"{r['mean_abs_log10_difference']:8.3f}"
            )
            print(f"  {name[:52]:52s}{medians}{scores}")


def calibration(adata: ad.AnnData, velocity: np.ndarray, values: dict) -> dict:
    """Spearman/AUROC of both uncertainties against the direction error of ``velocity``."""
    error, defined = direction_error(velocity, adata.layers["true_velocity"])
    out = {"median_error": float(np.median(error[defined]))}
    for kind in ("intrinsic", "extrinsic"):
        out[kind] = uncertainty_calibration(values[kind], error, defined)
    return out


def truth_run(name: str, adata: ad.AnnData, seed: int, refresh: bool) -> dict[str, Any]:
    """Reference and velodash defaults on one simulated dataset with ground truth."""
    ref = cached_reference(adata, seed, name, refresh)
    model = VeloVI(adata.layers["Ms"], adata.layers["Mu"], device="cpu", seed=seed)
    started = time.perf_counter()
    history = model.train(TrainConfig(seed=seed))
    post = model.posterior()
    ours = velodash_uncertainty(model, adata)
    seconds = time.perf_counter() - started
    result = {
        "reference": {"epochs": int(ref["epochs"]), **calibration(adata, ref["velocity"], ref)},
        "velodash": {
            "epochs": history.stopped_epoch,
            "seconds": seconds,
            **calibration(adata, post.velocity, ours),
        },
    }
    for side, r in result.items():
        line = ", ".join(
            f"{k} ρ {r[k]['spearman']:+.2f} AUROC {r[k]['auroc']:.2f}"
            for k in ("intrinsic", "extrinsic")
        )
        print(f"  {name} {side:9s} ({r['epochs']} epochs): median error "
              f"{r['median_error']:.3f}; {line}", flush=True)  # fmt: skip
    return result


def main() -> None:
    """Parse options, run the parts, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="reference seeds (band)")
    parser.add_argument("--velodash-seeds", default="0,1,2")
    parser.add_argument("--parts", default="reference,stages,velodash,truth")
    parser.add_argument("--truth-size", default="3000x500")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--refresh", action="store_true", help="recompute cached references")
    parser.add_argument("--write-reference", type=Path, help="JSON of per-type reference values")
    parser.add_argument("--out", default="uncertainty")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    payload: dict[str, Any] = {"args": vars(args) | {"write_reference": None}}
    payload["environment"] = environment()
    raw, adata = pancreas()
    types = adata.obs["clusters"].to_numpy()
    seeds = [int(s) for s in args.seeds.split(",")]
    references = [cached_reference(adata, s, "pancreas", args.refresh) for s in seeds]
    runs: dict[str, dict] = {}

    if "stages" in parts:
        first = references[0]
        candidates = graph.candidate_neighbors(adata)
        for approx, name in ((True, "PCA space, as the tutorial"), (False, "over genes")):
            frame = uncertainty.extrinsic_uncertainty(
                first["samples"], adata.layers["Ms"], candidates, approx=approx
            )
            values = frame["cosine_variance"].to_numpy()
            stage = {"max_abs": float(np.abs(values - first["extrinsic"]).max())}
            stage["spearman_cells"] = float(scipy.stats.spearmanr(values, first["extrinsic"])[0])
            payload.setdefault("stage_c", {})[name] = stage
            runs[f"(c) ref seed 0 samples, our extrinsic {name}"] = {
                "intrinsic": first["intrinsic"],
                "extrinsic": values,
            }
            print(f"  (c) {name}: max |Δ| {stage['max_abs']:.2e}, cells ρ "
                  f"{stage['spearman_cells']:.4f}", flush=True)  # fmt: skip
        model = with_reference_weights(adata, 0, first["state"])
        runs["(b) ref seed 0 weights, velodash draws"] = velodash_uncertainty(model, adata)
        for name, options in VARIANTS.items():
            model = VeloVI(adata.layers["Ms"], adata.layers["Mu"], device="cpu", seed=0)
            started = time.perf_counter()
            history = model.train(TrainConfig(seed=0, **options))
            runs[f"(a) {name}"] = {
                **velodash_uncertainty(model, adata),
                "epochs": history.stopped_epoch,
                "train_s": time.perf_counter() - started,
            }
            print(f"  (a) {name}: {history.stopped_epoch} epochs (load {load():.2f})", flush=True)
    if "velodash" in parts:
        for seed in (int(s) for s in args.velodash_seeds.split(",")):
            result = run(raw, FitParams(seed=seed), threads=args.threads)
            runs[f"velodash fit, seed {seed}"] = {
                kind: result.obs[f"{kind}_uncertainty"].to_numpy()
                for kind in ("intrinsic", "extrinsic")
            }
            payload.setdefault("velodash_fits", {})[seed] = {
                "epochs": int(result.uns["velodash"]["history"]["stopped_epoch"]),
                "timings": dict(result.uns["velodash"]["timings"]),
            }
    for i, r in enumerate(references):
        runs[f"reference seed {seeds[i]}"] = r
    table = agreement(runs, references, types)
    payload["agreement"] = table
    print_agreement(table)

    if "truth" in parts:
        [(n_cells, n_genes)] = parse_sizes(args.truth_size)
        simulated = simulated_dataset(n_cells, n_genes, 0)
        sample = preprocess(ad.read_h5ad(SAMPLE), PreprocessConfig(seed=0))
        payload["truth"] = {
            f"scvelo_{args.truth_size}": truth_run(f"sim{args.truth_size}", simulated, 0, False),
            "sample": truth_run("sample", sample, 0, False),
        }
    payload["environment"]["load_at_end"] = load()
    write_json(args.out, payload)
    if args.write_reference:
        values = {
            kind: {
                "seeds": seeds,
                "log10_medians": [type_medians(r[kind], types).tolist() for r in references],
                "band_spearman": [b["spearman"] for b in table[kind]["band"]],
                "band_mean_abs_log10_difference": [
                    b["mean_abs_log10_difference"] for b in table[kind]["band"]
                ],
            }
            for kind in ("intrinsic", "extrinsic")
        }
        values["types"] = list(TYPES)
        values["command"] = (
            ".venv-bench/bin/python bench/bench_uncertainty.py "
            f"--seeds {args.seeds} --write-reference {args.write_reference}"
        )
        args.write_reference.write_text(json.dumps(values, indent=2) + "\n")
        print(f"wrote {args.write_reference}")


if __name__ == "__main__":
    main()
