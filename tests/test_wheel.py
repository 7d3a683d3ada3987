"""`pip install .` works anywhere: the wheel ships every package, the Dash assets and the sample
data, and its `velodash run`, started from an unrelated folder, serves the sample.

The wheel is built offline (`pip wheel --no-deps --no-build-isolation`) from a copy of the
package sources in a temporary folder, so no build/ or egg-info lands in the checkout and no
stale build output gets in. pip installs it into a fresh virtualenv; the dependencies (torch,
Dash, ...) come from this test's environment through a .pth line naming its site-packages, so
nothing is downloaded. That line only puts the folder on sys.path: the checkout's editable
install (an ``__editable__`` finder hooked in by a .pth file of that folder) is not run, and
the test checks that `dashboard` and `core` are imported from the new virtualenv. About 30 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from servers import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
#: What a build reads: pyproject.toml names README.md as the long description.
SOURCES = ("pyproject.toml", "README.md", "core", "dashboard", "assets", "sample_data")
#: Top-level folders installed inside the dashboard package (pyproject.toml's package-dir).
BUNDLED = ("assets", "sample_data")
#: Lines of a verbose `pip wheel` that are about pip's environment, not about the project.
HARMLESS = re.compile(r"byte-compiling is disabled")

#: Run in the fresh virtualenv from a temporary folder: where velodash finds its files.
PROBE = """
import json, core, dashboard, dashboard.config as c
print(json.dumps({"core": core.__file__, "dashboard": dashboard.__file__,
                  "checkout": c.CHECKOUT_ROOT and str(c.CHECKOUT_ROOT),
                  "sample": str(c.SAMPLE_PATH), "cache": str(c.DEFAULT_CACHE_DIR)}))
"""


def _source_files(folder: str) -> list[str]:
    """The files of a checkout folder that belong in the wheel (no bytecode), relative to it."""
    root = REPO / folder
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """(the wheel, the verbose build log), built from a copy of the sources."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp / "dist"), str(src)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("velodash-*.whl")
    return wheel, build.stdout + build.stderr


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed by pip (dependencies from this environment)."""
    wheel, _log = built
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "velodash-test-dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return root


@pytest.fixture
def elsewhere(tmp_path) -> tuple[Path, dict[str, str]]:
    """(an unrelated working folder, an environment with a fresh HOME and cache home and no
    VELODASH_* or PYTHONPATH settings)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("VELODASH_") and k != "PYTHONPATH"
    }
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg-cache"))
    (tmp_path / "work").mkdir()
    return tmp_path / "work", env


def test_the_wheel_ships_every_module_the_assets_and_the_sample(built):
    wheel, _log = built
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{pkg}/{f}" for pkg in ("core", "dashboard") for f in _source_files(pkg)}
    expected |= {f"dashboard/{folder}/{f}" for folder in BUNDLED for f in _source_files(folder)}
    missing = sorted(expected - names)
    packages = sorted({str(Path(m).parent).replace("/", ".") for m in missing if "/" in m})
    assert not missing, (
        f"list {packages} in [tool.setuptools] packages (data: package-data) of pyproject.toml: "
        f"the wheel lacks {len(missing)} files, e.g. {missing[:3]}"
    )
    assert {"dashboard/assets/velodash.js", "dashboard/sample_data/velodash_sample.h5ad"} <= names
    assert {"dashboard/web/pages/__init__.py", "dashboard/jobs/runner.py"} <= names
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"core", "dashboard"}


def test_the_wheel_builds_without_warnings(built):
    _wheel, log = built
    warnings = [
        line for line in log.splitlines() if "warning" in line.lower() and not HARMLESS.search(line)
    ]
    assert warnings == []


def test_installed_velodash_finds_its_files_outside_the_checkout(venv, elsewhere):
    cwd, env = elsewhere
    probe = subprocess.run(
        [venv / "bin" / "python", "-c", PROBE],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    site = venv.resolve()
    for module in ("core", "dashboard"):
        assert Path(found[module]).resolve().is_relative_to(site), found
    assert found["checkout"] is None
    assert Path(found["sample"]).resolve().is_relative_to(site)
    assert Path(found["sample"]).is_file()
    assert found["cache"] == env["XDG_CACHE_HOME"] + "/velodash"


@contextmanager
def _running(command: list, cwd: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """`command` in its own session while the block runs; then stopped with its whole group
    (the app and the fit it queued)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_installed_velodash_run_serves_the_sample(venv, elsewhere, tmp_path):
    cwd, env = elsewhere
    port, log = free_port(), tmp_path / "velodash-run.log"
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text()
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with _running([venv / "bin" / "velodash", "run", "--port", str(port)], cwd, env, log):
        wait_until(healthy, 90, interval=0.5, what="the installed velodash run")
        page = httpx.get(f"{url}/", timeout=30)
        assert page.status_code == 200
        script = re.search(r'src="(/assets/velodash\.js[^"]*)"', page.text)
        assert script, "the page does not load /assets/velodash.js"
        served = httpx.get(url + script.group(1), timeout=30)
        assert served.status_code == 200
        assert served.text == (REPO / "assets" / "velodash.js").read_text()
        datasets = httpx.get(f"{url}/api/datasets", timeout=30).json()
        assert [d["id"] for d in datasets if d["source"] == "sample"] == ["sample"]
    cache = Path(env["XDG_CACHE_HOME"], "velodash")
    assert f"(cache: {cache})" in log.read_text()
    assert (cache / "secret_key").is_file()
    assert not (cwd / ".velodash").exists()
