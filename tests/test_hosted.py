"""A hosted instance for real: redis-server, a Celery worker (`velodash worker`) and `velodash
serve` with 2 gunicorn workers, driven over HTTP like a browser or a script would.

One stack is shared by the module (started once, ~15 s). Fits use a tiny simulated dataset and
quick options. Covers sign-in on every route, roles, the JSON API, a fit running on the worker,
hostile input, and the faults: a worker killed mid-fit, a web-server restart, a Redis restart.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from fake_results import QUICK_FIT as QUICK
from fake_results import make_fake_results, write_raw_counts
from servers import REDIS_SERVER, CeleryWorker, RedisServer, WebServer, wait_until

from dashboard.hosting.users import add_user

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="needs redis-server: apt-get install redis-server (make test)"
)

PASSWORDS = {
    "alice": "alice-admin-pw",
    "eddie": "eddie-editor-pw",
    "erin": "erin-editor-pw",
    "vera": "vera-viewer-pw",
}
ROLES = {"alice": "admin", "eddie": "editor", "erin": "editor", "vera": "viewer"}
#: Long enough to be caught while running.
LONG = {**QUICK, "max_epochs": 5000, "early_stopping": False}
HOSTILE_TYPE = "<img src=x onerror=alert(1)>"


@dataclass
class Stack:
    root: Path
    config: Path
    datasets: Path
    cache: Path
    redis: RedisServer
    worker: CeleryWorker
    web: WebServer
    raw_id: str = ""
    results_id: str = ""
    snapshot: dict | None = None

    def client(self, user: str | None = None, password: str | None = None) -> httpx.Client:
        """An HTTP client for the web server, signed in as `user` (anonymous when None)."""
        auth = (user, password or PASSWORDS[user]) if user else None
        return httpx.Client(base_url=self.web.url, auth=auth, timeout=60)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    root = tmp_path_factory.mktemp("hosted")
    datasets = root / "datasets"
    datasets.mkdir()
    write_raw_counts(datasets / "tiny.h5ad")
    fake = make_fake_results(n_cells=120, n_genes=12, n_types=2)
    fake.obs["clusters"] = fake.obs["clusters"].cat.rename_categories([HOSTILE_TYPE, "plain"])
    fake.uns["velodash"]["cell_types"] = [HOSTILE_TYPE, "plain"]
    fake.write_h5ad(datasets / "fit.h5ad")
    users = root / "users.json"
    for name, password in PASSWORDS.items():
        add_user(users, name, ROLES[name], password)
    secret = root / "secret_key"
    secret.write_text("k" * 64)
    secret.chmod(0o600)
    redis = RedisServer(root / "redis").start()
    config = root / "velodash.toml"
    config.write_text(
        f'datasets_dir = "{datasets}"\ncache_dir = "{root / "cache"}"\n'
        f'users_file = "{users}"\nsecret_key_file = "{secret}"\n'
        f'redis_url = "{redis.url}"\nallow_upload = true\nmax_upload_mb = 1\n'
    )
    worker = CeleryWorker(config, root / "worker.log")
    web = WebServer(config, root / "serve.log", workers=2)
    web.launch()  # both start at once; then wait for each
    worker.start()
    web.start()
    built = Stack(root, config, datasets, root / "cache", redis, worker, web)
    with built.client("alice") as admin:
        found = {d["label"]: d["id"] for d in admin.get("/api/datasets").json()}
    built.raw_id, built.results_id = found["tiny.h5ad"], found["fit.h5ad"]
    built.snapshot = _snapshot(datasets)
    yield built
    for process in (web, worker):
        process.kill(signal.SIGQUIT, timeout=5)  # gunicorn: quick shutdown; Celery: cold
    redis.kill()


def _submit(client: httpx.Client, dataset: str, params: dict) -> httpx.Response:
    return client.post("/api/jobs", json={"dataset": dataset, "params": params})


def _wait_job(client: httpx.Client, job_id: str, states: tuple[str, ...], timeout: float) -> dict:
    def reached():
        job = client.get(f"/api/jobs/{job_id}").json()
        return job if job["state"] in states else None

    return wait_until(reached, timeout, interval=0.5, what=f"job {job_id} to be {states}")


def _wait_epoch(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    def training():
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["state"] in ("queued", "running"), job
        return job if (job["progress"].get("epoch") or 0) >= 1 else None

    return wait_until(training, timeout, interval=0.5, what="training to start")


def _fit_processes(stack: Stack) -> list[psutil.Process]:
    """Fit interpreters (`python -m dashboard.jobs.runner ...`) writing into this stack's cache."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "dashboard.jobs.runner" in cmdline and any(str(stack.cache) in arg for arg in cmdline):
            found.append(proc)
    return found


