"""Why a name is not in the gene table: the preprocessing step that removed that gene, or no
gene of that name in the dataset (with close fitted names).

Fits record the names each preprocessing step removed
(``uns['velodash_preprocess']['dropped_genes']``, written by ``core.preprocess``); results
written before that record get the message without the step.
"""

from __future__ import annotations

import difflib
import heapq
from typing import NamedTuple

from dashboard.results import Results


class Step(NamedTuple):
    """A preprocessing step that removes genes, as a biologist reads it."""

    name: str
    rule: str  # what it asks of a gene; ``{…}`` fields are fit parameters
    before: str  # ``uns['velodash_preprocess']`` count of genes before the step
    after: str  # … and after it


#: The steps of ``core.preprocess.GENE_FILTER_STEPS``, in pipeline order. A test pins the keys
#: to core's (importing core here would load scanpy into the web process).
STEPS = {
    "min_shared_counts": Step(
        "the shared-counts filter",
        "it needs at least {min_shared_counts} counts in cells that detect both spliced and "
        "unspliced RNA",
        "n_genes_input",
        "n_genes_filtered",
    ),
    "highly_variable": Step("'highly variable genes'", "", "n_genes_filtered", "n_genes_hvg"),
    "velocity_genes": Step(
        "veloVI's velocity-gene selection",
        "it needs a steady-state fit with r² > 0 and γ > 0",
        "n_genes_hvg",
        "n_genes_velocity",
    ),
}


def _by_lower_name(results: Results) -> dict[str, str]:
    """Lower-case name -> fitted gene (the first in file order when two differ only in case)."""

    def build() -> dict[str, str]:
        lower: dict[str, str] = {}
        for gene in results.gene_names:
            lower.setdefault(gene.lower(), gene)
        return lower

    return results.memo(("genes_by_lower_name",), build)


def fitted_gene(results: Results, name: str) -> str | None:
    """The fitted gene called ``name`` ignoring case and surrounding spaces, or None."""
    return _by_lower_name(results).get(name.strip().lower())


def close_genes(results: Results, name: str, limit: int = 5, cutoff: float = 0.6) -> list[str]:
    """Up to ``limit`` fitted genes whose names are close to ``name``, ignoring case: difflib's
    similarity ratio (at least ``cutoff``, as ``difflib.get_close_matches``), ties broken by
    the number of letters in the same place (a typo beats a shifted name), then file order."""
    lower = _by_lower_name(results)
    query = name.strip().lower()
    matcher = difflib.SequenceMatcher(b=query)
    scored = []
    for order, candidate in enumerate(lower):
        matcher.set_seq1(candidate)
        if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
            ratio = matcher.ratio()
            if ratio >= cutoff:
                in_place = sum(a == b for a, b in zip(candidate, query, strict=False))
                scored.append((-ratio, -in_place, order, candidate))
    return [lower[c] for *_, c in heapq.nsmallest(limit, scored)]


def dropped_at(results: Results, name: str) -> tuple[str, str] | None:
    """(gene as the dataset spells it, step of :data:`STEPS`) when preprocessing removed a
    gene called ``name`` (ignoring case); None when it did not, or the fit kept no record."""

    def build() -> dict[str, tuple[str, str]]:
        record = results.preprocess_record().get("dropped_genes", {})
        return {
            str(gene).lower(): (str(gene), step)
            for step in reversed(STEPS)
            for gene in record.get(step, ())
        }

    return results.memo(("dropped_genes",), build).get(name.strip().lower())


def step_detail(results: Results, step: str) -> str:
    """What ``step`` of :data:`STEPS` asks of a gene and how many genes it kept (parts the
    results do not record are left out)."""
    rule, before, after = STEPS[step][1:]
    try:
        rule = rule.format_map(results.info.get("params", {}))
    except KeyError:  # a fit without that parameter recorded
        rule = ""
    counts = results.preprocess_record()
    kept = (
        f"{int(counts[after])} of {int(counts[before])} genes kept"
        if before in counts and after in counts
        else ""
    )
    return "; ".join(part for part in (rule, kept) if part)


def unfitted_reason(results: Results, name: str) -> str:
    """One sentence on why ``name`` is not a fitted gene: the step that removed it, else that
    the dataset has no such gene (when the fit recorded its steps), else that it is not among
    the fitted genes; both of the latter suggest close fitted names."""
    dropped = dropped_at(results, name)
    if dropped is not None:
        gene, step = dropped
        detail = step_detail(results, step)
        return (
            f"{gene} is not among the fitted genes: it was filtered out at {STEPS[step].name}"
            + (f" ({detail})." if detail else ".")
        )
    if "dropped_genes" in results.preprocess_record():
        sentence = f"No gene named '{name.strip()}' in this dataset."
    else:
        sentence = f"Unknown gene '{name.strip()}': not among the fitted genes of this dataset."
    close = close_genes(results, name)
    return sentence + (f" Did you mean {', '.join(close)}?" if close else "")
