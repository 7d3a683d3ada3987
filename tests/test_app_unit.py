"""Dashboard unit tests without a browser: configuration, the
dataset registry and uploads, the fit job, URL state and callbacks called directly."""

from __future__ import annotations

import hashlib
import stat
from contextvars import copy_context
from pathlib import Path

import anndata as ad
import dash
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from dash._callback_context import context_value
from dash._utils import AttributeDict
from fake_results import write_fake_results
from layout_tree import find

from core.params import FitParams, ProgressEvent, results_key
from dashboard.config import AppConfig, resolve_secret_key
from dashboard.data.datasets import (
    SAMPLE_ID,
    DatasetRegistry,
    UnknownDataset,
    UploadError,
)
from dashboard.jobs import runner as jobs
from dashboard.jobs.queue import InvalidFitOptions, parse_fit_params
from dashboard.jobs.redis_store import RedisJobStore
from dashboard.jobs.sqlite_store import SqliteJobStore
from dashboard.web import app as app_module
from dashboard.web import context, jobview, shell
from dashboard.web import widgets as ui
from dashboard.web.upload_route import notice_for


def _raw_counts(path: Path, n_cells: int = 40, n_genes: int = 12, seed: int = 0) -> Path:
    """A small raw counts file (spliced/unspliced layers) written to `path`."""
    rng = np.random.default_rng(seed)
    spliced = sp.csr_matrix(rng.poisson(3, (n_cells, n_genes)).astype(np.float32))
    unspliced = sp.csr_matrix(rng.poisson(1, (n_cells, n_genes)).astype(np.float32))
    adata = ad.AnnData(spliced.copy(), layers={"spliced": spliced, "unspliced": unspliced})
    adata.write_h5ad(path)
    return path


def _save(registry: DatasetRegistry, filename: str, payload: bytes):
    """Stream `payload` into an upload sink 64 KiB at a time and store it, as the route does."""
    sink = registry.open_upload(filename)
    try:
        for start in range(0, len(payload), 2**16):
            sink.write(payload[start : start + 2**16])
        return registry.store_upload(sink)
    finally:
        sink.discard()