def _text(response: httpx.Response) -> str:
    """A callback response as text, with the JSON escapes (e.g. of "/") undone."""
    return json.dumps(response.json(), ensure_ascii=False)


def _web_processes(stack: Stack) -> list[psutil.Process]:
    """`velodash serve` (gunicorn master) and everything it started."""
    master = psutil.Process(stack.web.proc.pid)
    return [master, *master.children(recursive=True)]


def _no_traceback(response: httpx.Response) -> None:
    assert "Traceback" not in response.text and 'File "' not in response.text, response.text


# -- callbacks as the browser sends them ---------------------------------------------------------
def _dependencies(stack: Stack) -> list[dict]:
    with stack.client("alice") as admin:
        return admin.get("/_dash-dependencies").json()


def _callback(deps: list[dict], output: str) -> dict:
    """The callback whose outputs include exactly ``output`` ("id.property"; a duplicate
    output, "id.property@hash", of another callback does not count)."""
    return next(dep for dep in deps if output in dep["output"].strip(".").split("..."))


def _body(dep: dict, values: dict[str, object], changed: list[str] | None = None) -> dict:
    """A `_dash-update-component` request for callback `dep` with input/state `values`
    (keyed "id.property"; missing ones are None), as the Dash renderer builds it."""
    parts = dep["output"].strip(".").split("...")

    def spec(part: str) -> dict:
        component, prop = part.rsplit(".", 1)
        return {"id": component, "property": prop.split("@")[0]}

    def filled(items):
        return [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in items]

    outputs = [spec(p) for p in parts]
    return {
        "output": dep["output"],
        "outputs": outputs if dep["output"].startswith("..") else outputs[0],
        "inputs": filled(dep["inputs"]),
        "state": filled(dep["state"]),
        "changedPropIds": changed or [],
    }


def _page(client: httpx.Client, deps: list[dict], path: str, search: str = "") -> httpx.Response:
    """The routing callback Dash pages runs when a URL is opened (renders the page layout)."""
    dep = _callback(deps, "_pages_content.children")
    values = {"_pages_location.pathname": path, "_pages_location.search": search}
    return client.post("/_dash-update-component", json=_body(dep, values))


# -- sign-in --------------------------------------------------------------------------------------
def test_health_is_public_and_says_nothing_secret(stack):
    with stack.client() as anonymous:
        response = anonymous.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "queue": "ok"}
        assert anonymous.post("/health").status_code == 405


