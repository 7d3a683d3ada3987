"""The `velodash` command: `fit` a dataset, `simulate` sample data, `run` the dashboard; for a
hosted instance `serve` it, run fit `worker`s and manage `users`."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.fit_options import FitOption
from core.options import in_pipeline_order
from core.params import FIT_OPTIONS, FitParams, ProgressEvent
from dashboard.config import CHECKOUT_ROOT, ROLES, SAMPLE_PATH


def _fit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit veloVI on a raw spliced/unspliced dataset and write the results file",
        description="Fit veloVI on INPUT (.h5ad or .loom with layers 'spliced' and 'unspliced') "
        "and write the results AnnData (velocity, uncertainty, coherence, permutation scores).",
    )
    p.add_argument("input", type=Path, help="raw dataset (.h5ad or .loom)")
    p.add_argument("--out", type=Path, help="results file (default: ./<input>.velodash.h5ad)")
    for option in FIT_OPTIONS.values():
        if option.cli:
            p.add_argument(option.flag, dest=option.name, **_fit_argument(option))
    p.add_argument(
        "--splicing-reference",
        type=Path,
        metavar="REF",
        help="for INPUT without spliced/unspliced layers: a dataset with them (.h5ad/.loom, "
        "same species and gene naming) that SplicedVAE learns to predict them from; the "
        "results record that S/U were predicted and the held-out validation",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: $VELODASH_THREADS, else every core)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fit)


def _fit_argument(option: FitOption) -> dict[str, Any]:
    """`add_argument` keywords for a fit option, from its declaration in `core.params`."""
    if option.kind is bool:
        if option.default:
            return {"action": "store_false", "help": f"switch off {option.help}"}
        return {"action": "store_true", "help": option.help}
    if option.kind is tuple:
        return {
            "action": "append",
            "default": [],
            "choices": option.choices,
            "metavar": "NAME",
            "help": option.help,
        }
    if option.choices:
        return {"choices": option.choices, "default": option.default, "help": option.help}
    if option.kind in (int, float):
        help = f"{option.help} (default: %(default)s)"
        return {"type": _checked_number(option), "default": option.default, "help": help}
    return {"default": option.default, "help": option.help}


def _checked_number(option: FitOption) -> Callable[[str], int | float]:
    """An argparse `type` reading a number for `option` and refusing values it does not allow."""

    def parse(text: str) -> int | float:
        try:
            value = option.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {option.allowed()}; got {text!r}") from None
        problem = option.problem(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def _simulate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a simulated branching dataset with ground truth",
        description="Write the deterministic branching simulation that velodash ships as sample "
        "data (raw spliced/unspliced counts plus true time, lineage, rates and velocity).",
    )
    # From a checkout it rewrites the bundled sample; installed, it writes into this folder.
    default = SAMPLE_PATH if CHECKOUT_ROOT is not None else Path(SAMPLE_PATH.name)
    p.add_argument("out", type=Path, nargs="?", default=default)
    p.add_argument("--n-cells", type=int, default=2400)
    p.add_argument("--n-genes", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_simulate)


def _convert_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="rewrite a results file of an older velodash so it opens lazily",
        description="Rewrite a results .h5ad written by an older velodash in the current layout "
        "(layers chunked by gene, compressed; same content), in place or to --out.",
    )
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, default=None, help="write here instead of in place")
    p.set_defaults(func=_cmd_convert)


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="launch the dashboard (default: on the bundled sample data)",
        description="Serve the velodash dashboard. Each DATA is a raw dataset (fitted in the "
        "background) or a results file from `velodash fit` (opened at once).",
    )
    p.add_argument("data", type=Path, nargs="*", help="datasets or results files to offer")
    p.add_argument("--data-dir", type=Path, help="folder whose .h5ad/.loom files are offered")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, VELODASH_HOST)")
    p.add_argument("--port", type=int, help="port (default 8050, VELODASH_PORT)")
    p.add_argument("--cache-dir", type=Path, help="results and job cache (VELODASH_CACHE_DIR)")
    p.add_argument("--no-upload", action="store_true", help="disable uploads (hosted use)")
    p.add_argument("--debug", action="store_true", help="Dash debug mode (never when hosted)")
    p.set_defaults(func=_cmd_run)


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the dashboard to a lab: sign-in, roles, gunicorn (see docs/hosting.md)",
        description="Serve velodash with gunicorn from a TOML config file (every key can also "
        "be set as VELODASH_<KEY>). Fits run on `velodash worker` processes.",
    )
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8050)")
    p.add_argument("--workers", type=int, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, help="threads per worker process (default 4)")
    p.add_argument("--check", action="store_true", help="validate, print what would be served")
    p.set_defaults(func=_cmd_serve)


def _worker_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run fits from the shared job queue (Celery over Redis, or the local queue)",
        description="Execute queued fits: a Celery worker when the config sets redis_url "
        "(run one per GPU), else the local queue of this machine.",
    )
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument(
        "--concurrency", type=int, help="fits at once (default: job_concurrency, else 1)"
    )
    p.set_defaults(func=_cmd_worker)


def _users_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "users",
        help="add, remove or list the users of a hosted instance",
        description="Manage the users file: passwords are stored as salted scrypt hashes.",
    )
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add", help="add a user or change their role/password (password from stdin or a prompt)"
    )
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default=ROLES[0])
    add.add_argument(
        "--no-password", action="store_true", help="role only, for OpenID Connect sign-in"
    )
    remove = actions.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    listing = actions.add_parser(
        "list", help="list users, their roles and how they sign in (password or OIDC)"
    )
    for action in (add, remove, listing):
        action.add_argument("--users-file", type=Path, required=True)
    p.set_defaults(func=_cmd_users)


class _FitReporter:
    """Progress bar over epochs plus one line per pipeline stage."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.stage = ""

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if event.stage == "train" and event.epoch is not None:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=event.max_epochs, desc="training", unit="epoch")
            self.bar.update(event.epoch - self.bar.n)
            self.bar.set_postfix(elbo_val=f"{event.elbo_validation:.1f}")
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if event.stage != self.stage or event.stage == "preprocess":
            print(f"[{event.fraction:4.0%}] {event.message}", file=sys.stderr)
            self.stage = event.stage


