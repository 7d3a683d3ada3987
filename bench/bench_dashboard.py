"""Dashboard server-side latency and payload sizes on fake results (no browser).

Measures, at 5 000 and 50 000 cells × 300 genes:
* gene click → phase portrait: ``phase_portrait_figure`` + JSON serialisation, for genes not seen
  before (cold per gene: column extraction + fitted curve + figure);
* colour change → ``recolor_patch`` + JSON of the Patch payload (typed float32 arrays);
* at 50 000 cells, the JSON bytes of each page's figures.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_dashboard.py`` (prints a Markdown table).
Targets: < 100 ms per interaction and < 5 MB per page at 50 000 cells.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from statistics import median

from plotly.io.json import to_json_plotly

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_results import make_fake_results

from dashboard import figures as F
from dashboard.data.genesets import rank_genes
from dashboard.data.results import Results

N_GENES = 300
N_TRIALS = 10


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


def interaction_times(results: Results) -> dict[str, float]:
    """Median milliseconds of a gene click (portrait) and of a colour change (Patch), each on
    genes not seen before."""
    genes = results.gene_names
    portrait = [
        _ms(lambda g=g: F.phase_portrait_figure(results, g).to_json()) for g in genes[:N_TRIALS]
    ]
    recolor = [
        _ms(lambda g=g: to_json_plotly(F.recolor_patch(results, g, previous=None)))
        for g in genes[N_TRIALS : 2 * N_TRIALS]
    ]
    patch_bytes = len(to_json_plotly(F.recolor_patch(results, genes[-1], previous=None)))
    return {
        "portrait_ms": median(portrait),
        "recolor_ms": median(recolor),
        "patch_mb": patch_bytes / 1e6,
    }


def page_payloads(results: Results) -> dict[str, tuple[float, float]]:
    """Per page: (MB of JSON of all its figures, seconds to build them the first time)."""
    gene = results.gene_names[0]
    pages = {
        "/ (training curve)": lambda: [F.training_curve_figure(results.history())],
        "/stream (UMAP + streams)": lambda: [F.embedding_figure(results, velocity="streams")],
        "/uncertainty": lambda: [
            F.uncertainty_figures(results),
            F.uncertainty_by_type_figure(results, "intrinsic"),
            F.uncertainty_by_type_figure(results, "extrinsic"),
        ],
        "/genes (5 figures + table)": lambda: [
            F.phase_portrait_figure(results, gene),
            F.gene_over_time_figure(results, gene),
            F.gene_velocity_embedding_figure(results, gene),
            F.permutation_effect_figure(results, gene),
            F.baseline_agreement_figure(results, gene),
        ],
        "/coherence": lambda: [F.coherence_cdf_figure(results)],
        "/permutation": lambda: [
            F.permutation_density_figure(results),
            F.permutation_heatmap_figure(results),
        ],
        "/stream, veloVI + scVelo + agreement": lambda: [
            F.embedding_figure(results, velocity="streams", source="both", confidence=True),
            F.agreement_figure(results),
        ],
        "/portraits (16 genes)": lambda: [
            F.portrait_grid_figure(results, rank_genes(results, "permutation", 16))
        ],
        "/heatmap (30 genes)": lambda: [
            F.heatmap_figure(results, rank_genes(results, "permutation", 30))
        ],
    }
    out = {}
    for page, build in pages.items():
        start = time.perf_counter()
        payload = sum(len(fig.to_json()) for fig in build())
        if page.startswith("/genes"):
            payload += len(json.dumps(results.gene_table().to_dict("records")))
        out[page] = (payload / 1e6, time.perf_counter() - start)
    return out


def main() -> None:
    rows = []
    pages = {}
    for n_cells in (5_000, 50_000):
        results = Results(make_fake_results(n_cells=n_cells, n_genes=N_GENES, seed=0))
        F.phase_portrait_figure(results, results.gene_names[-1]).to_json()  # warm plotly
        times = interaction_times(results)
        rows.append(
            f"| {n_cells:,} | {times['portrait_ms']:.0f} | {times['recolor_ms']:.0f} "
            f"| {times['patch_mb']:.2f} |"
        )
        if n_cells == 50_000:
            pages = page_payloads(results)
    print("| cells | gene click → portrait (ms) | colour change → Patch (ms) | Patch (MB) |")
    print("|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\n| page at 50,000 cells | JSON of its figures (MB) | first build (s) |")
    print("|---|---:|---:|")
    for page, (mb, seconds) in pages.items():
        print(f"| {page} | {mb:.2f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