ROUTES = [
    ("GET", "/"),
    ("GET", "/stream?ds=sample"),
    ("GET", "/jobs"),
    ("GET", "/_dash-layout"),
    ("GET", "/_dash-dependencies"),
    ("GET", "/assets/velodash.css"),
    ("GET", "/_dash-component-suites/dash/dcc/async-graph.js"),
    ("GET", "/_favicon.ico"),
    ("GET", "/api/datasets"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/0123456789abcdef0123456789abcdef"),
    ("GET", "/api/users"),
    ("POST", "/api/jobs"),
    ("DELETE", "/api/jobs/0123456789abcdef0123456789abcdef"),
    ("POST", "/_dash-update-component"),
]
BAD_CREDENTIALS = {
    "none": {},
    "wrong password": {"Authorization": "Basic " + base64.b64encode(b"alice:nope").decode()},
    "unknown user": {"Authorization": "Basic " + base64.b64encode(b"mallory:x").decode()},
    "not base64": {"Authorization": "Basic %%%not-base64"},
    "no colon": {"Authorization": "Basic " + base64.b64encode(b"alice").decode()},
    "bearer": {"Authorization": "Bearer abc.def"},
}


@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS))
def test_every_route_refuses_without_valid_credentials(stack, credentials):
    callback = {"output": "job-state.data", "inputs": [], "state": []}
    with stack.client() as anonymous:
        for method, path in ROUTES:
            response = anonymous.request(
                method,
                path,
                headers=BAD_CREDENTIALS[credentials],
                json=callback if path.startswith("/_dash") else {"dataset": "x"},
            )
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            assert response.text.startswith("Sign-in required")
    with stack.client("alice") as admin:
        assert admin.get("/health").status_code == 200  # the server is alive


def test_no_callback_answers_without_sign_in(stack):
    deps = _dependencies(stack)
    assert len(deps) > 20
    with stack.client() as anonymous:
        for dep in deps:
            response = anonymous.post("/_dash-update-component", json=_body(dep, {}))
            assert response.status_code == 401, dep["output"]
            assert "Sign-in required" in response.text
        # dash-auth lets a routing callback through when the pathname it carries is a public
        # route: /health is kept outside Dash, so naming it opens nothing.
        page = _callback(deps, "_pages_content.children")
        body = _body(page, {"_pages_location.pathname": "/health"})
        assert anonymous.post("/_dash-update-component", json=body).status_code == 401
    with stack.client("vera") as viewer:  # the same request signed in works
        response = viewer.post("/_dash-update-component", json=body)
        assert response.status_code == 200


def test_session_cookie_flags_and_security_headers(stack):
    with stack.client("vera") as viewer:
        response = viewer.get("/")
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # Basic sign-in needs no session; any cookie set would be HttpOnly and SameSite=Lax.
    for cookie in response.headers.get_list("set-cookie"):
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


# -- roles ----------------------------------------------------------------------------------------
def test_viewer_browses_but_cannot_fit_upload_cancel_or_list_users(stack):
    deps = _dependencies(stack)
    with stack.client("vera") as viewer:
        response = _submit(viewer, stack.raw_id, QUICK)
        assert response.status_code == 403
        assert response.json()["error"] == (
            "Fitting needs the editor role; you are signed in as a viewer."
        )
        response = viewer.delete("/api/jobs/0123456789abcdef0123456789abcdef")
        assert response.status_code == 403
        assert viewer.get("/api/users").status_code == 403
        assert viewer.get("/api/datasets").status_code == 200
        # The same actions through the page callbacks are refused on the server as well.
        fit = _callback(deps, "fit-status.children")
        values = {"fit-btn.n_clicks": 1, "home-ds.data": stack.raw_id, "fit-epochs.value": 5}
        response = viewer.post(
            "/_dash-update-component", json=_body(fit, values, ["fit-btn.n_clicks"])
        )
        assert response.status_code == 200
        assert "Fitting needs the editor role" in response.text
        response = _upload(viewer, "x.h5ad", b"\x89HDF\r\n\x1a\n")
        assert response.status_code == 403
        assert "Uploading needs the editor role" in response.json()["error"]
        assert viewer.get("/api/jobs").json() == []  # nothing was queued
        page = _page(viewer, deps, "/stream", f"?ds={stack.results_id}")
        assert page.status_code == 200 and "stream-graph" in page.text
        download = _callback(deps, "genes-download.data")  # viewers may download the CSV
        values = {"genes-csv.n_clicks": 1, "genes-ds.data": stack.results_id}
        response = viewer.post("/_dash-update-component", json=_body(download, values))
        csv = response.json()["response"]["genes-download"]["data"]["content"]
        assert response.status_code == 200 and csv.startswith("gene,")
    with stack.client("eddie") as editor:
        response = editor.get("/api/users")
        assert response.status_code == 403
        assert response.json()["error"].endswith("you are signed in as an editor.")
    with stack.client("alice") as admin:
        users = admin.get("/api/users").json()
    assert users == [{"name": n, "role": ROLES[n]} for n in sorted(ROLES)]


