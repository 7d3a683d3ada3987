"""The tables behind each page's "download data" button: what the page shows, as a DataFrame
(written as CSV by the page). Pure functions of the results; no Dash."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard.data.projections import agreement, projected_velocity
from dashboard.data.results import Results
from dashboard.data.values import ColorValues


def cell_type_labels(results: Results, cells: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Cell-type name (str array) of each of ``cells`` (indices or a boolean mask; default all),
    "" for a cell whose type is not one of the fit's (code -1 picks the trailing "")."""
    return np.asarray([*results.cell_types, ""])[results.cell_type_codes[cells]]


def cells_table(
    results: Results, color: ColorValues | None = None, sources: tuple[str, ...] = ("velovi",)
) -> pd.DataFrame:
    """One row per cell: id, cell type, UMAP, latent time, uncertainties, the projected velocity
    of each of ``sources`` (and their cosine when both are present), and the ``color`` shown."""
    table = pd.DataFrame(
        {
            "cell_id": results.cell_ids,
            "cell_type": cell_type_labels(results),
            "umap_1": results.umap[:, 0],
            "umap_2": results.umap[:, 1],
            "latent_time": results.latent_time,
        }
    )
    for key in ("intrinsic", "extrinsic"):
        if results.has(key):
            table[f"{key}_uncertainty"] = results.obs_numeric(f"{key}_uncertainty")
    for source in sources:
        v = projected_velocity(results, source)
        if v is not None:
            table[f"velocity_{source}_umap_1"] = v[:, 0]
            table[f"velocity_{source}_umap_2"] = v[:, 1]
    if set(sources) == {"velovi", "scvelo"} and (cos := agreement(results)) is not None:
        table["velovi_scvelo_cosine"] = cos
    if color is not None and color.key not in table:
        if color.kind == "categorical":
            names = np.asarray([*(color.categories or []), ""])
            table[color.label] = names[color.values]
        else:
            table[color.label] = color.values
    return table


def fit_parameters(results: Results, genes: list[str]) -> pd.DataFrame:
    """Per gene: the fitted rates and switch time (scVelo ``fit_*`` convention), likelihood,
    MSE and permutation score, in the order of ``genes``."""
    table = results.gene_table().set_index("gene")
    columns = [
        c
        for c in (
            "alpha",
            "beta",
            "gamma",
            "switch_time",
            "fit_likelihood",
            "fit_mse",
            "permutation_score",
        )
        if c in table
    ]
    return table.loc[genes, columns].reset_index()
