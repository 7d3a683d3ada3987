"""Which genes a multi-gene view (portrait grid, latent-time heatmap) shows: the top N by a
ranking, or a list the user typed or pasted."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from dashboard.data.results import Results

#: ranking key -> (label, what it needs)
RANKINGS: dict[str, tuple[str, str]] = {
    "permutation": ("permutation score", "permutation"),
    "likelihood": ("fit likelihood", "likelihood"),
    "coherence": ("coherence (mean over cell types)", "coherence"),
}
MAX_GENES = 64


def available_rankings(results: Results) -> list[str]:
    """The rankings these results support, in :data:`RANKINGS` order."""
    has = {
        "permutation": results.has("permutation"),
        "likelihood": "fit_likelihood" in results.adata.var,
        "coherence": results.has("coherence"),
    }
    return [key for key in RANKINGS if has[key]]


def ranking_scores(results: Results, by: str) -> np.ndarray:
    """float64 (G,) score per gene for ranking ``by`` (higher is better; NaN = unranked).
    Raises ValueError for an unknown ranking or one the results cannot provide."""
    if by not in RANKINGS:
        raise ValueError(f"unknown ranking {by!r}; choose from {', '.join(RANKINGS)}")
    if by not in available_rankings(results):
        raise ValueError(f"these results have no {RANKINGS[by][0]} to rank genes by")
    if by == "permutation":
        return results.adata.var["permutation_score"].to_numpy(dtype=np.float64)
    if by == "likelihood":
        return results.adata.var["fit_likelihood"].to_numpy(dtype=np.float64)
    coherence = results.varm_matrix("coherence").astype(np.float64)
    counts = np.isfinite(coherence).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(coherence, 1) / counts, np.nan)


def rank_genes(results: Results, by: str, n: int) -> list[str]:
    """The ``n`` best genes by ranking ``by`` (best first; ties in file order, NaN never)."""
    scores = ranking_scores(results, by)
    order = np.argsort(np.where(np.isfinite(scores), -scores, np.inf), kind="stable")
    order = order[np.isfinite(scores[order])][: max(0, int(n))]
    return [results.gene_names[j] for j in order]


@dataclass(frozen=True)
class GeneList:
    """A parsed gene list: the ``genes`` found (results' spelling, input order, no repeats),
    the ``unknown`` names with ``suggestions`` each, and whether it was ``truncated``."""

    genes: list[str]
    unknown: list[str] = field(default_factory=list)
    suggestions: dict[str, list[str]] = field(default_factory=dict)
    truncated: bool = False

    def message(self) -> str | None:
        """A sentence about what was left out, or None."""
        parts = []
        if self.unknown:
            named = []
            for name in self.unknown[:10]:
                hint = self.suggestions.get(name)
                named.append(f"{name} (did you mean {', '.join(hint)}?)" if hint else name)
            more = f" and {len(self.unknown) - 10} more" if len(self.unknown) > 10 else ""
            parts.append(f"Not in these results: {', '.join(named)}{more}.")
        if self.truncated:
            parts.append(f"Only the first {MAX_GENES} genes are shown.")
        return " ".join(parts) or None


def parse_gene_list(results: Results, text: str | None, limit: int = MAX_GENES) -> GeneList:
    """Genes named in ``text`` (separated by commas, semicolons, spaces or new lines; exact
    names first, else a unique case-insensitive match, as biologists type ``sox9`` for
    ``Sox9``). Unknown names come back with up to three suggestions."""
    names = [n for n in re.split(r"[\s,;]+", text or "") if n]
    lower: dict[str, list[str]] = {}
    for gene in results.gene_names:
        lower.setdefault(gene.lower(), []).append(gene)
    genes: list[str] = []
    unknown: list[str] = []
    suggestions: dict[str, list[str]] = {}
    for name in names:
        match = name if name in results.gene_index else None
        if match is None and len(lower.get(name.lower(), [])) == 1:
            match = lower[name.lower()][0]
        if match is None:
            if name not in unknown:
                unknown.append(name)
                close = results.close_genes(name, limit=3)
                if close:
                    suggestions[name] = close
        elif match not in genes:
            genes.append(match)
    return GeneList(genes[:limit], unknown, suggestions, len(genes) > limit)