# -- the queue on a Celery worker -----------------------------------------------------------------
@pytest.mark.slow
def test_fit_submitted_through_the_api_runs_on_the_worker(stack):
    with stack.client("eddie") as eddie, stack.client("erin") as erin:
        response = _submit(eddie, stack.raw_id, QUICK)
        assert response.status_code == 201, response.text
        job = response.json()
        assert (job["state"], job["owner"], job["dataset"]) == ("queued", "eddie", stack.raw_id)
        # Someone else asking for the same fit gets the same job, not a second one.
        again = _submit(erin, stack.raw_id, QUICK)
        assert (again.status_code, again.json()["id"]) == (200, job["id"])
        epochs_seen, web_tree = set(), set()

        def finished():
            current = eddie.get(f"/api/jobs/{job['id']}").json()
            epochs_seen.add(current["progress"].get("epoch"))
            # Visitors watching the fit (here: polls) never make the web server start anything.
            web_tree.add(len(_web_processes(stack)))
            return current if current["state"] in ("done", "failed", "cancelled") else None

        done = wait_until(finished, 240, interval=0.3, what="the fit")
        assert done["state"] == "done", done
        assert set(done) >= {"id", "dataset", "state", "progress", "owner", "error"}
        assert done["error"] is None and done["device"] == "cpu"
        assert len(done["progress"]["elbo_train"]) == QUICK["max_epochs"]
        assert epochs_seen - {None}, "no live epoch was ever reported"
        assert web_tree == {3}  # gunicorn master + 2 workers, throughout the fit
        results = stack.cache / "results" / f"{done['results']}.h5ad"
        assert results.is_file()
        fitted = {d["id"]: d["fitted"] for d in eddie.get("/api/datasets").json()}
        assert fitted[stack.raw_id] is True
        # Asking again once it is done answers at once with the finished job.
        again = _submit(erin, stack.raw_id, QUICK)
        assert (again.status_code, again.json()["id"]) == (200, job["id"])
        listed = eddie.get("/api/jobs").json()
        assert [j["id"] for j in listed].count(job["id"]) == 1
    assert "succeeded" in stack.worker.output()


@pytest.mark.slow
def test_cancel_rights_and_a_cancelled_fit_leaves_nothing(stack):
    with stack.client("eddie") as eddie, stack.client("erin") as erin:
        job = _submit(eddie, stack.raw_id, {**LONG, "seed": 1}).json()
        _wait_job(eddie, job["id"], ("running",), timeout=60)
        wait_until(lambda: _fit_processes(stack), 20, what="the fit process")
        refused = erin.delete(f"/api/jobs/{job['id']}")
        assert refused.status_code == 403
        assert refused.json()["error"] == "Only eddie or an admin can cancel this job."
        response = eddie.delete(f"/api/jobs/{job['id']}")
        assert response.status_code == 200
        assert response.json()["state"] == "cancelled"
        wait_until(lambda: not _fit_processes(stack), 20, what="the fit process to stop")
        assert eddie.delete(f"/api/jobs/{job['id']}").status_code == 409
        # An admin may cancel anyone's job (here one still queued behind nothing: cancelled
        # before or as it starts).
        queued = _submit(erin, stack.raw_id, {**LONG, "seed": 2}).json()
    with stack.client("alice") as admin:
        response = admin.delete(f"/api/jobs/{queued['id']}")
        assert (response.status_code, response.json()["state"]) == (200, "cancelled")
        assert response.json()["error"] == "cancelled by alice"
    wait_until(lambda: not _fit_processes(stack), 20, what="the fit process to stop")
    keys = {job["id"], queued["id"]}
    with stack.client("alice") as admin:
        for j in admin.get("/api/jobs").json():
            if j["id"] in keys:
                assert j["results"] is None
    leftovers = [p.name for p in (stack.cache / "results").glob("*") if p.suffix != ".lock"]
    assert all(not n.startswith(".") for n in leftovers), leftovers


