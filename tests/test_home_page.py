"""The home page's messages follow the user's role, the page and the job (issue 15, items
13–15, 17–20): callbacks and layouts called directly in a request context, the CUDA record of
hosted workers on a real redis-server."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import flask
import numpy as np
import pytest
import scipy.sparse as sp
from dash import html
from dash.exceptions import PreventUpdate
from fake_results import write_fake_results
from layout_tree import find, text
from servers import RedisServer

from core.options import STAGE_SPAN
from core.params import FIT_OPTIONS, FitParams, ProgressEvent
from dashboard.config import AppConfig
from dashboard.data.datasets import DatasetRegistry
from dashboard.hosting.users import User
from dashboard.jobs import devices
from dashboard.jobs import runner as jobs
from dashboard.jobs.queue import InvalidFitOptions, JobQueue
from dashboard.jobs.redis_store import RedisJobStore
from dashboard.web import app as app_module
from dashboard.web import context, fit_form, jobview, shell
from dashboard.web import widgets as ui

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
    from dashboard.web.pages import home as module

    with app.server.test_request_context("/"):
        yield module, DatasetRegistry(config).default_id()


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
    dataset, results, problem = context.resolve("sample", on_home=on_home)
    assert results is None and dataset.id == "sample"
    words = text(problem)
    assert words.startswith(f"{dataset.label} has not been fitted yet.")
    assert says in words and never not in words


def test_home_summary_of_an_unfitted_dataset_points_at_this_page(home):
    module, _ = home
    assert "Fit button on this page" in text(module.summary_view("sample"))


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
    stats = text(module.summary_view(ds))
    assert jobview.duration(FAKE_FIT_SECONDS) == "24 s" and "24 sfit time" in stats
    # the worker reads the results' stage timings back (reused results: nothing is fitted)
    output = write_fake_results(tmp_path / "key.h5ad", n_cells=40, n_genes=4)
    result = jobs.run_fit(str(tmp_path / "missing.h5ad"), str(output), {})
    assert result["fit_seconds"] == pytest.approx(FAKE_FIT_SECONDS)
    job = {"dataset": ds, "label": "L", "state": "done", "device": "cpu"}
    job |= {"started": 0.0, "finished": 215.0, "progress": {"fit_seconds": 208.9}}
    banner = shell.finished_alert(job)
    assert "(3 min 29 s)" in text(banner)  # not the job's 3 min 35 s wall time
    assert jobview.duration(208.9) == "3 min 29 s"


# -- item 16 is in test_app_unit; item 17: CUDA is offered only where a fit can use it ----------
def test_cuda_is_not_offered_without_a_gpu(home, monkeypatch):
    module, _ = home
    devices.local_cuda.cache_clear()
    monkeypatch.setattr(devices, "NVIDIA_DRIVER", Path("/nonexistent/nvidia/version"))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert devices.cuda_available(context.current_queue()) is False
    devices.local_cuda.cache_clear()
    layout = module.layout(ds="sample")
    radio = find(layout, "fit-device")
    cuda = next(o for o in radio.options if o["value"] == "cuda")
    assert cuda["disabled"] is True and "none found" in cuda["label"]
    # the server refuses a CUDA fit whatever the browser sends
    message, polls = module.submit_fit(1, "sample", 0, {"device": "cuda", "max_epochs": 5})
    assert "no CUDA GPU is available" in text(message) and polls is module.no_update
    assert context.current_queue().active_for("sample") == []


def test_fit_controls_follow_the_declared_options(home):
    """The controls are made from `core.params.FIT_OPTIONS`: label, tooltip, range, choices,
    default; a cleared box means the option's default."""
    module, _ = home
    layout = module.layout(ds="sample")
    epochs, declared = find(layout, "fit-epochs"), FIT_OPTIONS["max_epochs"]
    assert (epochs.min, epochs.max, epochs.step) == (declared.min, declared.max, 1)
    assert epochs.value == declared.default == 500
    radio = find(layout, "fit-device")
    assert [o["value"] for o in radio.options] == list(FIT_OPTIONS["device"].choices)
    controls = fit_form.fit_controls(FitParams().to_dict(), None)
    labels = [c for c in controls if isinstance(c, html.Label)]
    assert [(label.children, label.title) for label in labels] == [
        ("Device", FIT_OPTIONS["device"].help),
        ("Max epochs", declared.help),
    ]
    message, _ = module.submit_fit(1, "sample", 0, {"device": "cpu", "max_epochs": None})
    assert text(message) == "Fit queued."
    (job,) = context.current_queue().active_for("sample")
    assert job.params["max_epochs"] == declared.default and job.params["device"] == "cpu"


