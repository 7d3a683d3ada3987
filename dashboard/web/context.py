"""Per-request context for the page modules: the app's dataset registry and job queue, and
the dataset and results a page's URL names (`resolve`).

Page modules get the active configuration and job queue from the Flask app
(`current_registry`, `current_queue`), never from module globals, so one process can host
several apps.
"""

from __future__ import annotations

import dash
import flask
from dash import dcc, html
from dash.exceptions import PreventUpdate

from dashboard.data.contract import ResultsError
from dashboard.data.datasets import Dataset, DatasetRegistry, UnknownDataset
from dashboard.data.results import Results, load_results
from dashboard.data.stages import stage_key
from dashboard.hosting import auth
from dashboard.jobs.queue import JobQueue
from dashboard.jobs.store import QueueUnavailable
from dashboard.web import jobview
from dashboard.web.widgets import alert, page_href

CONFIG_KEY = "VELODASH_CONFIG"
QUEUE_KEY = "velodash_queue"
#: Pattern-id type of the store that marks a page drawn while its fit still lands stages.
STAGE_WATCH = "stage-watch"
#: `stage_watch`'s key on a page that waits for its fit's first stage.
WAITING = "waiting"


def current_registry() -> DatasetRegistry:
    """The dataset registry of the app serving the current request."""
    return DatasetRegistry(flask.current_app.config[CONFIG_KEY])


def current_queue() -> JobQueue:
    """The shared fit queue of the app serving the current request."""
    return flask.current_app.extensions[QUEUE_KEY]


def resolve(
    ds: str | None, on_home: bool = False
) -> tuple[Dataset | None, Results | None, html.Div | None]:
    """(dataset, its results, None) for a URL's `ds`, or what to show instead of a page.

    A missing `ds` means the default dataset. The third item is an alert explaining why there
    is nothing to show (unknown id, or a raw dataset not fitted yet) with a way forward that
    fits the user's role and the page (`on_home`: the Fit button is on this page).
    """
    registry = current_registry()
    ds = ds or registry.default_id()
    if ds is None:
        return None, None, alert(["No dataset is available. ", dcc.Link("Open one", href="/")])
    try:
        dataset = registry.get(ds)
    except UnknownDataset:
        return (
            None,
            None,
            alert([f"Unknown dataset '{ds}'. ", dcc.Link("Pick a dataset", href="/")], "danger"),
        )
    path = registry.results_for(dataset)
    if path is None:
        try:
            fitting = current_queue().active_for(dataset.id)
        except QueueUnavailable:
            fitting = []
        if fitting:
            job = current_queue().public(fitting[0])
            # the page opens in place once the fit's first stage lands
            watch = _watch_store(dataset.id, None, (), WAITING)
            return dataset, None, html.Div([jobview.pending_notice(dataset.id, job), watch])
        return dataset, None, alert(not_fitted_message(dataset, on_home), "info")
    try:
        return dataset, load_results(path), None
    except ResultsError as err:
        return dataset, None, alert(str(err), "danger")


def not_fitted_message(dataset: Dataset, on_home: bool) -> list:
    """What to do about a dataset without results, for the current user's role: editors are
    sent to the Fit button (this page's, or the home page's), viewers to an editor."""
    head = f"{dataset.label} has not been fitted yet. "
    if not auth.current_user().can("editor"):
        return [head + "Fitting needs the editor role: ask an editor or an admin to fit it."]
    if on_home:
        return [head + "Fit it with the Fit button on this page; progress shows at the top."]
    return [
        head,
        dcc.Link("Fit it on the home page", href=page_href("/", dataset.id)),
        " (progress is shown at the top of every page).",
    ]


def companion(results: Results) -> Results | None:
    """The fit of the same input and options with the other transcription rate (constant ↔
    α(t)) when it is in this app's cache and fits the same genes, else None."""
    path = current_registry().companion_fit(results.info)
    if path is None:
        return None
    try:
        other = load_results(path)
    except ResultsError:
        return None
    return other if set(other.gene_names) == set(results.gene_names) else None


def fitted(ds: str | None) -> tuple[Dataset, Results]:
    """(dataset, results) for a callback of a page that shows results; PreventUpdate (the
    page stays as it is) when they are gone, e.g. a dataset removed while its page was open."""
    dataset, results, _ = resolve(ds)
    if dataset is None or results is None:
        raise PreventUpdate
    return dataset, results


def stage_watch(dataset: Dataset, results: Results, page: str, stages: tuple[str, ...]):
    """What a results page (module ``page``) records of the late ``stages`` it shows, as they
    stood when it was drawn (``key`` None for complete results: nothing to watch): the shell
    draws the page again in place when one of them lands, fails or stops
    (`shell.redraw_when_a_stage_lands`)."""
    return _watch_store(dataset.id, page, stages, stage_key(results.path, stages))


def _watch_store(ds: str, page: str | None, stages: tuple[str, ...], key) -> dcc.Store:
    """The store of `stage_watch` (``page`` None: whatever page is shown); ``key`` `WAITING`
    on a page waiting for its fit's first stage."""
    path = dash.page_registry[page]["path"] if page in dash.page_registry else None
    return dcc.Store(
        id={"type": STAGE_WATCH, "page": "page"},
        data={"ds": ds, "path": path, "stages": list(stages), "key": key},
    )
