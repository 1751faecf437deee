"""The README's test command is ``scripts/test.sh``, and ``.ci/run`` runs exactly it.

The script runs here with stand-ins for ``python`` and ``apt-get`` on ``PATH`` (they record their
arguments): it installs the test requirements, looks for the browser and says in one line how
to get it when it cannot install it, runs ``python -m pytest -q -n 2``, and exits with pytest's
status, 5 ("no tests collected") included, so CI fails when nothing ran.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "test.sh"

STANDIN = """#!/bin/sh
echo "$(basename "$0") $*" >> "$QEU_STANDIN_LOG"
case "$*" in *pytest*) exit "${QEU_PYTEST_RC:-0}";; esac
exit 0
"""


def test_readme_and_ci_run_the_same_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("Install and run the tests", 1)[1]
    block = re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()
    assert block == "scripts/test.sh"
    ci = [
        line
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ci[-1] == "exec scripts/test.sh"
    assert os.access(SCRIPT, os.X_OK) and os.access(REPO / ".ci" / "run", os.X_OK)


@pytest.mark.parametrize("pytest_rc", [0, 1, 5])
def test_the_script_installs_finds_the_browser_and_returns_pytests_status(
    pytest_rc: int, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "apt-get"):
        (bin_dir / name).write_text(STANDIN)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "QEU_STANDIN_LOG": str(log),
        "QEU_PYTEST_RC": str(pytest_rc),
        "QEU_CHROMIUM": str(tmp_path / "no-chromium"),
    }
    done = subprocess.run(
        [str(SCRIPT), "tests/test_cli.py"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == pytest_rc, done.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "python -m pip install -q -r requirements-dev.txt"
    assert calls[-1] == "python -m pytest -q -n 2 tests/test_cli.py"
    if os.geteuid() == 0:  # root: it tried apt-get (the stand-in installs nothing)
        assert "apt-get install -y -qq chromium" in calls
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "no browser at" in lines[0] and "apt-get install chromium" in lines[0]
    )