def test_the_queue_refuses_a_cuda_fit_without_a_gpu(home, monkeypatch):
    """The same refusal for the page and the API: it is JobQueue.submit's (`home`: a request
    context of an app with the raw sample)."""
    monkeypatch.setattr(devices, "local_cuda", lambda: False)
    sample = context.current_registry().get("sample")
    with pytest.raises(InvalidFitOptions, match="no CUDA GPU is available"):
        context.current_queue().submit(sample, FitParams(device="cuda"), "ann")
    job, created = context.current_queue().submit(sample, FitParams(device="cpu"), "ann")
    assert created and job.state == "queued"


def test_a_reused_result_shows_as_reused_not_zero_seconds():
    job = {"state": "done", "reused": True, "started": 5.0, "finished": 5.0, "progress": {}}
    assert jobview.fit_time(job) == "reused"
    assert jobview.fit_time({**job, "progress": {"fit_seconds": 75.2}}) == "1 min 15 s"


def test_hosted_workers_record_whether_they_have_cuda(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path / "redis").start()
    try:
        config = AppConfig(cache_dir=tmp_path / "cache", sample_path=None, redis_url=redis.url)
        queue = JobQueue(config)
        store = RedisJobStore(redis.url)
        assert devices.cuda_available(queue) is False
        devices.record_worker(store, "gpu-box:1", True)
        devices.record_worker(store, "cpu-box:2", False)
        assert devices.cuda_available(queue) is True
        devices.record_worker(store, "gpu-box:1", False)  # it shut down
        assert devices.cuda_available(queue) is False
        # a worker killed outright never withdraws: its announcement expires
        devices.record_worker(store, "gpu-box:3", True, ttl=1)
        assert devices.cuda_available(queue) is True
        time.sleep(1.5)
        assert devices.cuda_available(queue) is False
        # the Celery signal handlers: a GPU worker announces itself on start, withdraws on stop
        from dashboard.jobs import celery_app as tasks

        sender = SimpleNamespace(app=SimpleNamespace(conf={"broker_url": redis.url}))
        for has_gpu in (False, True):
            devices.local_cuda.cache_clear()
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(tasks, "local_cuda", lambda has_gpu=has_gpu: has_gpu)
                tasks._reap_on_start(sender)
                assert wait_until_true(lambda: devices.cuda_available(queue)) is has_gpu
                tasks._forget_on_shutdown(sender)
                assert devices.cuda_available(queue) is False
    finally:
        redis.kill()


