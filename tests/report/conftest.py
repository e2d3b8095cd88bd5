"""Fixtures of the report tests: a synthetic finished run folder (nothing trained) and a headless Chromium."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from report_run_folder import make_run_folder


def _find_chromium():
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's chromium; installed with apt-get when missing and we are root, else the test is skipped."""
    found = _find_chromium()
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "`apt-get install -y chromium` to run the report's browser test")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"chromium could not be installed ({' '.join(command)} failed: {done.stderr[-500:]})")
    found = _find_chromium()
    if not found:
        pytest.skip("apt-get install chromium finished but no chromium binary was found")
    return found


@pytest.fixture(scope="session")
def _run_template(tmp_path_factory) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("report_template"))


@pytest.fixture
def run_folder(_run_template, tmp_path) -> Path:
    """A fresh copy of the synthetic run (its raw dataset and model folders too), recorded paths pointing at it."""
    root = tmp_path / "fixture"
    shutil.copytree(_run_template.parent, root)
    for path in root.rglob("*.json"):
        path.write_text(path.read_text().replace(str(_run_template.parent), str(root)))
    return root / _run_template.name