def fit_params(args: argparse.Namespace) -> FitParams:
    """The `FitParams` of parsed `velodash fit` arguments (options without a flag: defaults)."""
    return FitParams(**{name: getattr(args, name) for name, o in FIT_OPTIONS.items() if o.cli})


#: Exit status of a fit whose late stage failed (its other stages were written).
STAGE_FAILED_STATUS = 4


def _cmd_fit(args: argparse.Namespace) -> int:
    from core.pipeline import fit_file
    from core.staged_results import StageFailed

    params = fit_params(args)
    out = args.out or Path.cwd() / f"{args.input.stem}.velodash.h5ad"
    start = time.perf_counter()
    try:
        path = fit_file(
            args.input,
            out,
            params,
            progress=_FitReporter(args.quiet),
            threads=args.threads,
            splicing_reference=args.splicing_reference,
        )
    except StageFailed as failed:
        _print_summary(failed.path, time.perf_counter() - start)
        print(f"velodash: error: {failed}", file=sys.stderr)
        return STAGE_FAILED_STATUS
    _print_summary(path, time.perf_counter() - start)
    return 0


def _print_summary(path: Path, seconds: float) -> None:
    import h5py
    from anndata.io import read_elem

    # only the record and the two indexes: anndata's backed mode would read every layer
    # (~8 GB at 100,000 cells) for one line
    with h5py.File(path, "r") as f:
        info = read_elem(f["uns/velodash"])
        n_obs, n_vars = (len(f[key][f[key].attrs["_index"]]) for key in ("obs", "var"))
    history = info["history"]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in in_pipeline_order(dict(info["timings"])))
    print(
        f"velodash: {n_obs} cells × {n_vars} genes fitted on {info['device']} in "
        f"{seconds:.1f}s ({len(history['elbo_validation'])} epochs, "
        f"{history.get('stop_reason', 'stopped')}, best validation ELBO "
        f"{min(history['elbo_validation']):.2f})\n"
        f"  stages: {timings}\n"
        f"{_splicing_summary(info.get('splicing'))}"
        f"  results: {path}"
    )