def wait_until_true(condition, timeout: float = 3.0) -> bool:
    """Whether `condition()` became true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# -- item 18: time left from the stage and epoch rates ------------------------------------------
def test_time_left_from_epoch_rate_and_earlier_stages():
    """Hand-worked: preprocessing (the bar's first 0.15) took 30 s, i.e. 200 s per whole bar."""
    assert STAGE_SPAN["train"] == (0.15, 0.70) and STAGE_SPAN["uncertainty"] == (0.78, 0.92)
    progress = {"stage": "train", "epoch": 50, "max_epochs": 500, "started": 1000.0}
    progress |= {"stage_started": 1030.0, "stage_fraction": 0.15}
    job = {"state": "running", "progress": progress, "label": "P", "dataset": "p"}
    # 50 epochs in 100 s: 450 left at 2 s = 900 s, then the last 0.30 of the bar at 200 s = 60 s
    seconds, bound = jobview.remaining(job, now=1130.0)
    assert seconds == pytest.approx(960.0) and bound  # training may stop early
    assert jobview.describe(job, now=1130.0).endswith("epoch 50 / 500 · at most about 16 min left.")
    # halfway through the uncertainty stage (0.78 -> 0.92, reporting its cell chunks): 0.07 of
    # the bar in 35 s (500 s per bar) leaves 0.07 × 500 = 35 s, then the last 0.08 at the rate
    # of the stages done (0.78 of the bar in 156 s: 200 s per bar) = 16 s
    post = {"stage": "uncertainty", "fraction": 0.85, "started": 1000.0}
    post |= {"stage_started": 1156.0, "stage_fraction": 0.78}
    seconds, bound = jobview.remaining({"state": "running", "progress": post}, now=1191.0)
    assert seconds == pytest.approx(51.0) and not bound
    # a stage that reports only its start: its share at that rate less the time it has run
    graph = {"stage": "graph", "fraction": 0.75, "started": 1000.0}
    graph |= {"stage_started": 1150.0, "stage_fraction": 0.75}
    seconds, _ = jobview.remaining({"state": "running", "progress": graph}, now=1152.0)
    assert seconds == pytest.approx(0.03 * 200 - 2 + 0.22 * 200)
    # no rate yet in the first stage, and none for a queued job
    first = {"stage": "preprocess", "fraction": 0.0, "started": 1000.0, "stage_started": 1000.0}
    assert jobview.remaining({"state": "running", "progress": first}, 1005.0) is None
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
    assert "fit time" in text(summary) and len(curve.data) > 0 and len(listing) == 2
    assert "Download data" in text(report) and pending is None
    assert find(module.html.Div(report), "home-history-csv") is not None
    layout = module.layout(ds=ds)
    assert find(layout, "home-report") is not None


# -- item 20: names break between words; badges in words ---------------------------------------
def test_dataset_names_break_only_between_words_and_badges_say_where_from(home):
    module, ds = home
    items = module.dataset_list(ds)
    texts = {text(item.children[0]): item for item in items}
    assert "lab_results.h5ad" in texts and len(texts) == 2
    link = items[[text(i.children[0]) for i in items].index("lab_results.h5ad")].children[0]
    pieces = [c for c in link.children.children if isinstance(c, str)]
    assert pieces == ["lab_", "results.", "h5ad"]  # <wbr> between, never inside a word
    badges = [text(b) for item in items for b in item.children[1].children]
    assert "data_dir" not in badges and "upload" not in badges
    assert {"opened", "sample"} <= set(badges)


def test_the_fit_card_says_why_the_button_is_off(home):
    module, ds = home
    for role, dataset, says in [
        ("viewer", "sample", "Fitting needs the editor role"),
        ("editor", ds, "holds results already"),
        ("editor", "sample", ""),
    ]:
        _as(role)
        layout = module.layout(ds=dataset)
        assert find(layout, "fit-btn").disabled is bool(says)
        why = text(find(layout, "fit-why"))
        assert (says in why) if says else why.strip().startswith("results are cached")


def test_time_left_in_words():
    progress = {"stage": "train", "epoch": 50, "max_epochs": 100, "started": 0.0}
    progress |= {"stage_started": 15.0, "stage_fraction": 0.15}  # 100 s per whole bar
    job = {"state": "running", "progress": progress}
    # 50 epochs in 100 s: 50 left = 100 s, + 0.30 × 100 s = 130 s
    assert jobview.time_left(job, now=115.0) == "at most about 2 min left"
    job["progress"] = {**progress, "epoch": 99}  # 99 epochs in 10 s: 0.1 s + 30 s
    assert jobview.time_left(job, now=25.0) == "under a minute left"
    job["progress"] = {**progress, "stage": "done"}
    assert jobview.time_left(job, now=115.0) == ""
