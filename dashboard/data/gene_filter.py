"""Why a name is not in the gene table: the preprocessing step that removed that gene, or no
gene of that name in the dataset (with close fitted names).

Fits record the names each preprocessing step removed
(``uns['velodash_preprocess']['dropped_genes']``, written by ``core.preprocess``); results
written before that record get the message without the step.
"""

from __future__ import annotations

from typing import NamedTuple

from dashboard.data.results import Results


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
    close = results.close_genes(name)
    return sentence + (f" Did you mean {', '.join(close)}?" if close else "")
