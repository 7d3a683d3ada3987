"""The velocity page without a browser (issue 15, item 10): the curated "Colour by" list, the
state of the two colour controls when a gene colours the cells (and the category legend going
away, in a rebuilt figure and in the recolouring Patch), source colours that stand apart from
every cell-type palette with veloVI drawn on top, and axis ranges and graph height that let the
UMAP fill the plot."""

from __future__ import annotations

import copy
import re
from contextvars import copy_context

import dash
import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict
from fake_results import make_fake_results

from dashboard.data.results import Results
from dashboard.figures import embedding as E
from dashboard.figures.common import cell_type_colors, cielab

#: scanpy's default palette for up to 20 categories (scanpy.plotting.palettes.default_20)
SCANPY_20 = [
    "#1f77b4", "#ff7f0e", "#279e68", "#d62728", "#aa40fc", "#8c564b", "#e377c2", "#b5bd61",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5", "#ad494a", "#8c6d31",
]  # fmt: skip


def _with_columns(seed: int = 3):
    """Fake results whose obs also has what users' files and the fit add: a categorical
    annotation, raw numeric columns and scVelo's velocity_length."""
    adata = make_fake_results(n_cells=300, n_genes=20, seed=seed)
    n = adata.n_obs
    adata.obs["n_counts"] = np.arange(n, dtype=np.float32)
    adata.obs["batch"] = np.where(np.arange(n) % 2, "b1", "b2")
    adata.obs["batch"] = adata.obs["batch"].astype("category")
    adata.obs["initial_size_unspliced"] = np.ones(n, dtype=np.float32)
    adata.obs["intrinsic_cosine_difference"] = np.zeros(n, dtype=np.float32)
    adata.obs["velocity_length"] = np.linspace(0, 1, n, dtype=np.float32)
    return adata


@pytest.fixture(scope="module")
def adata():
    """The results conftest's ``served`` app shows: :func:`_with_columns`."""
    return _with_columns()


def _call(app, fn, *args, trigger: str = "."):
    """Run a callback body inside a request and callback context (``trigger``: its prop id)."""

    def run():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": trigger, "value": 1}]))
        return fn(*args)

    with app.server.test_request_context("/"):
        return copy_context().run(run)


def _apply(figure: dict, patch: dash.Patch) -> dict:
    """``figure`` after the Patch's Assign operations, negative list indices counting from the
    end, as the Dash renderer applies them."""
    out = copy.deepcopy(figure)
    for op in patch.to_plotly_json()["operations"]:
        assert op["operation"] == "Assign", op
        *path, last = op["location"]
        node = out
        for key in path:
            node = node[key if not isinstance(key, int) or key >= 0 else len(node) + key]
        node[last] = op["params"]["value"]
    return out


def _legend(figure: dict) -> list[str]:
    """Names of the legend entries (traces plotly shows in the legend)."""
    return [t.get("name") for t in figure["data"] if t.get("showlegend", True) is not False]


# -- "Colour by" ----------------------------------------------------------------------------------
def test_colour_options_put_what_biologists_want_first_and_the_rest_under_more(served):
    from dashboard.web.pages import stream

    app, ds, results = served
    mask = np.arange(results.n_cells) < 40
    saved = _call(
        app, lambda: stream.selection_panel.store().save(ds, "early", mask, results.cell_ids, "x")
    )
    options = _call(app, stream.color_options, results, ds)
    values = [o["value"] for o in options]
    assert values == [
        "clusters",
        "latent_time",
        "intrinsic_uncertainty",
        "extrinsic_uncertainty",
        "velocity_length",
        "batch",  # the file's own annotation
        "",  # "— more —"
        "n_counts",
        "initial_size_unspliced",
        "intrinsic_cosine_difference",
        f"sel:{saved.id}",
    ]
    by_value = {o["value"]: o for o in options}
    assert by_value[""] == {"label": "— more —", "value": "", "disabled": True}
    assert [by_value[v]["label"] for v in values[:5]] == [
        "cell type (clusters)",
        "latent time",
        "intrinsic uncertainty",
        "extrinsic uncertainty",
        "velocity speed",
    ]
    for value in values[:6] + values[7:10]:  # the raw name: tooltip and search term
        assert by_value[value]["title"] == value and value in by_value[value]["search"]
    assert not any(o.get("disabled") for o in options if o["value"])
    # every colourable column is offered exactly once
    assert sorted(v for v in values[:-1] if v) == sorted(results.obs_columns())