# -- hostile input --------------------------------------------------------------------------------
def test_forged_and_traversing_ids_get_clear_refusals(stack):
    deps = _dependencies(stack)
    with stack.client("eddie") as eddie:
        for job_id in ("0123456789abcdef0123456789abcdef", "zzz", "x" * 500):
            response = eddie.get(f"/api/jobs/{job_id}")
            assert response.status_code == 404
            assert response.json() == {"error": "No job has this id."}
        response = eddie.get("/api/jobs/..%2F..%2Fetc%2Fpasswd")
        assert response.status_code == 404 and "error" in response.json()
        for dataset in ("../../etc/passwd", "/etc/passwd", stack.raw_id + "/..", ""):
            response = _submit(eddie, dataset, QUICK)
            assert response.status_code in (400, 404), response.text
            _no_traceback(response)
        response = _submit(eddie, "../../etc/passwd", QUICK)
        assert response.json()["error"] == "Unknown dataset id; GET /api/datasets lists them."
        response = _submit(eddie, stack.raw_id, {"max_epochs": "5; rm -rf /", "bogus": 1})
        assert response.status_code == 400 and "unknown fit option(s): bogus" in response.text
        response = _submit(eddie, stack.raw_id, {"skip": ["../../etc"]})
        assert response.status_code == 400 and "unknown analysis" in response.text
        # A dataset id or gene name that walks out of the folder is just unknown.
        page = _page(eddie, deps, "/genes", "?ds=../../etc/passwd&gene=../../etc/passwd")
        assert page.status_code == 200 and "Unknown dataset '../../etc/passwd'" in _text(page)
        gene = _callback(deps, "gene-title.children")
        values = {"genes-selected.data": "../../../etc/passwd", "genes-ds.data": stack.results_id}
        values["gene-color-by.value"] = "cell_type"
        response = eddie.post("/_dash-update-component", json=_body(gene, values))
        assert response.status_code == 200
        assert "Unknown gene '../../../etc/passwd'" in _text(response)
        # A forged callback: unknown output, malformed body, not JSON.
        forged = {"output": "nope.children", "inputs": [], "state": []}
        assert eddie.post("/_dash-update-component", json=forged).status_code == 404
        response = eddie.post("/_dash-update-component", json={"output": 1, "inputs": "x"})
        assert (response.status_code, response.text) == (400, "Malformed callback request.\n")
        response = eddie.post("/_dash-update-component", content=b"{not json")
        assert response.status_code == 400
        for response in (
            eddie.get("/api/jobs/zzz"),
            eddie.post("/_dash-update-component", content=b"{not json"),
        ):
            _no_traceback(response)
    with stack.client("alice") as admin:
        assert admin.get("/health").json()["status"] == "ok"


def test_cross_site_requests_are_refused(stack):
    with stack.client("eddie") as eddie:
        for header in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}):
            response = eddie.post(
                "/api/jobs", json={"dataset": stack.raw_id, "params": QUICK}, headers=header
            )
            assert response.status_code == 403
            assert response.json()["error"].startswith("Cross-site request refused")
            response = eddie.post(
                "/_dash-update-component",
                json={"output": "job-state.data", "inputs": [], "state": []},
                headers=header,
            )
            assert response.status_code == 403
        response = eddie.delete(
            "/api/jobs/0123456789abcdef0123456789abcdef", headers={"Origin": "null"}
        )
        assert response.status_code == 403
        # A form post (what a cross-site <form> can send) is not JSON.
        response = eddie.post("/api/jobs", data={"dataset": stack.raw_id})
        assert response.status_code == 415
        # The same request from the app's own pages passes the check (and meets the next one).
        same = {"Origin": stack.web.url}
        response = eddie.post("/api/jobs", json={"dataset": "nope"}, headers=same)
        assert response.status_code == 404


