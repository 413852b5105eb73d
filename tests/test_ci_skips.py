"""With ``CI=true`` nothing may skip: ``conftest.py`` turns a skip into a failure,
whether the test, a fixture or a module's collection (``importorskip``) skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PYTEST = (sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider")

SKIPPING = """
import pytest

missing = pytest.importorskip("no_such_module_anywhere")
"""

SKIPPING_TESTS = """
import pytest

@pytest.fixture
def unavailable() -> None:
    pytest.skip("a component is not installed")

def test_needs_it(unavailable: None) -> None:
    pass

def test_skips_itself() -> None:
    pytest.skip("not here")
"""


def _run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_module_skip.py").write_text(SKIPPING)
    (tmp_path / "test_skips.py").write_text(SKIPPING_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run(
        [*PYTEST, "--continue-on-collection-errors", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_a_skip_fails_in_ci_and_only_there(tmp_path: Path, ci: bool) -> None:
    done = _run(tmp_path, ci)
    lines = done.stdout.splitlines()
    if not ci:
        assert done.returncode == 0, done.stdout
        assert sum(line.startswith("SKIPPED") for line in lines) == 3
        return
    assert done.returncode != 0
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    assert len(failed) == 3, done.stdout
    assert all("skipped with CI=true (nothing may skip in CI)" in line for line in failed)
    assert not any(line.startswith("SKIPPED") for line in lines)
