"""Spliced/unspliced counts for a dataset that has none, predicted from a reference that has them.

:func:`predict_splicing` checks the pair (clear errors for a reference without S/U, a query that
already has them, too few shared genes, gene ids of different styles or species), trains
SplicedVAE (:mod:`core.splicing_vae`) on the reference's cells over the genes the two share,
measures it on the reference cells it held out (:mod:`core.splicing_validation`), predicts
each query cell's spliced share r and forms ``spliced = r·total``, ``unspliced = (1 − r)·total``.
The returned query AnnData then goes through the usual pipeline; the returned record goes to
``uns['velodash']['splicing']``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from core.io import DatasetError
from core.splicing_vae import SplicedVAE, SplicingConfig
from core.splicing_validation import ratio_metrics

#: Fewest genes the reference and the query must share.
MIN_SHARED_GENES = 200
#: Layer holding a query's raw counts when X does not (as scVI and scanpy keep them).
COUNTS_LAYER = "counts"
_ENSEMBL = re.compile(r"^ENS([A-Z]{3})?G\d{6,}(\.\d+)?$")
_SPECIES_PREFIX = {"": "human", "MUS": "mouse", "DAR": "zebrafish", "RNO": "rat"}


def has_splicing(adata: AnnData) -> bool:
    """Whether ``adata`` holds both a 'spliced' and an 'unspliced' layer."""
    return "spliced" in adata.layers and "unspliced" in adata.layers


def gene_style(names) -> str:
    """How genes are named, in words: "Ensembl ids (mouse)", "symbols (human-style, ACTB)",
    "symbols (mouse-style, Actb)" or "symbols"; from the majority of the names."""
    names = [str(n) for n in names]
    if not names:
        return "no gene names"
    ensembl = [_ENSEMBL.match(n) for n in names]
    if sum(m is not None for m in ensembl) > len(names) / 2:
        prefixes = [m.group(1) or "" for m in ensembl if m is not None]
        prefix = max(set(prefixes), key=prefixes.count)
        return f"Ensembl ids ({_SPECIES_PREFIX.get(prefix, 'ENS' + prefix + 'G')})"
    words = [n for n in names if n[:1].isalpha() and any(c.isalpha() for c in n[1:])]
    upper = sum(n.isupper() for n in words)
    title = sum(n[0].isupper() and not n[1:].isupper() for n in words)
    if upper > 0.8 * len(words):
        return "symbols (human-style, e.g. ACTB)"
    if title > 0.8 * len(words):
        return "symbols (mouse-style, e.g. Actb)"
    return "symbols"


def check_pair(reference: AnnData, query: AnnData, min_genes: int = MIN_SHARED_GENES) -> list:
    """The genes the two share, in the query's order; raises DatasetError (what is wrong, how
    to fix it) for a reference without S/U, a query with them, or too few shared genes."""
    if not has_splicing(reference):
        raise DatasetError(
            "the splicing reference has no 'spliced' and 'unspliced' layers (it has "
            f"{', '.join(reference.layers) or 'none'}); choose a reference counted with "
            "velocyto, STARsolo or kallisto|bustools, such as the pancreas subset."
        )
    if has_splicing(query):
        raise DatasetError(
            "this dataset already has 'spliced' and 'unspliced' layers, so a splicing "
            "reference is not needed: fit it without --splicing-reference (its own counts are "
            "better than predicted ones)."
        )
    shared = query.var_names.intersection(reference.var_names, sort=False)
    if len(shared) >= min_genes:
        return list(shared)
    ref_style, query_style = gene_style(reference.var_names), gene_style(query.var_names)
    if ref_style != query_style:
        why = (
            f"the reference names its genes by {ref_style} and this dataset by {query_style}; "
            "rename one to the other's ids (e.g. with a BioMart table) or choose a reference "
            "of the same species and naming"
        )
    else:
        why = (
            "both name genes the same way, so they probably measure different genes; "
            "choose a reference of the same species and gene panel"
        )
    raise DatasetError(
        f"the splicing reference and this dataset share only {len(shared)} genes (at least "
        f"{min_genes} are needed): {why}."
    )


def query_counts(query: AnnData) -> sp.csr_matrix:
    """The query's raw total counts (N, G) float32 CSR: ``layers['counts']`` when present, else
    X. Raises DatasetError for negative, non-finite or non-integer (normalised) values."""
    where = f"layers['{COUNTS_LAYER}']" if COUNTS_LAYER in query.layers else "X"
    matrix = query.layers[COUNTS_LAYER] if COUNTS_LAYER in query.layers else query.X
    if matrix is None:
        raise DatasetError("this dataset has no X matrix; store its raw counts in X.")
    counts = sp.csr_matrix(matrix, dtype=np.float32)
    values = counts.data
    if not np.isfinite(values).all() or (values < 0).any():
        raise DatasetError(f"{where} holds negative, NaN or infinite values; store raw counts.")
    if not np.allclose(values, np.round(values), atol=1e-3):
        raise DatasetError(
            f"{where} holds non-integer values (normalised or log-transformed?): predicting "
            f"splicing needs raw UMI counts; put them in X or in layers['{COUNTS_LAYER}']."
        )
    return counts


def _reference_genes(reference: AnnData, shared: list, min_shared_counts: int) -> list:
    """Shared genes with at least ``min_shared_counts`` spliced + unspliced reference counts in
    cells where both are present (scVelo's ``filter_genes``): others carry no ratio signal."""
    ref = reference[:, shared]
    s = sp.csr_matrix(ref.layers["spliced"], dtype=np.float32)
    u = sp.csr_matrix(ref.layers["unspliced"], dtype=np.float32)
    both = (s > 0).multiply(u > 0)
    counts = np.asarray((s + u).multiply(both).sum(0)).ravel()
    return [g for g, c in zip(shared, counts, strict=True) if c >= min_shared_counts]


def split_counts(total: sp.csr_matrix, ratio: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """spliced = ratio·total and unspliced = (1 − ratio)·total (N, G) CSR float32, with the
    sparsity of ``total`` (a gene with no counts has neither)."""
    spliced = total.multiply(ratio).tocsr().astype(np.float32)
    return spliced, (total - spliced).tocsr().astype(np.float32)


class Prediction(NamedTuple):
    """What :func:`predict_splicing` returns: the query with predicted S/U, the record for
    ``uns['velodash']['splicing']``, and the held-out reference cells twice (AnnData with raw
    counts): with their true S/U and with predicted ones, for the velocity comparison."""

    query: AnnData
    record: dict
    held_out_true: AnnData
    held_out_predicted: AnnData


def predict_splicing(
    reference: AnnData,
    query: AnnData,
    config: SplicingConfig | None = None,
    *,
    min_shared_counts: int = 20,
    device: str = "cpu",
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Prediction:
    """Train SplicedVAE on ``reference`` and give ``query`` predicted S/U layers.

    The query comes back over the genes used, with ``layers['spliced'|'unspliced']``, X the
    total counts, obs/obsm kept. The record holds the model options, gene counts, the held-out
    ratio metrics (:func:`core.splicing_validation.ratio_metrics`) and those of each gene's
    mean share (the baseline without the head's cell-to-cell variation), the training history
    and timings. ``progress(fraction, message)`` is called per epoch.
    """
    config = config or SplicingConfig()
    report = progress or (lambda _f, _m: None)
    shared = check_pair(reference, query)
    totals_query = query_counts(query[:, shared])
    genes = _reference_genes(reference, shared, min_shared_counts)
    if len(genes) < MIN_SHARED_GENES:
        raise DatasetError(
            f"only {len(genes)} of the {len(shared)} shared genes have {min_shared_counts} "
            f"spliced + unspliced counts in the reference (at least {MIN_SHARED_GENES} are "
            "needed); choose a larger reference or lower --min-shared-counts."
        )
    ref = reference[:, genes]
    s = sp.csr_matrix(ref.layers["spliced"], dtype=np.float32).toarray()
    total = s + sp.csr_matrix(ref.layers["unspliced"], dtype=np.float32).toarray()
    model = SplicedVAE(total, s, config, device=device)

    def on_epoch(epoch) -> None:
        report(epoch.epoch / epoch.max_epochs, f"SplicedVAE epoch {epoch.epoch}/{epoch.max_epochs}")

    started = time.perf_counter()
    history = model.train(on_epoch, should_stop)
    trained = time.perf_counter() - started
    held = model.held_out_cells
    predicted_held = model.predict_ratio(total[held])
    gene_mean = s[model.train_cells].sum(0) / np.maximum(total[model.train_cells].sum(0), 1.0)
    metrics = ratio_metrics(predicted_held, s[held], total[held], genes, seed=config.seed)
    baseline = ratio_metrics(
        np.broadcast_to(gene_mean, predicted_held.shape), s[held], total[held], genes
    )
    position = {g: i for i, g in enumerate(shared)}
    totals = totals_query[:, [position[g] for g in genes]]
    out = _with_counts(query[:, genes], totals, model.predict_ratio(totals.toarray()))
    held_ref = ref[held]
    held_true = AnnData(
        X=sp.csr_matrix(s[held]),
        obs=held_ref.obs.copy(),
        var=held_ref.var.copy(),
        layers={
            "spliced": sp.csr_matrix(s[held]),
            "unspliced": sp.csr_matrix(total[held] - s[held]),
        },
    )
    held_predicted = _with_counts(held_true, sp.csr_matrix(total[held]), predicted_held)
    record = {
        "predicted": True,
        "method": "SplicedVAE",
        "model": asdict(config),
        "n_genes_shared": len(shared),
        "n_genes": len(genes),
        "n_genes_query": int(query.n_vars),
        "n_cells_train": len(model.train_cells),
        "n_cells_held_out": len(held),
        "held_out": metrics,
        "gene_mean_baseline": {k: v for k, v in baseline.items() if not isinstance(v, dict)},
        "history": {
            "elbo_train": np.asarray(history.elbo_train, dtype=np.float64),
            "elbo_validation": np.asarray(history.elbo_validation, dtype=np.float64),
        },
        "timings": {"train": round(trained, 3)},
    }
    return Prediction(out, record, held_true, held_predicted)


def _with_counts(template: AnnData, totals: sp.csr_matrix, ratio: np.ndarray) -> AnnData:
    """A copy of ``template``'s obs, var and obsm with X = ``totals`` and the S/U they split
    into at ``ratio``."""
    spliced, unspliced = split_counts(totals, ratio)
    return AnnData(
        X=totals,
        obs=template.obs.copy(),
        var=template.var.copy(),
        obsm=dict(template.obsm),
        layers={"spliced": spliced, "unspliced": unspliced},
    )