def _upload(client: httpx.Client, filename: str, payload: bytes):
    """Send a file as the home page's drop zone does: multipart to ``POST /upload``."""
    return client.post("/upload", files={"file": (filename, payload)})


def test_uploads_oversize_non_anndata_and_traversing_names(stack):
    uploads = stack.cache / "uploads"
    with stack.client("eddie") as eddie:
        big = _upload(eddie, "big.h5ad", b"\x89HDF\r\n\x1a\n" + bytes(3 * 2**20))
        assert big.status_code == 413
        assert big.json()["error"].startswith("The file is larger than the 1 MB upload limit")
        text = _upload(eddie, "notes.h5ad", b"just some text, not HDF5")
        assert text.status_code == 400 and "is not an HDF5 file" in text.text
        csv = _upload(eddie, "table.csv", b"a,b\n1,2\n")
        assert "not a supported file type" in csv.text
        tiny = (stack.datasets / "tiny.h5ad").read_bytes()
        payload = write_raw_counts(stack.root / "fresh.h5ad", n_cells=150).read_bytes()
        evil = _upload(eddie, "../../../../tmp/evil.h5ad", payload)
        assert evil.status_code == 200 and "Uploaded evil.h5ad." in evil.text, evil.text
        # the datasets folder's own file again, under a path-like name: nothing stored
        twin = _upload(eddie, "../twin.h5ad", tiny)
        assert "'twin.h5ad' is identical to tiny.h5ad" in twin.text, twin.text
        for response in (big, text, csv, evil, twin):
            _no_traceback(response)
    stored = sorted(p.name for p in uploads.iterdir())
    assert len(stored) == 2 and stored[0].endswith(".h5ad") and "evil" not in stored[0]
    assert stored[1] == stored[0] + ".json"  # the label: the file name, never a path
    assert json.loads((uploads / stored[1]).read_text()) == {"name": "evil.h5ad"}
    assert not Path("/tmp/evil.h5ad").exists()


def test_html_in_labels_is_data_not_markup(stack):
    deps = _dependencies(stack)
    with stack.client("vera") as viewer:
        page = _page(viewer, deps, "/", f"?ds={stack.results_id}")
    # Dash sends component trees as JSON: the label is a string prop, never raw HTML.
    assert page.status_code == 200
    assert f"{HOSTILE_TYPE}: " in _text(page)  # the cell-type pill, as a string prop
    assert page.headers["Content-Type"].startswith("application/json")


# -- faults ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_fit_fails_within_30s_and_a_retry_succeeds(stack):
    params = {**QUICK, "max_epochs": 200, "early_stopping": False, "seed": 3}
    with stack.client("eddie") as eddie:
        job = _submit(eddie, stack.raw_id, params).json()
        _wait_epoch(eddie, job["id"])
        stack.worker.kill(signal.SIGKILL)
        killed = time.monotonic()
        failed = _wait_job(eddie, job["id"], ("failed", "done", "cancelled"), timeout=30)
        assert failed["state"] == "failed"
        assert time.monotonic() - killed < 30
        assert "worker running this fit stopped" in failed["error"]
        wait_until(lambda: not _fit_processes(stack), 10, what="the orphaned fit to die")
        results = stack.cache / "results"
        assert not any(p.name.startswith(".") and p.suffix == ".tmp" for p in results.iterdir())
        assert not any(p.suffix == ".h5ad" and job["id"] in p.name for p in results.iterdir())
        # Restart the worker; asking again for the same fit queues a new job, which completes.
        stack.worker.start()
        retry = _submit(eddie, stack.raw_id, params)
        assert retry.status_code == 201 and retry.json()["id"] != job["id"]
        done = _wait_job(eddie, retry.json()["id"], ("done", "failed"), timeout=300)
        assert done["state"] == "done", done


