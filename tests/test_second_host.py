"""A second, independent host app (``tests/second_host``: app factory, Flask-Migrate,
a module-level Flask-Admin, UUID keys, bulk updates, deletes) runs its own suite
against flask-engage built as a wheel and installed, not editable, into a
virtualenv of its own.

The virtualenv (dependencies only) is kept in ``tests/artifacts`` between runs and
rebuilt when the package's dependencies change; the wheel is built and reinstalled
on every run, so the suite always sees the current code.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parent.parent
HOST = Path(__file__).resolve().parent / "second_host"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
#: What the host's suite needs besides flask-engage and its dependencies (setuptools
#: builds the wheel inside the virtualenv, without a build-isolation round trip).
TOOLS = ["setuptools>=70", "flask-migrate>=4.0", "pytest>=8", "psycopg[binary]>=3.1"]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def pip(python: Path, *args: str) -> None:
    """This environment's pip, installing into ``python``'s virtualenv."""
    command = [sys.executable, "-m", "pip", "--python", str(python), *args]
    result = subprocess.run(
        [*command, "-q", "--disable-pip-version-check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def virtualenv() -> Path:
    """A virtualenv with flask-engage's dependencies and the host's tools (cached)."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha256(json.dumps([sys.version, dependencies, TOOLS]).encode()).hexdigest()
    path = ARTIFACTS / f"second-host-venv-{key[:12]}"
    python = path / "bin" / "python"
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "second-host.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs never build it at once
        if not (path / "ready").exists():
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
            pip(python, "install", *TOOLS, *dependencies)
            (path / "ready").touch()
    return python


@pytest.mark.package
def test_a_second_host_app_passes_its_suite_with_engage_installed_from_a_wheel(tmp_path):
    started = time.monotonic()
    python = virtualenv()
    source = tmp_path / "src"  # a clean copy: building never writes into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "flask_engage", source / "flask_engage", ignore=IGNORED)
    pip(python, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source))
    (wheel,) = tmp_path.glob("flask_engage-*.whl")
    pip(python, "install", "--force-reinstall", "--no-deps", str(wheel))

    host = tmp_path / "host"
    shutil.copytree(HOST, host, ignore=IGNORED)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=str(host), ENGAGE_SOURCE=str(ROOT / "flask_engage"))
    env.pop("SHOP_POSTGRES_URL", None)
    if POSTGRES_URL:  # this test process's own database: nothing else uses it meanwhile
        env["SHOP_POSTGRES_URL"] = POSTGRES_URL
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=host,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
    print(
        f"second host: {result.stdout.strip().splitlines()[-1]} ({time.monotonic() - started:.0f}s)"
    )
