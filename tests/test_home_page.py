"""The home page's messages follow the user's role, the page and the job (issue 15, items
13–15, 17–20): callbacks and layouts called directly in a request context, the CUDA record of
hosted workers on a real redis-server."""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import flask
import numpy as np
import pytest
import scipy.sparse as sp
from dash.exceptions import PreventUpdate
from fake_results import write_fake_results
from servers import RedisServer

from core.options import STAGE_SPAN
from core.params import ProgressEvent
from dashboard import app as app_module
from dashboard import components as ui
from dashboard import devices, jobs, jobview, shell
from dashboard.config import AppConfig
from dashboard.datasets import DatasetRegistry
from dashboard.jobqueue import JobQueue
from dashboard.jobstore import RedisJobStore
from dashboard.users import User

FAKE_FIT_SECONDS = 23.6  # the sum of tests/fake_results.py's stage timings


def _raw(path: Path) -> Path:
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(2, (30, 10)).astype(np.float32))
    ad.AnnData(counts.copy(), layers={"spliced": counts, "unspliced": counts}).write_h5ad(path)
    return path


@pytest.fixture
def home(tmp_path):
    """The home page module in a request context of an app with a fitted results file and a
    raw (unfitted) sample; yields (module, results id)."""
    config = AppConfig(
        data=(write_fake_results(tmp_path / "lab_results.h5ad", n_cells=60, n_genes=8),),
        cache_dir=tmp_path / "cache",
        sample_path=_raw(tmp_path / "sample.h5ad"),
    )
    app = app_module.create_app(config)
    from dashboard.pages import home as module

    with app.server.test_request_context("/"):
        yield module, DatasetRegistry(config).default_id()