@pytest.mark.slow
def test_web_server_restart_serves_finished_results_without_refit(stack):
    deps = _dependencies(stack)
    with stack.client("eddie") as eddie:
        first = _submit(eddie, stack.raw_id, QUICK)
        job = _wait_job(eddie, first.json()["id"], ("done", "failed"), timeout=240)
        assert job["state"] == "done"
        results = stack.cache / "results" / f"{job['results']}.h5ad"
        stamp = results.stat().st_mtime_ns
    received = stack.worker.output().count("received")
    stack.web.kill(signal.SIGQUIT, timeout=5)
    stack.web.start()
    with stack.client("eddie") as eddie:
        again = _submit(eddie, stack.raw_id, QUICK)
        assert (again.status_code, again.json()["id"], again.json()["state"]) == (
            200,
            job["id"],
            "done",
        )
        page = _page(eddie, deps, "/stream", f"?ds={stack.raw_id}")
        assert page.status_code == 200 and "stream-graph" in page.text
        assert "has not been fitted" not in page.text
    assert results.stat().st_mtime_ns == stamp
    assert stack.worker.output().count("received") == received  # no task reached the worker


@pytest.mark.slow
def test_redis_restart_the_app_recovers_without_a_restart(stack):
    deps = _dependencies(stack)
    stack.redis.kill()
    with stack.client("eddie") as eddie:
        health = eddie.get("/health")
        assert (health.status_code, health.json()["queue"]) == (200, "unreachable")
        response = eddie.get("/api/jobs")
        assert response.status_code == 503
        assert response.json()["error"].startswith("The job queue is unavailable")
        _no_traceback(response)
        page = _page(eddie, deps, "/stream", f"?ds={stack.results_id}")  # pages still work
        assert page.status_code == 200 and "stream-graph" in page.text
        response = _submit(eddie, stack.raw_id, {**QUICK, "seed": 4})
        assert response.status_code == 503
        stack.redis.start()
        wait_until(lambda: eddie.get("/health").json()["queue"] == "ok", 30, what="recovery")
        assert eddie.get("/api/jobs").status_code == 200
        # The worker reconnected by itself: a new fit runs to completion.
        response = _submit(eddie, stack.raw_id, {**QUICK, "seed": 4})
        assert response.status_code == 201, response.text
        done = _wait_job(eddie, response.json()["id"], ("done", "failed"), timeout=240)
        assert done["state"] == "done", done


@pytest.mark.slow
def test_serve_without_redis_runs_fits_on_the_local_queue(stack, tmp_path):
    config = tmp_path / "local.toml"
    config.write_text(
        f'datasets_dir = "{stack.datasets}"\ncache_dir = "{tmp_path / "cache"}"\n'
        f'users_file = "{stack.root / "users.json"}"\n'
    )
    web = WebServer(config, tmp_path / "serve.log", workers=2).start()
    try:
        master = psutil.Process(web.proc.pid)
        local_worker = next(p for p in master.children() if "worker" in p.cmdline())
        with httpx.Client(base_url=web.url, auth=("eddie", PASSWORDS["eddie"])) as eddie:
            response = eddie.post("/api/jobs", json={"dataset": stack.raw_id, "params": QUICK})
            assert response.status_code == 201, response.text
            done = _wait_job(eddie, response.json()["id"], ("done", "failed"), timeout=240)
        assert done["state"] == "done", done
        assert (tmp_path / "cache" / "jobs.sqlite").is_file()
    finally:
        web.kill()
    local_worker.wait(30)  # stops with the server


def test_the_datasets_folder_was_never_written(stack):
    """Fits, uploads and locks of every test above went to the cache, never to datasets_dir."""
    assert _snapshot(stack.datasets) == stack.snapshot