def _splicing_summary(record) -> str:
    """One line on predicted spliced/unspliced counts ('' when the input had its own)."""
    if record is None:
        return ""
    held = record["held_out"]
    line = (
        f"  S/U predicted by SplicedVAE from {record['reference']}: held-out ratio R = "
        f"{held['ratio_pearson']:.3f}, RMSE = {held['ratio_rmse']:.3f} "
        f"({int(record['n_cells_held_out'])} cells, {int(record['n_genes'])} genes)"
    )
    if "velocity" in record:
        velocity = record["velocity"]
        line += (
            f"; velocity cosine vs true S/U median {velocity['cosine_median']:.2f}, "
            f"latent-time Spearman {velocity['latent_time_spearman']:.2f}"
        )
    return line + "\n"


def _cmd_simulate(args: argparse.Namespace) -> int:
    from core.simulate import write_sample_data

    path = write_sample_data(args.out, n_cells=args.n_cells, n_genes=args.n_genes, seed=args.seed)
    print(f"velodash: simulated {args.n_cells} cells × {args.n_genes} genes → {path}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from core.results_io import convert_results

    path = convert_results(args.results, args.out)
    print(f"velodash: converted {args.results} → {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dashboard.web.app import serve

    serve(
        data=list(args.data),
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        cache_dir=args.cache_dir,
        allow_upload=not args.no_upload,
        debug=args.debug,
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from dashboard.hosting.check import check
    from dashboard.hosting.settings import load_config

    hosted = load_config(
        args.config, host=args.host, port=args.port, workers=args.workers, threads=args.threads
    )
    if args.check:
        text, status = check(hosted)
        print(text)
        return status
    from dashboard.hosting.server import serve
    from dashboard.web.app import create_app

    serve(hosted, create_app)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from dashboard.hosting.server import run_worker
    from dashboard.hosting.settings import load_config

    if args.concurrency is not None and args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    run_worker(load_config(args.config), args.concurrency)
    return 0


def _read_password() -> str:
    """The new password: the first line of stdin when piped, else typed twice at a prompt."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise ValueError("the two passwords differ")
    return password


def _cmd_users(args: argparse.Namespace) -> int:
    from dashboard.hosting.users import add_user, read_users, remove_user, users_table

    if args.action == "add":
        password = None if args.no_password else _read_password()
        new = add_user(args.users_file, args.name, args.role, password)
        print(f"velodash: {'added' if new else 'updated'} user {args.name} ({args.role})")
    elif args.action == "remove":
        remove_user(args.users_file, args.name)
        print(f"velodash: removed user {args.name}")
    else:
        print(
            users_table(read_users(args.users_file)) or f"velodash: no users in {args.users_file}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `velodash` argument parser: `fit`, `simulate`, `run`, `serve`, `worker`, `users`."""
    parser = argparse.ArgumentParser(
        prog="velodash", description="RNA-velocity dashboard on a fast PyTorch veloVI."
    )
    from core import __version__

    parser.add_argument("--version", action="version", version=f"velodash {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _fit_parser(sub)
    _simulate_parser(sub)
    _convert_parser(sub)
    _run_parser(sub)
    _serve_parser(sub)
    _worker_parser(sub)
    _users_parser(sub)
    return parser


def out_of_memory_message(error: BaseException) -> str | None:
    """A fix-it message when ``error`` is running out of (GPU) memory, else None."""
    text = str(error)
    if not (
        isinstance(error, MemoryError)
        or "can't allocate memory" in text
        or "out of memory" in text.lower()
    ):
        return None
    where = "GPU" if "CUDA" in text or "cuda" in text else "RAM"
    detail = text.splitlines()[0][:200] if text else type(error).__name__
    return (
        f"the fit ran out of {where} ({detail}). "
        "Close other programs or use a machine with more memory; for a GPU, --device cpu "
        "uses the machine's RAM instead. Chunk sizes scale with cells × genes, so fitting "
        "fewer genes (--n-top-genes) also helps."
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `velodash` console script; returns the exit code."""
    from core.io import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ValueError, FileNotFoundError, PermissionError) as error:
        print(f"velodash: error: {error}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as error:
        message = out_of_memory_message(error)
        if message is None:
            raise
        print(f"velodash: error: {message}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("velodash: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
