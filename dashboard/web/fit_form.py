"""The home page's fit form: one control per offered fit option, built from the options'
declaration (`core.params.FIT_OPTIONS`: label, help, range, choices)."""

from __future__ import annotations

from typing import Any

from dash import State, dcc, html

from core.fit_options import FitOption
from core.options import DEVICES
from core.params import FIT_OPTIONS
from dashboard.data.datasets import Dataset, DatasetRegistry, UnknownDataset, fingerprint

#: The fit options the home page offers (declared in `core.params.FitParams`), and the ids of
#: their controls; the request's other options keep their defaults.
FIT_CONTROLS = {
    "device": "fit-device",
    "max_epochs": "fit-epochs",
    "time_dependent_rate": "fit-time-dependent",
}
#: How the Device choices (`core.options.DEVICES`) read, with a usable CUDA GPU and without one.
DEVICE_LABELS = {
    "auto": ("auto (GPU when available)", "auto (CPU: no CUDA GPU found)"),
    "cpu": ("CPU", "CPU"),
    "cuda": ("CUDA GPU", "CUDA GPU (none found)"),
}


def device_options(cuda: bool | None) -> list[dict]:
    """The Device choices; without a usable CUDA GPU, CUDA is shown but disabled (None: it
    cannot be told now, every choice is offered and the server decides)."""
    return [
        {
            "label": DEVICE_LABELS[device][cuda is False],
            "value": device,
            "disabled": device == "cuda" and cuda is False,
        }
        for device in DEVICES
    ]


def fit_controls(values: dict[str, Any], cuda: bool | None) -> list:
    """A label (its tooltip: the option's help) and a control per `FIT_CONTROLS` option, set
    to `values`: a tick box for a switch, radio items for a choice (the devices as
    `device_options` says them), else a number box with the declared range."""
    children: list = []
    for name, control_id in FIT_CONTROLS.items():
        option: FitOption = FIT_OPTIONS[name]
        if option.kind is bool:  # a tick box that carries its own label
            box = [{"label": f" {option.help}", "value": name}]
            ticked = [name] if values[name] else []
            children.append(html.Div(dcc.Checklist(box, ticked, id=control_id), className="label"))
            continue
        children.append(html.Label(option.label, className="label", title=option.help))
        if option.choices:
            choices = device_options(cuda) if name == "device" else option.choices
            children.append(dcc.RadioItems(choices, values[name], id=control_id))
        else:
            step = 1 if option.kind is int else "any"
            children.append(
                dcc.Input(
                    id=control_id,
                    type="number",
                    min=option.min,
                    max=option.max,
                    step=step,
                    value=values[name],
                )
            )
    return children


def control_states() -> dict[str, State]:
    """{option: the State of its control}: the fit callback's `options` argument."""
    return {name: State(control_id, "value") for name, control_id in FIT_CONTROLS.items()}


def requested_options(values: dict[str, Any]) -> dict[str, Any]:
    """The fit options the controls ask for (`control_states`' values): a tick box's list
    becomes its boolean, an emptied number box is left out (the option's default)."""
    requested = {}
    for name, value in values.items():
        if FIT_OPTIONS[name].kind is bool:
            requested[name] = bool(value)
        elif value is not None:
            requested[name] = value
    return requested


#: The id of the splicing-reference picker (shown for a dataset without spliced/unspliced).
REFERENCE_PICKER = "fit-reference"


def reference_picker(registry: DatasetRegistry, dataset: Dataset | None) -> html.Div:
    """ "Predict splicing from a reference": a dataset without spliced/unspliced layers picks a
    dataset that has them (SplicedVAE learns the spliced share from it), the one sharing most
    genes first. Hidden otherwise (the picker stays in the page so the Fit callback can read
    it)."""
    needed = dataset is not None and dataset.kind == "raw" and not registry.has_splicing(dataset)
    references = registry.splicing_references(dataset) if needed else []
    options = [{"label": f"{d.label} ({n:,} shared genes)", "value": d.id} for d, n in references]
    note = (
        "This dataset has no spliced/unspliced counts: predict them from a reference with them "
        "(SplicedVAE, an scVI with a splicing-ratio head; 30 % of the reference's cells are "
        "held out to measure it, and every page of the result says so)."
        if options
        else "This dataset has no spliced/unspliced counts and no dataset here has them: add "
        "one (e.g. the pancreas subset) to predict them from it."
    )
    return html.Div(
        [
            html.Label("Predict splicing from a reference", className="label", title=note),
            dcc.Dropdown(
                options,
                options[0]["value"] if options else None,
                id=REFERENCE_PICKER,
                clearable=False,
                placeholder="no reference available",
            ),
            html.Div(note, className="caveat"),
        ],
        id="fit-reference-box",
        style=None if needed else {"display": "none"},
    )


def reference_option(registry: DatasetRegistry, reference_id: str | None) -> dict[str, Any]:
    """The fit option a picked reference sets (its sha256), {} when none is picked; an id the
    server does not offer raises UnknownDataset (the queue checks the reference again)."""
    if not reference_id:
        return {}
    reference = registry.get(reference_id)
    if not registry.has_splicing(reference):
        raise UnknownDataset(reference_id)
    return {"splicing_reference_sha256": fingerprint(reference.path)}
