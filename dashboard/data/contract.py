"""The results contract (DESIGN.md) as the dashboard reads it: the slots every results file
holds, the optional features an analysis adds, and the check that a file is one.

Slots are either REQUIRED (every ``velodash fit`` writes them) or belong to an optional
*feature* (an analysis that ``--skip`` can leave out), with the reason it can be absent.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import anndata as ad

from core.derived_layers import STATE_ASSIGNMENT, STATE_NAMES

#: The four posterior states, in the order of ``layers['state_assignment']``'s codes.
STATES = STATE_NAMES

REQUIRED_SLOTS: tuple[str, ...] = (
    "layers/Ms",
    "layers/Mu",
    "layers/velocity",
    "layers/fit_t",
    "var/fit_alpha",
    "var/fit_beta",
    "var/fit_gamma",
    "var/fit_t_",
    "obs/latent_time",
    "obsm/X_umap",
    "uns/velodash",
)

# feature -> (slots it needs, why it can be absent)
FEATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "intrinsic": (
        ("obs/intrinsic_uncertainty",),
        "intrinsic uncertainty was not computed (fitted with --skip intrinsic)",
    ),
    "extrinsic": (
        ("obs/extrinsic_uncertainty",),
        "extrinsic uncertainty was not computed (fitted with --skip extrinsic or --skip graph)",
    ),
    "coherence": (
        ("varm/coherence",),
        "velocity coherence was not computed (fitted with --skip coherence or --skip graph)",
    ),
    "permutation": (
        ("var/permutation_score", "varm/permutation_effect"),
        "permutation scores were not computed (fitted with --skip permutation)",
    ),
    "baseline": (
        ("layers/velocity_baseline",),
        "the scVelo steady-state baseline was not computed (fitted with --skip baseline)",
    ),
    "streams": (
        ("obsm/velocity_umap",),
        "no projected velocity obsm['velocity_umap'] (fitted with --skip graph)",
    ),
    "states": ((f"layers/{STATE_ASSIGNMENT}",), "no posterior state assignment"),
    "fitted": (("layers/fit_s", "layers/fit_u"), "no posterior predictive means (fit_s/fit_u)"),
    "history": (("uns/velodash/history",), "no training history was recorded"),
}


#: feature -> the fit stage that lands it (`core.staged_results.LATE_STAGES`); the others land
#: with the posterior and the graph.
FEATURE_STAGES = {
    "intrinsic": "uncertainty",
    "extrinsic": "uncertainty",
    "coherence": "coherence",
    "permutation": "permutation",
    "baseline": "baseline",
}


class ResultsError(ValueError):
    """Not a usable velodash results file; the message says what is wrong and how to fix it."""


def has_slot(adata: ad.AnnData, slot: str, layers: Collection[str] | None = None) -> bool:
    """Whether ``slot`` ("layers/Ms", "uns/velodash/history", …) exists in ``adata``;
    ``layers``: the layer names when they are not in ``adata`` (a results file read lazily)."""
    kind, *keys = slot.split("/")
    container: Any = {
        "layers": adata.layers if layers is None else layers,
        "var": adata.var,
        "varm": adata.varm,
        "obs": adata.obs,
        "obsm": adata.obsm,
        "uns": adata.uns,
    }[kind]
    for key in keys:
        if not hasattr(container, "__contains__") or key not in container:
            return False
        container = container[key]
    return True


def validate_results(adata: ad.AnnData, layers: Collection[str] | None = None) -> None:
    """Raise :class:`ResultsError` naming every missing REQUIRED slot of the results contract
    (``layers`` as in :func:`has_slot`)."""
    layers = adata.layers if layers is None else layers
    missing = [slot for slot in REQUIRED_SLOTS if not has_slot(adata, slot, layers)]
    if not missing:
        return
    hint = (
        "It looks like a counts file (it has spliced/unspliced layers): fit it first with "
        "`velodash fit <file>` or the Fit button on the home page."
        if {"spliced", "unspliced"} <= set(layers)
        else "Open a file written by `velodash fit` (or fit your counts file first)."
    )
    raise ResultsError(f"Not a velodash results file: missing {', '.join(missing)}. {hint}")
