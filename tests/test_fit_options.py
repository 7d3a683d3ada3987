"""Every fit option is declared once (`core.params.FitParams`): its checks, the command line's
flags, the pipeline's configs and the docs table all come from that declaration, and the
content address of the results (`results_key`) stays what it was."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import core.params
from core.model import ModelConfig
from core.params import FIT_OPTIONS, FitParams, parse_fit_options, results_key
from core.preprocess import PreprocessConfig
from core.train import TrainConfig
from dashboard.cli import build_parser, fit_params, main

REPO = Path(__file__).resolve().parents[1]
#: `velodash fit`'s flags as README.md and earlier versions have them.
FIT_FLAGS = {
    "--out",
    "--groupby",
    "--max-epochs",
    "--batch-size",
    "--patience",
    "--device",
    "--seed",
    "--n-samples",
    "--posterior-mode",
    "--pi-estimator",
    "--time-statistic",
    "--stopping",
    "--threads",
    "--no-normalize",
    "--min-shared-counts",
    "--n-top-genes",
    "--n-pcs",
    "--n-neighbors",
    "--time-dependent-rate",
    "--skip",
    "--baseline",
    "--splicing-reference",
    "--splicing-loss",
    "--quiet",
}


# -- the content address --------------------------------------------------------------------------
def test_results_key_of_the_defaults_is_pinned(monkeypatch):
    """Results are found by this key: a renamed option, a changed default or a new field
    would orphan every cached result. Change the pins only with a version bump."""
    monkeypatch.setattr(core.params, "__version__", "0.1.0")
    assert results_key("0" * 64, FitParams()) == "ebf62f4b001b0cf135a6"
    changed = FitParams(
        max_epochs=10, skip=("baseline", "graph"), groupby="clusters", device="cpu", normalize=False
    )
    assert results_key("0" * 64, changed) == "2bec4532d62857c180ad"
    # the same options given as JSON (a list for skip) address the same results
    assert parse_fit_options(changed.to_dict()) == changed


# -- checks ---------------------------------------------------------------------------------------
def test_parse_fit_options_takes_json_values_and_keeps_the_rest_default():
    params = parse_fit_options({"max_epochs": 12, "skip": ["baseline"], "lr": 1, "groupby": None})
    assert params == FitParams(max_epochs=12, skip=("baseline",), lr=1)
    assert params.skip == ("baseline",) and hash(params)
    assert parse_fit_options({}) == FitParams()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bogus": 1, "max_epochs": 5}, "unknown fit option(s): bogus; known: baseline, "),
        ({"max_epochs": -4}, "'max_epochs' must be an integer between 1 and 100000; got -4"),
        ({"max_epochs": 100_001}, "'max_epochs' must be an integer between 1 and 100000"),
        ({"max_epochs": "5; rm -rf /"}, "'max_epochs' must be an integer between 1 and 100000;"),
        ({"max_epochs": 5.0}, "'max_epochs' must be an integer between 1 and 100000; got 5.0"),
        ({"max_epochs": True}, "'max_epochs' must be an integer between 1 and 100000; got True"),
        ({"n_neighbors": 1}, "'n_neighbors' must be an integer between 2 and 200; got 1"),
        ({"n_samples": 10**9}, "'n_samples' must be an integer between 1 and 1000; got 1000000000"),
        ({"n_hidden": 10**7}, "'n_hidden' must be an integer between 1 and 4096; got 10000000"),
        ({"seed": -1}, "'seed' must be an integer between 0 and 4294967295; got -1"),
        ({"lr": math.nan}, "'lr' must be a number between 1e-06 and 1.0; got nan"),
        ({"normalize": 1}, "'normalize' must be true or false; got 1"),
        ({"groupby": 3}, "'groupby' must be a string or null; got 3"),
        ({"device": "tpu"}, "'device' must be one of auto, cpu, cuda; got 'tpu'"),
        ({"baseline": "em"}, "'baseline' must be one of steady_state, dynamical; got 'em'"),
        ({"skip": ["../../etc"]}, "'skip' names an unknown analysis: '../../etc'; choose from"),
        ({"skip": "graph"}, "'skip' must be a list with any of graph, intrinsic, extrinsic"),
        ({"skip": [1]}, "'skip' must be a list with any of"),
        ({"device": "x" * 500}, "got 'xxxxxxxx"),
    ],
)
def test_bad_options_name_the_option_the_value_and_what_is_allowed(values, message):
    with pytest.raises(ValueError) as error:
        parse_fit_options(values)
    assert message in str(error.value)
    assert len(str(error.value)) < 400  # a hostile value is not echoed in full


def test_a_non_mapping_is_refused():
    with pytest.raises(ValueError, match=r"fit options must be an object .*; got list"):
        parse_fit_options(["max_epochs", 5])


def test_fit_params_checks_every_option_when_built():
    message = "'batch_size' must be an integer between 2 and 65536; got 1"
    with pytest.raises(ValueError, match=message):
        FitParams(batch_size=1)
    with pytest.raises(ValueError, match="unknown analysis"):
        FitParams(skip=("nonsense",))
    # from_dict is for records: unknown keys (an older version's) are ignored, values checked
    assert FitParams.from_dict({"max_epochs": 3, "gone": 1}) == FitParams(max_epochs=3)
    with pytest.raises(ValueError, match="'max_epochs'"):
        FitParams.from_dict({"max_epochs": 0})


def test_every_default_is_allowed_and_every_field_declared():
    assert list(FIT_OPTIONS) == [f for f in FitParams.__dataclass_fields__]
    for option in FIT_OPTIONS.values():
        assert option.problem(option.default) is None, option.name
        assert option.help and option.label[0].isupper()


# -- the pipeline's configs -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "shared"),
    [
        (
            PreprocessConfig,
            {"min_shared_counts", "n_top_genes", "n_pcs", "n_neighbors", "normalize"}
            | {"compute_umap", "seed"},
        ),
        (ModelConfig, {"n_hidden", "n_latent", "time_dependent_rate"}),
        (
            TrainConfig,
            {"max_epochs", "batch_size", "lr", "weight_decay", "patience", "early_stopping"}
            | {"pi_estimator", "time_statistic", "seed"},
        ),
    ],
)
def test_configs_take_the_options_of_the_same_name(config, shared):
    """`for_config` matches by name: a renamed option (or config field) would silently stop
    reaching the config, so the shared names are pinned; the configs' own defaults (for direct
    use of core) agree with the declared ones."""
    defaults = FitParams().for_config(config)
    assert set(defaults) == shared
    built = config(**defaults)
    assert all(getattr(built, name) == value for name, value in defaults.items())
    assert defaults == {name: getattr(config(), name) for name in shared}
    changed = FitParams(seed=7, n_pcs=11, n_latent=3, patience=2)
    built = config(**changed.for_config(config))
    for name in shared & {"seed", "n_pcs", "n_latent", "patience"}:
        assert getattr(built, name) == getattr(changed, name)


# -- the command line -----------------------------------------------------------------------------
def _fit_actions() -> dict[str, object]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {flag: a for a in sub.choices["fit"]._actions for flag in a.option_strings}


def test_fit_flags_come_from_the_declaration_and_keep_their_names():
    actions = _fit_actions()
    assert set(actions) - {"-h", "--help"} == FIT_FLAGS
    for option in FIT_OPTIONS.values():
        assert (option.flag in actions) is option.cli
        if option.cli:
            assert actions[option.flag].dest == option.name
            assert option.help.split()[0] in actions[option.flag].help


def test_fit_flags_make_the_declared_options():
    """What `velodash fit` hands the pipeline, with no flag and with flags of every kind."""
    parse = build_parser().parse_args
    assert fit_params(parse(["fit", "x.h5ad"])) == FitParams()
    argv = ["fit", "x.h5ad", "--no-normalize", "--time-dependent-rate", "--max-epochs", "4"]
    argv += ["--device", "cpu", "--skip", "baseline", "--skip", "graph", "--groupby", "clusters"]
    assert fit_params(parse(argv)) == FitParams(
        normalize=False,
        time_dependent_rate=True,
        max_epochs=4,
        device="cpu",
        skip=("baseline", "graph"),
        groupby="clusters",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-epochs", "0"], "argument --max-epochs: must be an integer between 1 and 100000"),
        (["--n-pcs", "abc"], "argument --n-pcs: must be an integer between 1 and 500; got 'abc'"),
        (["--seed", "1.5"], "argument --seed: must be an integer between 0 and 4294967295"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ],
)
def test_fit_refuses_values_out_of_range_before_reading_data(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "missing.h5ad", *argv])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


# -- the docs -------------------------------------------------------------------------------------
def test_architecture_table_lists_every_option_as_declared():
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## core/params.py")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(\w+)` \| `(.*?)` \| (.*?) \| (.*?) \|$", section, re.MULTILINE)
    expected = [
        (
            o.name,
            repr(o.default),
            o.allowed(),
            f"`{o.flag}`" if o.cli else "–",
        )
        for o in FIT_OPTIONS.values()
    ]
    assert rows == expected


def test_equal_options_have_one_content_key():
    """0 and 0.0 (JSON clients send either) are one fit: one results file, one job."""
    from core.params import parse_fit_options, results_key

    as_int = parse_fit_options({"weight_decay": 0, "lr": 1})
    as_float = parse_fit_options({"weight_decay": 0.0, "lr": 1.0})
    assert as_int == as_float
    assert results_key("f", as_int) == results_key("f", as_float)
    assert isinstance(as_int.weight_decay, float) and isinstance(as_int.lr, float)
