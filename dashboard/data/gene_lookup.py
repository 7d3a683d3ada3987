"""Finding genes by name in a results file: exact, ignoring case, or the closest names (the
"did you mean" of every unknown gene). A mixin of :class:`dashboard.data.results.Results`."""

from __future__ import annotations

import difflib
import heapq
from functools import cached_property

import anndata as ad


class GeneLookup:
    """Gene-name lookups over ``self.adata.var_names`` (memoised per object)."""

    adata: ad.AnnData

    @cached_property
    def gene_names(self) -> list[str]:
        """Gene names (var_names) in file order."""
        return [str(g) for g in self.adata.var_names]

    @cached_property
    def gene_index(self) -> dict[str, int]:
        """Gene name -> column index."""
        return {g: j for j, g in enumerate(self.gene_names)}

    @cached_property
    def _by_lower_name(self) -> dict[str, str]:
        """Lower-case name -> gene (the first in file order when two differ only in case)."""
        lower: dict[str, str] = {}
        for gene in self.gene_names:
            lower.setdefault(gene.lower(), gene)
        return lower

    def gene_ignoring_case(self, name: str) -> str | None:
        """The gene called ``name`` ignoring case and surrounding spaces, or None."""
        return self._by_lower_name.get(name.strip().lower())

    def close_genes(self, name: str, limit: int = 5, cutoff: float = 0.6) -> list[str]:
        """Up to ``limit`` genes whose names are close to ``name``, ignoring case (the "did you
        mean" of every unknown gene): difflib's similarity ratio (at least ``cutoff``, as
        ``difflib.get_close_matches``), ties broken by the number of letters in the same place
        (a typo beats a shifted name), then file order."""
        query = name.strip().lower()
        matcher = difflib.SequenceMatcher(b=query)
        scored = []
        for order, candidate in enumerate(self._by_lower_name):
            matcher.set_seq1(candidate)
            if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
                ratio = matcher.ratio()
                if ratio >= cutoff:
                    in_place = sum(a == b for a, b in zip(candidate, query, strict=False))
                    scored.append((-ratio, -in_place, order, candidate))
        return [self._by_lower_name[c] for *_, c in heapq.nsmallest(limit, scored)]

    def resolve_gene(self, gene: str) -> int:
        """Column index of ``gene``; raises KeyError with close matches when it is unknown."""
        if gene in self.gene_index:
            return self.gene_index[gene]
        close = self.close_genes(gene)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown gene {gene!r} (the results hold {len(self.gene_names)} genes).{hint}"
        )