def _text(component) -> str:
    """All the text inside a Dash component tree."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return "".join(_text(c) for c in component)
    return _text(getattr(component, "children", None))


def _as(role: str) -> None:
    flask.g.velodash_user = User(role, role)


# -- item 13: not-fitted messages fit the role and the page -------------------------------------
@pytest.mark.parametrize(
    ("role", "on_home", "says", "never"),
    [
        ("editor", True, "Fit button on this page", "home page"),
        ("editor", False, "Fit it on the home page", "this page"),
        ("viewer", True, "ask an editor or an admin", "Fit it"),
        ("viewer", False, "ask an editor or an admin", "Fit it"),
    ],
)
def test_not_fitted_message_fits_role_and_page(home, role, on_home, says, never):
    _as(role)
    dataset, results, problem = ui.resolve("sample", on_home=on_home)
    assert results is None and dataset.id == "sample"
    text = _text(problem)
    assert text.startswith(f"{dataset.label} has not been fitted yet.")
    assert says in text and never not in text


def test_home_summary_of_an_unfitted_dataset_points_at_this_page(home):
    module, _ = home
    assert "Fit button on this page" in _text(module.summary_view("sample"))


# -- item 14: "Fit queued." lasts while the fit waits ------------------------------------------
def test_fit_note_stays_while_queued_and_goes_when_running_or_ended(home):
    module, ds = home
    note = module.html.Span("Fit queued.", className=module.FIT_NOTE).to_plotly_json()
    queued = {"job": {"dataset": ds, "state": "queued"}}
    with pytest.raises(PreventUpdate):
        module.fit_status_follows_job(queued, ds, note)
    running = {"job": {"dataset": ds, "state": "running"}}
    assert module.fit_status_follows_job(running, ds, note) is None
    assert module.fit_status_follows_job({"job": None}, ds, note) is None
    # a refusal (an alert, not a note about a job) stays whatever the queue does
    refusal = ui.alert("Fitting needs the editor role", "danger").to_plotly_json()
    with pytest.raises(PreventUpdate):
        module.fit_status_follows_job(running, ds, refusal)


# -- item 15: one fit time ----------------------------------------------------------------------
def test_summary_and_finished_banner_give_the_same_fit_time(home, tmp_path):
    module, ds = home
    stats = _text(module.summary_view(ds))
    assert jobview.duration(FAKE_FIT_SECONDS) == "24 s" and "24 sfit time" in stats
    # the worker reads the results' stage timings back (reused results: nothing is fitted)
    output = write_fake_results(tmp_path / "key.h5ad", n_cells=40, n_genes=4)
    result = jobs.run_fit(str(tmp_path / "missing.h5ad"), str(output), {})
    assert result["fit_seconds"] == pytest.approx(FAKE_FIT_SECONDS)
    job = {"dataset": ds, "label": "L", "state": "done", "device": "cpu"}
    job |= {"started": 0.0, "finished": 215.0, "progress": {"fit_seconds": 208.9}}
    banner = shell.finished_alert(job)
    assert "(3 min 29 s)" in _text(banner)  # not the job's 3 min 35 s wall time
    assert jobview.duration(208.9) == "3 min 29 s"


# -- item 16 is in test_app_unit; item 17: CUDA is offered only where a fit can use it ----------
def test_cuda_is_not_offered_without_a_gpu(home, monkeypatch):
    module, _ = home
    devices.local_cuda.cache_clear()
    monkeypatch.setattr(devices, "NVIDIA_DRIVER", Path("/nonexistent/nvidia/version"))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert devices.cuda_available(ui.current_queue()) is False
    devices.local_cuda.cache_clear()
    layout = module.layout(ds="sample")
    radio = _find(layout, "fit-device")
    cuda = next(o for o in radio.options if o["value"] == "cuda")
    assert cuda["disabled"] is True and "none found" in cuda["label"]
    # the server refuses a CUDA fit whatever the browser sends
    message, polls = module.submit_fit(1, "sample", "cuda", 5, 0)
    assert "no CUDA GPU is available" in _text(message) and polls is module.no_update
    assert ui.current_queue().active_for("sample") == []


def test_hosted_workers_record_whether_they_have_cuda(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path / "redis").start()
    try:
        config = AppConfig(cache_dir=tmp_path / "cache", sample_path=None, redis_url=redis.url)
        queue = JobQueue(config)
        store = RedisJobStore(redis.url)
        assert devices.cuda_available(queue) is False
        devices.record_worker(store, "gpu-box", True)
        devices.record_worker(store, "cpu-box", False)
        assert devices.cuda_available(queue) is True
        devices.record_worker(store, "gpu-box", False)  # it shut down
        assert devices.cuda_available(queue) is False
    finally:
        redis.kill()


# -- item 18: time left from the stage and epoch rates ------------------------------------------
def test_time_left_from_epoch_rate_and_earlier_stages():
    start = 1000.0
    train_start = start + 30.0  # preprocessing took 30 s for its share of the bar
    progress = {"stage": "train", "epoch": 50, "max_epochs": 500, "started": start}
    progress |= {"stage_started": train_start, "stage_fraction": STAGE_SPAN["train"][0]}
    job = {"state": "running", "progress": progress}
    now = train_start + 100.0  # 2 s per epoch
    seconds, bound = jobview.remaining(job, now)
    per_share = 30.0 / STAGE_SPAN["train"][0]
    expected = 450 * 2.0 + (1 - STAGE_SPAN["train"][1]) * per_share
    assert seconds == pytest.approx(expected) and bound  # training may stop early
    assert jobview.time_left(job, now) == f"at most about {round(expected / 60)} min left"
    job["label"], job["dataset"] = "P", "p"
    assert jobview.describe(job, now).endswith("epoch 50 / 500 · at most about 16 min left.")
    # after training: what is left of the bar at the rate of the stages done
    post = {"stage": "uncertainty", "fraction": 0.78, "started": start}
    post |= {"stage_started": start + 700.0, "stage_fraction": 0.78}
    seconds, bound = jobview.remaining({"state": "running", "progress": post}, start + 705.0)
    assert seconds == pytest.approx(0.22 * 700.0 / 0.78 - 5.0) and not bound
    # no rate yet in the first stage, and none for a queued job
    first = {"stage": "preprocess", "fraction": 0.0, "started": start, "stage_started": start}
    assert jobview.remaining({"state": "running", "progress": first}, start + 5) is None
    assert jobview.time_left({"state": "queued"}) == ""


def test_progress_relay_records_when_each_stage_started():
    sent: list[dict] = []
    relay = jobs.ProgressRelay(sent.append, interval_s=3600)
    relay(ProgressEvent("preprocess", 0.0, "preprocessing"))
    relay(ProgressEvent("train", 0.15, "epoch 1/5", 1, 5, -1.0, -2.0))
    preprocess, train = sent
    assert preprocess["started"] == preprocess["stage_started"] == train["started"]
    assert train["stage_started"] >= preprocess["stage_started"]
    assert (preprocess["stage_fraction"], train["stage_fraction"]) == (0.0, 0.15)


# -- item 19: the download card comes back with the refreshed page ------------------------------
def test_refresh_after_fit_redraws_the_report_and_download_cards(home):
    module, ds = home
    summary, curve, listing, report, pending = module.refresh_after_fit({"dataset": ds}, ds)
    assert "fit time" in _text(summary) and len(curve.data) > 0 and len(listing) == 2
    assert "Download data" in _text(report) and pending is None
    assert _find(module.html.Div(report), "home-history-csv") is not None
    layout = module.layout(ds=ds)
    assert _find(layout, "home-report") is not None


# -- item 20: names break between words; badges in words ---------------------------------------
def test_dataset_names_break_only_between_words_and_badges_say_where_from(home):
    module, ds = home
    items = module.dataset_list(ds)
    texts = {_text(item.children[0]): item for item in items}
    assert "lab_results.h5ad" in texts and len(texts) == 2
    link = items[[_text(i.children[0]) for i in items].index("lab_results.h5ad")].children[0]
    pieces = [c for c in link.children.children if isinstance(c, str)]
    assert pieces == ["lab_", "results.", "h5ad"]  # <wbr> between, never inside a word
    badges = [_text(b) for item in items for b in item.children[1].children]
    assert "data_dir" not in badges and "upload" not in badges
    assert {"opened", "sample"} <= set(badges)


def _find(component, component_id):
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children]:
        if child is not None and hasattr(child, "to_plotly_json"):
            found = _find(child, component_id)
            if found is not None:
                return found
    return None


def test_the_fit_card_says_why_the_button_is_off(home):
    module, ds = home
    for role, dataset, says in [
        ("viewer", "sample", "Fitting needs the editor role"),
        ("editor", ds, "holds results already"),
        ("editor", "sample", ""),
    ]:
        _as(role)
        layout = module.layout(ds=dataset)
        assert _find(layout, "fit-btn").disabled is bool(says)
        why = _text(_find(layout, "fit-why"))
        assert (says in why) if says else why.strip().startswith("results are cached")


def test_time_left_in_words():
    def job(seconds_per_epoch: float, epoch: int, stage: str = "train") -> dict:
        progress = {"stage": stage, "epoch": epoch, "max_epochs": 100, "started": 0.0}
        progress |= {"stage_started": 10.0, "stage_fraction": STAGE_SPAN["train"][0]}
        return {"state": "running", "progress": progress}

    now = 10.0 + 50 * 2.0  # 50 epochs at 2 s; 50 left (100 s) + the stages after training
    assert jobview.time_left(job(2.0, 50), now) == "at most about 2 min left"
    assert jobview.time_left(job(2.0, 99), 10.0 + 99 * 0.1) == "under a minute left"
    assert jobview.time_left(job(2.0, 50, stage="done"), now) == ""