@pytest.fixture
def config(tmp_path: Path) -> AppConfig:
    """A config with a raw sample, one CLI results file and a data folder, all in tmp_path."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _raw_counts(data_dir / "raw_a.h5ad", seed=1)
    (data_dir / "notes.txt").write_text("not a dataset")
    (data_dir / "broken.h5ad").write_bytes(b"not hdf5 at all")
    return AppConfig(
        data=(write_fake_results(tmp_path / "fit.h5ad", n_cells=60, n_genes=8),),
        data_dir=data_dir,
        cache_dir=tmp_path / "cache",
        sample_path=_raw_counts(tmp_path / "sample.h5ad"),
        max_upload_mb=1.0,
    )


# -- configuration -----------------------------------------------------------------------------
def test_secret_key_configured_else_generated_once_per_cache_dir(tmp_path):
    assert resolve_secret_key(AppConfig(cache_dir=tmp_path / "a", secret_key="s3cret")) == "s3cret"
    first = resolve_secret_key(AppConfig(cache_dir=tmp_path / "a"))
    # A second worker sharing the cache dir reads the same key; another cache dir gets its own.
    assert resolve_secret_key(AppConfig(cache_dir=tmp_path / "a")) == first
    assert resolve_secret_key(AppConfig(cache_dir=tmp_path / "b")) != first
    assert len(first) == 64
    assert stat.S_IMODE((tmp_path / "a" / "secret_key").stat().st_mode) == 0o600


def test_local_queue_by_default_redis_when_configured(tmp_path):
    app = app_module.create_app(AppConfig(cache_dir=tmp_path))
    store = app.server.extensions[context.QUEUE_KEY].store
    assert isinstance(store, SqliteJobStore)
    assert store.path == tmp_path / "jobs.sqlite"
    # Port 1 has no Redis: building the app must not try to reach it.
    url = "redis://127.0.0.1:1/0"
    hosted = app_module.create_app(AppConfig(cache_dir=tmp_path, redis_url=url))
    queue = hosted.server.extensions[context.QUEUE_KEY]
    assert isinstance(queue.store, RedisJobStore)
    assert queue._celery.conf.broker_url == url
    # No background callback is left: fits are queue jobs, never per-visitor processes.
    assert hosted._background_manager is None
    assert not any(cb.get("background") for cb in hosted.callback_map.values())


def test_module_level_server_for_gunicorn(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("VELODASH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("VELODASH_CONFIG", raising=False)
    app_module._default_app.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="dashboard.web.app"):
            server = app_module.server
        assert server is app_module.app.server
        assert server.config[context.CONFIG_KEY].cache_dir == tmp_path
        assert server.secret_key == (tmp_path / "secret_key").read_text()
        # without a hosting file there is no sign-in, and the log says so loudly (issue 14)
        (warning,) = [r.getMessage() for r in caplog.records if "SIGN-IN IS OFF" in r.getMessage()]
        assert "VELODASH_CONFIG is not set" in warning and "docs/hosting.md" in warning
    finally:
        app_module._default_app.cache_clear()


def test_fit_params_merge_ui_over_config_over_defaults():
    config = AppConfig(fit_overrides={"max_epochs": 7, "skip": ["permutation"]})
    params = parse_fit_params(config, {"device": "cpu", "max_epochs": 3})
    assert params == FitParams(max_epochs=3, device="cpu", skip=("permutation",))
    assert parse_fit_params(config, {}) == FitParams(max_epochs=7, skip=("permutation",))
    with pytest.raises(InvalidFitOptions, match="unknown fit option"):
        parse_fit_params(config, {"bogus": 1})


# -- dataset registry --------------------------------------------------------------------------
def test_registry_lists_sample_cli_and_data_dir_with_content_ids(config):
    registry = DatasetRegistry(config)
    datasets = {d.path.name: d for d in registry.datasets()}
    assert set(datasets) == {"sample.h5ad", "fit.h5ad", "raw_a.h5ad"}  # broken/txt left out
    assert datasets["sample.h5ad"].id == SAMPLE_ID
    raw = config.data_dir / "raw_a.h5ad"
    assert datasets["raw_a.h5ad"].id == hashlib.sha256(raw.read_bytes()).hexdigest()[:12]
    assert (datasets["fit.h5ad"].kind, datasets["raw_a.h5ad"].kind) == ("results", "raw")
    assert all("/" not in d.id for d in datasets.values())
    assert registry.default_id() == datasets["fit.h5ad"].id  # a CLI file comes first
    assert registry.get(SAMPLE_ID).path == config.sample_path.resolve()
    with pytest.raises(UnknownDataset):
        registry.get("../../etc/passwd")


def test_results_are_found_by_input_fingerprint(config):
    registry = DatasetRegistry(config)
    results_file = registry.get(registry.default_id())
    assert registry.results_for(results_file) == results_file.path
    sample = registry.get(SAMPLE_ID)
    assert registry.results_for(sample) is None
    target = registry.results_path_for_fit(sample, FitParams())
    fingerprint = hashlib.sha256(config.sample_path.read_bytes()).hexdigest()
    assert target == config.cache_dir / "results" / f"{results_key(fingerprint, FitParams())}.h5ad"
    # A results file recording the sample's fingerprint is found, whatever its name.
    target.parent.mkdir(parents=True)
    fake = ad.read_h5ad(results_file.path)
    fake.uns["velodash"]["fingerprint"] = fingerprint
    fake.write_h5ad(target)
    assert registry.results_for(sample) == target


# -- uploads -----------------------------------------------------------------------------------
def test_valid_upload_is_stored_under_its_content_hash(config):
    registry = DatasetRegistry(config)
    payload = _raw_counts(config.cache_dir.parent / "up.h5ad", seed=5).read_bytes()
    dataset, new = _save(registry, "pancreas_600_lab.h5ad", payload)
    digest = hashlib.sha256(payload).hexdigest()
    assert new and dataset.id == digest[:12]
    assert dataset.path == (config.cache_dir / "uploads" / f"{digest[:12]}.h5ad").resolve()
    assert dataset.path.read_bytes() == payload
    assert dataset.kind == "raw"
    # listed under the user's file name, not the content hash (issue 15)
    listed = registry.get(dataset.id)
    assert listed.source == "upload" and listed.label == "pancreas_600_lab.h5ad"


def test_identical_upload_stores_nothing_and_names_the_existing_dataset(config):
    """Issue 15: the same file uploaded under another name switched silently and stored a
    second copy. Now nothing is stored and the existing dataset is returned."""
    registry = DatasetRegistry(config)
    payload = _raw_counts(config.cache_dir.parent / "up.h5ad", seed=6).read_bytes()
    first, new = _save(registry, "pancreas_739.h5ad", payload)
    stored = sorted((config.cache_dir / "uploads").iterdir())
    again, again_new = _save(registry, "copy of it.h5ad", payload)
    assert new and not again_new and again == first and again.label == "pancreas_739.h5ad"
    assert sorted((config.cache_dir / "uploads").iterdir()) == stored
    # identical to the bundled sample: the sample is named
    sample, sample_new = _save(registry, "sample again.h5ad", config.sample_path.read_bytes())
    assert not sample_new and sample.source == "sample"
    assert sorted((config.cache_dir / "uploads").iterdir()) == stored


@pytest.mark.parametrize(
    ("filename", "payload", "message"),
    [
        ("table.csv", b"a,b\n1,2\n", "not a supported file type"),
        ("fake.h5ad", b"definitely not hdf5", "not an HDF5 file"),
        ("big.h5ad", b"\x89HDF\r\n\x1a\n" + bytes(2 * 2**20), "upload limit"),
    ],
)
def test_bad_uploads_are_rejected_with_a_reason(config, filename, payload, message):
    registry = DatasetRegistry(config)
    with pytest.raises(UploadError, match=message):
        _save(registry, filename, payload)
    uploads = config.cache_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_upload_without_count_layers_needs_a_reference_and_no_matrix_is_rejected(config, tmp_path):
    registry = DatasetRegistry(config)
    path = tmp_path / "nolayers.h5ad"
    ad.AnnData(np.ones((5, 3), dtype=np.float32)).write_h5ad(path)
    dataset, new = _save(registry, "nolayers.h5ad", path.read_bytes())
    assert new and dataset.kind == "raw" and not registry.has_splicing(dataset)
    bare = tmp_path / "bare.h5ad"
    with h5py.File(bare, "w") as fh:
        fh["X"] = np.ones((5, 3))
    with pytest.raises(UploadError, match="holds no count matrix"):
        _save(registry, "bare.h5ad", bare.read_bytes())
    assert sorted(p.name for p in (config.cache_dir / "uploads").iterdir()) == sorted(
        [dataset.path.name, dataset.path.name + ".json"]
    )


def test_uploads_disabled(config):
    disabled = AppConfig(cache_dir=config.cache_dir, allow_upload=False)
    with pytest.raises(UploadError, match="disabled"):
        _save(DatasetRegistry(disabled), "a.h5ad", b"x")
    assert not (config.cache_dir / "uploads").exists()


# -- the fit job -------------------------------------------------------------------------------
def test_progress_relay_accumulates_history_and_throttles():
    sent: list[dict] = []
    relay = jobs.ProgressRelay(sent.append, interval_s=3600)
    relay(ProgressEvent("preprocess", 0.0, "preprocessing"))
    for epoch in range(1, 6):
        relay(ProgressEvent("train", 0.1 + epoch / 10, f"epoch {epoch}/5", epoch, 5, -epoch, -2.0))
    relay(ProgressEvent("posterior", 0.8, "posterior"))
    relay(ProgressEvent("done", 1.0, "results written to /srv/cache/results/key.h5ad"))
    # Sent: the first event of each stage and the last epoch; the epochs in between are merged.
    assert [(s["stage"], s["epoch"]) for s in sent] == [
        ("preprocess", None),
        ("train", 1),
        ("train", 5),
        ("posterior", 5),
        ("done", 5),
    ]
    assert sent[-1]["message"] == "results ready"  # no server path reaches the watchers
    assert sent[2]["elbo_train"] == [-1, -2, -3, -4, -5]
    assert sent[2]["elbo_validation"] == [-2.0] * 5
    assert sent[0]["elbo_train"] == []  # each report is a snapshot, not a shared list


def test_run_fit_reuses_existing_results_without_fitting(tmp_path):
    output = write_fake_results(tmp_path / "key.h5ad", n_cells=40, n_genes=4)
    result = jobs.run_fit(str(tmp_path / "missing.h5ad"), str(output), {})
    assert result["status"] == "done"
    assert result["reused"] is True
    assert result["results"] == "key"
    assert result["device"] == "cpu"  # read back from uns['velodash']['device']


# -- URL state and shell callbacks ---------------------------------------------------------------
def test_page_href_keeps_dataset_and_drops_empty_values():
    assert (
        ui.page_href("/genes", "sample", gene="Top2a", color=None) == "/genes?ds=sample&gene=Top2a"
    )
    assert ui.page_href("/", None) == "/"
    assert ui.gene_link("A&B", "x").href == "/genes?ds=x&gene=A%26B"


def test_job_sentence_and_percent_for_every_state():
    job = {"dataset": "sample", "label": "S", "owner": "ann", "state": "queued"}
    assert jobview.describe({**job, "queue_position": 2}) == (
        "S is waiting for a worker, position 2 in the queue (started by ann)."
    )
    progress = {"stage": "train", "fraction": 0.42, "epoch": 3, "max_epochs": 10}
    running = {**job, "state": "running", "progress": {**progress, "elbo_validation": [-5, -7.25]}}
    assert jobview.describe(running) == (
        "Fitting S: epoch 3 / 10 · validation ELBO -7.25 (started by ann)."
    )
    assert jobview.percent(running) == 42.0
    preprocess = {"stage": "preprocess", "fraction": 0.0, "message": "preprocessing"}
    assert jobview.describe({**running, "progress": preprocess}).startswith("Fitting S: preproc")
    assert jobview.percent({**job, "state": "done"}) == 100.0
    failed = {**job, "state": "failed", "error": "Dataset lacks layer 'spliced'"}
    assert jobview.describe(failed) == "The fit of S failed: Dataset lacks layer 'spliced'"


def _triggered(prop_id: str, func, *args):
    def run():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": prop_id, "value": 1}]))
        return func(*args)

    return copy_context().run(run)


def test_finished_alert_for_done_error_and_cancel():
    base = {"dataset": "sample", "label": "S", "started": 100.0, "finished": 112.0}
    alert = shell.finished_alert({**base, "state": "done", "device": "cuda:0"})
    assert "alert-success" in alert.className
    assert alert.children[0] == "Fit finished for S on cuda:0 (12 s). Open the "
    error = {**base, "state": "failed", "error": "Dataset lacks layer 'spliced'"}
    alert = shell.finished_alert(error)
    assert alert.children == "The fit of S failed: Dataset lacks layer 'spliced'"
    assert "alert-danger" in alert.className
    alert = shell.finished_alert({**base, "state": "cancelled", "error": "cancelled by ann"})
    assert alert.children == "Fit of S cancelled by ann."
    with pytest.raises(dash.exceptions.PreventUpdate):
        shell.finished_alert(None)


# -- pages: layouts from query kwargs and callbacks called directly --------------------------------
@pytest.fixture
def page_app(config):
    """The app (pages registered) and a request context on it; yields the results dataset id."""
    app = app_module.create_app(config)
    with app.server.test_request_context("/"):
        yield DatasetRegistry(config).default_id()


def test_gene_page_layout_restores_gene_from_url(page_app):
    from dashboard.web.pages import genes

    layout = genes.layout(ds=page_app, gene="Gene003", color_by="state")
    assert find(layout, "genes-selected").data == "Gene003"
    assert find(layout, "gene-color-by").value == "state"
    title, problem, *figs, search = genes.show_gene("Gene003", "state", page_app)
    assert (title, problem) == ("Gene003", None)
    assert search == f"?ds={page_app}&gene=Gene003&color_by=state"
    assert "Gene003" in figs[0].layout.title.text
    # An unknown gene in a shared link explains itself and suggests names.
    _, problem, *_ = genes.show_gene("Gene3", "cell_type", page_app)
    assert "Unknown gene 'Gene3'" in problem.children


def test_gene_table_search_and_row_click(page_app):
    from dashboard.web.pages import genes

    _, results, _ = context.resolve(page_app)
    rows = genes.table_records(results, "gene00")
    assert [r["gene"] for r in rows] == [f"Gene00{i}" for i in range(8)]
    assert all(r["id"] == r["gene"] for r in rows)
    assert genes.select_from_table({"row": 0, "column": 2, "row_id": "Gene005"}) == "Gene005"
    scores = results.gene_table()["permutation_score"]
    assert genes.default_gene(results) == results.gene_names[int(scores.argmax())]


def test_stream_recolour_sends_typed_patch_and_url(page_app):
    from dashboard.web.pages import stream

    _, results, _ = context.resolve(page_app)
    # a gene shows in "Colour by" as the gene, not as the cell types (issue 15)
    assert stream.split_color(results, "Gene002") == ("gene:Gene002", "Gene002")
    assert stream.split_color(results, "clusters") == ("clusters", None)
    assert stream.split_color(results, "no-such-thing") == ("clusters", None)
    args = ("clusters", None, "streams", 1.0, 0.5, "velovi", [])
    figure, shown, *_ = _triggered(".", stream.draw, *args, None, page_app)
    assert len(figure.data) >= len(results.cell_types)
    # the default colouring (cell types) stays out of the address, so that a link with a
    # saved selection opens coloured by it (issue 15)
    assert stream.url_state(shown, None, page_app) == f"?ds={page_app}"
    # Picking a gene only recolours: a Patch whose colours are base64 typed arrays.
    gene_args = ("clusters", "Gene002", "streams", 1.0, 0.5, "velovi", [], shown, page_app)
    patch, shown2, link, *_ = _triggered("stream-gene.value", stream.draw, *gene_args)
    assert isinstance(patch, dash.Patch)
    colours = [op for op in patch.to_plotly_json()["operations"] if op["location"][-1] == "color"]
    assert colours and all("bdata" in op["params"]["value"] for op in colours)
    assert shown2["color"] == "Gene002"
    assert stream.url_state(shown2, None, page_app) == f"?ds={page_app}&color=Gene002"
    assert link.children[1].href == f"/genes?ds={page_app}&gene=Gene002"
    # Changing the velocity mode rebuilds the figure; a saved selection joins the URL.
    mode_args = ("clusters", None, "arrows", 1.0, 0.5, "velovi", [], shown, page_app)
    rebuilt, shown3, *_ = _triggered("stream-mode.value", stream.draw, *mode_args)
    assert isinstance(rebuilt, type(figure))
    url = stream.url_state(shown3, {"id": "0123456789"}, page_app)
    assert url == f"?ds={page_app}&sel=0123456789&mode=arrows"


def test_home_fit_queues_one_job_and_upload_error(page_app):
    from dashboard.web.pages import home

    message, polls = home.submit_fit(1, "sample", 4, {"device": "cpu", "max_epochs": 12})
    assert (message.children, message.className, polls) == ("Fit queued.", home.FIT_NOTE, 5)
    queue = context.current_queue()
    (job,) = queue.active_for("sample")
    assert (job.params["device"], job.params["max_epochs"], job.owner) == ("cpu", 12, "local")
    # Asking again (another tab, another visitor) joins the same job.
    message, _ = home.submit_fit(2, "sample", 5, {"device": "cpu", "max_epochs": 12})
    assert message.children.startswith("Already being fitted (started by local)")
    assert [j.id for j in queue.active_for("sample")] == [job.id]
    refused, polls = home.submit_fit(3, "sample", 6, {"device": "cpu", "max_epochs": -4})
    assert "max_epochs" in refused.children and polls is dash.no_update
    message, notice, href = home.upload_finished({"error": "'x.h5ad' is not an HDF5 file"})
    assert "not an HDF5 file" in str(message.children) and message.id == "upload-error"
    assert notice is dash.no_update and href is dash.no_update
    # an upload identical to the sample says so and opens it (issue 15); the message is a
    # shell notice for the page it opens, shown there and gone on the next navigation
    registry = context.current_registry()
    sample = registry.get("sample")
    answer = {"href": "/?ds=sample", "notice": notice_for(registry, sample, False, "../copy.h5ad")}
    message, notice, href = home.upload_finished(answer)
    assert message is None and href == "/?ds=sample" == notice["href"]
    assert notice["text"].startswith("'copy.h5ad' is identical to Sample data")
    assert "fitted" in notice["text"]
    shown, kept = shell.show_notice("http://127.0.0.1:8050/?ds=sample", notice)
    assert shown.children == notice["text"] and shown.id == "notice" and kept is dash.no_update
    # leaving the page drops the notice, so coming back does not show it again
    assert shell.show_notice("http://127.0.0.1:8050/genes?ds=sample", notice) == (None, None)
    assert shell.show_notice("http://127.0.0.1:8050/?ds=sample", None) == (None, dash.no_update)


def test_unknown_dataset_in_url_shows_an_alert(page_app):
    from dashboard.web.pages import uncertainty

    layout = uncertainty.layout(ds="deadbeef0000")
    assert "Unknown dataset 'deadbeef0000'" in layout.children[0]


def test_web_process_never_touches_cuda(monkeypatch, config):
    """Building the app and every page must not query or initialise CUDA (fork safety)."""
    import torch

    def forbidden(*_args, **_kwargs):
        raise AssertionError("CUDA touched in the web process")

    for name in ("is_available", "init", "device_count", "_lazy_init", "current_device"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    app = app_module.create_app(config)
    client = app.server.test_client()
    assert client.get("/_dash-layout").status_code == 200
    ds = DatasetRegistry(config).default_id()
    with app.server.test_request_context("/"):
        for page in dash.page_registry.values():
            page["layout"](ds=ds)
        from dashboard.web.pages import genes, stream

        genes.show_gene("Gene001", "state", ds)
        _triggered(
            ".", stream.draw, "clusters", "Gene001", "arrows", 1.0, 0.5, "both", [], None, ds
        )


def test_messages_show_backticked_commands_as_code():
    """Issue 15: messages printed raw backticks ("re-export it with `adata.write_h5ad(...)`")."""
    from dash import html

    box = ui.alert("re-export it with `adata.write_h5ad(...)`, then `velodash run FILE`.")
    parts = box.children
    assert parts[0] == "re-export it with " and parts[2] == ", then " and parts[4] == "."
    assert isinstance(parts[1], html.Code) and parts[1].children == "adata.write_h5ad(...)"
    assert isinstance(parts[3], html.Code) and parts[3].children == "velodash run FILE"
    assert "`" not in str(box)
    assert ui.alert("no code here").children == "no code here"
    assert ui.alert("one ` stray").children == "one ` stray"
    odd = ui.alert("a `b` c ` d").children  # an unpaired backtick stays as written
    assert odd[1].children == "b" and odd[-1] == " c ` d"
