"""Controls and gene resolution shared by the multi-gene pages (portrait grid, heatmap): genes
come from a ranking (top N) or from a list the user types or pastes."""

from __future__ import annotations

from dash import dcc, html

from dashboard.data.genesets import RANKINGS, available_rankings, parse_gene_list, rank_genes
from dashboard.data.results import Results

LIST = "list"


def number(value, default: int, lo: int, hi: int) -> int:
    """``value`` as an int clipped to [lo, hi]; ``default`` when it is not a number."""
    try:
        return max(lo, min(hi, int(float(value))))
    except (TypeError, ValueError):
        return default


def gene_choice_controls(
    prefix: str,
    results: Results,
    rank: str | None,
    n: int,
    genes: str | None,
    n_range: tuple[int, int],
) -> list[html.Div]:
    """Ranking radio (``<prefix>-rank``: the available rankings and "my list"), number of genes
    (``<prefix>-n``), and the gene-list box (``<prefix>-genes``) with its button
    (``<prefix>-show``). A URL ``genes`` list selects "my list"."""
    rankings = available_rankings(results)
    options = [{"label": RANKINGS[k][0], "value": k} for k in rankings]
    options.append({"label": "my gene list", "value": LIST})
    if genes:
        rank = LIST
    elif rank not in {o["value"] for o in options}:
        rank = rankings[0] if rankings else LIST
    return [
        html.Div(
            [
                html.Label("Genes: top by", className="label"),
                dcc.RadioItems(options, rank, id=f"{prefix}-rank", inline=True),
            ],
            className="control",
        ),
        html.Div(
            [
                html.Label("How many", className="label"),
                dcc.Slider(
                    *n_range,
                    step=1,
                    value=n,
                    id=f"{prefix}-n",
                    marks=None,
                    tooltip={"placement": "bottom", "always_visible": True},
                ),
            ],
            className="control",
        ),
        html.Div(
            [
                html.Label("Gene list (type or paste; commas, spaces or lines)", className="label"),
                html.Div(
                    [
                        dcc.Textarea(
                            id=f"{prefix}-genes",
                            value=(genes or "").replace(",", ", "),
                            placeholder=", ".join(results.gene_names[:3]),
                            className="gene-list",
                        ),
                        html.Button(
                            "Show list", id=f"{prefix}-show", className="btn btn-small", n_clicks=0
                        ),
                    ],
                    className="gene-list-row",
                ),
            ],
            className="control control-wide",
        ),
    ]


def resolve_genes(
    results: Results,
    rank: str | None,
    n: int | None,
    text: str | None,
    default_n: int,
    n_range: tuple[int, int],
) -> tuple[list[str], str | None, dict[str, str | None]]:
    """(genes to show, a message about what was left out or why nothing is shown, the URL
    query for this choice). "my list" parses ``text``; a ranking takes its top ``n``."""
    n = number(n, default_n, *n_range)
    if rank == LIST:
        parsed = parse_gene_list(results, text)
        message = parsed.message()
        if not parsed.genes and not message:
            message = "Type or paste gene names, then press Show list."
        return parsed.genes, message, {"genes": ",".join(parsed.genes) or None}
    try:
        return rank_genes(results, rank, n), None, {"rank": rank, "n": str(n)}
    except ValueError as err:
        return [], str(err), {}