# -- a gene colours the cells ---------------------------------------------------------------------
def test_colour_controls_follow_the_gene_and_a_column_clears_it(served):
    from dashboard.web.pages import stream

    app, ds, results = served
    gene = results.gene_names[3]
    keep = dash.no_update
    color, value, options, gene_box = _call(
        app, stream.colour_controls, results, ds, "stream-gene", "clusters", gene
    )
    assert (color, value, gene_box) == (gene, f"gene:{gene}", keep)
    assert options[0] == {"label": f"gene: {gene}", "value": f"gene:{gene}"}
    assert options[1:] == _call(app, stream.color_options, results, ds)
    # a column picked in Colour by clears the gene and its entry
    color, value, options, gene_box = _call(
        app, stream.colour_controls, results, ds, "stream-color", "latent_time", gene
    )
    assert (color, value, gene_box) == ("latent_time", keep, None)
    assert not any(o["value"].startswith("gene:") for o in options)
    # clearing the gene box goes back to the cell types
    color, value, _, _ = _call(
        app, stream.colour_controls, results, ds, "stream-gene", f"gene:{gene}", None
    )
    assert (color, value) == ("clusters", "clusters")
    # a link with color=GENE opens with the gene in both controls
    assert stream.split_color(results, gene) == (f"gene:{gene}", gene)
    assert _call(app, stream.colour_controls, results, ds, None, f"gene:{gene}", gene)[0] == gene


def test_a_gene_colouring_leaves_only_its_colour_bar_in_place_of_the_category_legend(served):
    from dashboard.web.pages import stream

    app, ds, results = served
    gene = results.gene_names[5]
    rest = ("streams", 1.0, 0.5, "velovi", [])
    first, shown, *_ = _call(app, stream.draw, "clusters", None, *rest, None, ds)
    start = first.to_plotly_json()
    assert _legend(start) == ["velocity streams", *results.cell_types]
    # picking a gene: a Patch that recolours and hides the category keys; Colour by says so
    patch, shown2, *_, value, _, gene_box = _call(
        app, stream.draw, "clusters", gene, *rest, shown, ds, trigger="stream-gene.value"
    )
    assert isinstance(patch, dash.Patch) and value == f"gene:{gene}" and gene_box is dash.no_update
    coloured = _apply(start, patch)
    assert _legend(coloured) == ["velocity streams"]
    assert coloured["layout"]["coloraxis"]["colorbar"]["title"]["text"] == f"{gene} (Ms)"
    rebuilt = E.embedding_figure(results, gene).to_plotly_json()
    assert _legend(rebuilt) == _legend(coloured)
    # a numeric column does the same; picking the cell types again brings the legend back
    latent = E.embedding_figure(results, "latent_time").to_plotly_json()
    assert _legend(latent) == ["velocity streams"]
    back, _, *_, gene_box = _call(
        app, stream.draw, "clusters", gene, *rest, shown2, ds, trigger="stream-color.value"
    )
    assert gene_box is None
    assert _legend(_apply(coloured, back)) == _legend(start)
    # the address carries the gene, and only the gene
    assert _call(app, stream.url_state, shown2, None, ds) == f"?ds={ds}&color={gene}"


# -- veloVI against the scVelo baseline ------------------------------------------------------------
def _drawn(rgba: str) -> str:
    """The colour an ``rgba(r, g, b, a)`` line shows on the white plot, as ``rgb(…)``."""
    *rgb, alpha = (float(v) for v in re.findall(r"[\d.]+", rgba))
    return "rgb({}, {}, {})".format(*(255 - alpha * (255 - v) for v in rgb))


