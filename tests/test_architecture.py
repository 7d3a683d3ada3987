"""The import rules of docs/architecture.md, read from the source: every ``import`` statement
(module level or inside a function) of every module in `core/` and `dashboard/` points at a
layer its own layer may use. Top to bottom: cli → web → hosting → jobs → data → config → core,
with the figures used only by the web layer; nothing but the CLI imports the web layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Layer of a module (longest prefix wins) -> the first-party layers it may import.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "dashboard.config": {"core", "dashboard.config"},
    "dashboard.data": {"core", "dashboard.config", "dashboard.data"},
    "dashboard.figures": {"core", "dashboard.config", "dashboard.data", "dashboard.figures"},
    "dashboard.jobs": {"core", "dashboard.config", "dashboard.data", "dashboard.jobs"},
    "dashboard.hosting": {
        "core",
        "dashboard.config",
        "dashboard.data",
        "dashboard.jobs",
        "dashboard.hosting",
    },
    "dashboard.web": {
        "core",
        "dashboard.config",
        "dashboard.data",
        "dashboard.jobs",
        "dashboard.hosting",
        "dashboard.figures",
        "dashboard.web",
    },
    "dashboard.cli": {
        "core",
        "dashboard.config",
        "dashboard.data",
        "dashboard.jobs",
        "dashboard.hosting",
        "dashboard.web",
    },
    "dashboard": set(),  # the package's own __init__ imports nothing of ours
}
LAYERS = sorted(ALLOWED, key=len, reverse=True)


def _layer(module: str) -> str | None:
    """The layer of a first-party module name (None for third-party modules); the bare
    ``dashboard`` layer is the package's ``__init__`` only."""
    for layer in LAYERS:
        if module == layer or (module.startswith(layer + ".") and layer != "dashboard"):
            return layer
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every first-party import in the file of `module`,
    relative imports resolved against its package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{alias.name}" for alias in node.names]
            # `from dashboard import figures` imports the sub-package `dashboard.figures`.
            found += [(node.lineno, n if _layer(n) != _layer(base) else base) for n in names]
    return [(line, name) for line, name in found if _layer(name) is not None]


def _violations(path: Path, module: str) -> list[str]:
    """One line per import in `path` (the source of `module`) that its layer may not make."""
    layer = _layer(module)
    return [
        f"{path.name}:{line} imports {name} ({_layer(name)}), "
        f"but {layer} may only import {', '.join(sorted(ALLOWED[layer]))}"
        for line, name in _imports(path, module)
        if _layer(name) not in ALLOWED[layer]
    ]


SOURCES = sorted([*REPO.joinpath("core").rglob("*.py"), *REPO.joinpath("dashboard").rglob("*.py")])


def test_every_module_belongs_to_a_layer():
    assert len(SOURCES) > 50
    assert [p for p in SOURCES if _layer(_module_name(p)) is None] == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down(path: Path):
    assert _violations(path, _module_name(path)) == []


def test_the_checker_reports_upward_imports(tmp_path: Path):
    """A data module importing the web layer (absolutely or relatively), a job module
    importing hosting inside a function, and `from dashboard import hosting` are each
    reported; core importing the dashboard too."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import numpy\nfrom dashboard.web import widgets\nfrom dashboard import hosting\n"
        "from dashboard.data.results import Results\n\n"
        "def f():\n    import dashboard.jobs.queue\n"
        "from ..web import widgets\n"
    )
    found = _violations(probe, "dashboard.data.probe")
    assert sorted(line.split(" imports ")[1].split(" (")[0] for line in found) == [
        "dashboard.hosting",
        "dashboard.jobs.queue",
        "dashboard.web",
        "dashboard.web",  # the relative one
    ]
    assert len(_violations(probe, "core.probe")) == 4
    assert _violations(probe, "dashboard.cli") == []
