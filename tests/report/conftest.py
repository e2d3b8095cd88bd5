"""Fixtures of the report tests: a synthetic finished run folder (nothing trained) and a headless Chromium."""
from __future__ import annotations

import shutil
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
    """Path of Debian's chromium (`.ci/run` installs it once); without it the browser tests are skipped, saying why."""
    found = _find_chromium()
    if not found:
        pytest.skip("chromium not found: `apt-get install -y chromium` (as .ci/run does) to run the report's browser tests")
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