@pytest.mark.parametrize(
    "palette",
    [
        None,  # velodash's own palette (D3), as on the pancreas and the sample
        SCANPY_20[:8],  # scanpy's default, orange included
        ["#000000", "#404040", "#ff00ff", "#e377c2", "#7f7f7f", "#ff7f0e", "#1f77b4", "#2ca02c"],
        pcolors.qualitative.Alphabet[:8],
    ],
    ids=["velodash", "scanpy", "black-and-magenta", "alphabet"],
)
def test_source_colours_stand_apart_from_every_cell_type_and_velovi_is_on_top(palette):
    adata = make_fake_results(n_cells=300, n_genes=20, n_types=8, seed=2)
    if palette is not None:
        adata.uns["clusters_colors"] = np.array(
            palette[: len(adata.obs["clusters"].cat.categories)]
        )
    results = Results(adata)
    if palette is None:  # the first choices: black and magenta
        assert E.source_colors(results) == {k: v[0] for k, v in E.SOURCE_RGB.items()}
    # what a line must stand apart from: the white plot and every cell-type colour
    cell_lab = cielab(["#ffffff", *cell_type_colors(results).values()])
    for mode in ("arrows", "streams"):
        fig = E.embedding_figure(results, velocity=mode, source="both")
        groups = [t.legendgroup for t in fig.data]
        velovi = [i for i, g in enumerate(groups) if g == "velocity"]
        scvelo = [i for i, g in enumerate(groups) if g == "velocity-scvelo"]
        assert velovi and scvelo and min(velovi) > max(scvelo)  # veloVI drawn last, on top
        entries = sorted((t.legendrank, t.name) for t in fig.data if t.showlegend)
        assert [name for _, name in entries][:2] == [f"veloVI {mode}", f"scVelo baseline {mode}"]
        drawn = {}
        for i in velovi + scvelo:
            trace = fig.data[i]
            color = trace.line.color if trace.mode == "lines" else trace.marker.color
            drawn.setdefault(groups[i], set()).add(_drawn(color))
        for group, colors in drawn.items():
            lab = cielab(sorted(colors))
            gap = np.linalg.norm(lab[:, None] - cell_lab[None], axis=2).min()
            assert gap >= E.MIN_DELTA_E, (group, colors, gap)
        between = np.linalg.norm(
            cielab(sorted(drawn["velocity"]))[:, None] - cielab(sorted(drawn["velocity-scvelo"])),
            axis=2,
        )
        assert between.min() >= E.MIN_DELTA_E
        # the baseline is the wide faint band under veloVI's thin dark lines
        widths = {g: max(fig.data[i].line.width or 0 for i in ix) for g, ix in
                  (("velocity", velovi), ("velocity-scvelo", scvelo))}  # fmt: skip
        assert widths["velocity-scvelo"] > widths["velocity"]


# -- the UMAP fills the plot ---------------------------------------------------------------------
def test_axis_ranges_hug_the_cells_and_the_graph_height_follows_the_aspect(served):
    from dashboard.web.pages import stream

    _, _, results = served
    xy = results.umap
    lo, hi = xy.min(0), xy.max(0)
    pad = (hi - lo) * E.RANGE_PAD
    for fig in (E.embedding_figure(results), E.agreement_figure(results)):
        assert fig.layout.xaxis.range == pytest.approx([lo[0] - pad[0], hi[0] + pad[0]])
        assert fig.layout.yaxis.range == pytest.approx([lo[1] - pad[1], hi[1] + pad[1]])
        assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    aspect = E.embedding_aspect(results)
    assert aspect == pytest.approx((hi[0] - lo[0]) / (hi[1] - lo[1]), rel=1e-6)
    height = stream.graph_height(aspect)
    assert f"/ {aspect:.3f} " in height and "100vh" in height and "100cqw" in height
    layout = str(_call(served.app, stream.layout, served.ds))
    assert layout.count(height) == 2  # the velocity map and the agreement map
    assert "'containerType': 'inline-size'" in layout
    empty = E.embedding_ranges(np.full((3, 2), np.nan))
    assert empty == ([0.0, 1.0], [0.0, 1.0])
    assert isinstance(E.embedding_figure(results, velocity="none"), go.Figure)


def test_cielab_matches_published_srgb_values():
    """Reference CIELAB (D65) of sRGB primaries (e.g. Bruce Lindbloom's calculator)."""
    from dashboard.figures.common import cielab

    lab = cielab(["#ffffff", "#000000", "#ff0000", "#0000ff", "rgb(0, 255, 0)", "teal"])
    expected = [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]]
    expected.append([87.74, -86.18, 83.18])
    assert np.allclose(lab[:5], expected, atol=0.05)
    assert np.isnan(lab[5]).all()  # a colour name is not read
