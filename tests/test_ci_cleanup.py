"""``.ci/run``'s temporary directory (``.ci/tmp.sh``): whatever the run made under it is gone when
the run ends, however it ends. A small bash script sources the same file ``.ci/run`` sources,
makes what ``.ci/run`` makes (``mktemp -d`` directories, a Python ``tempfile`` directory) and
ends by success, by a failing command under ``set -e``, or by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
set -euo pipefail
cd "$ROOT"
source .ci/tmp.sh
venv="$(mktemp -d)/venv"
mkdir -p "$venv/lib" && head -c 4096 /dev/zero > "$venv/lib/big"
chmod -w "$venv/lib"
python3 -c 'import tempfile, pathlib; pathlib.Path(tempfile.mkdtemp(), "x").write_text("x")'
echo "$ci_tmp"
read -r _  # the test looks at what was made, then says go on (or sends a signal)
case "$HOW" in
    ok) ;;
    fail) false ;;
esac
"""


def _run(how: str, tmp_path: Path) -> tuple[int, Path]:
    env = {**os.environ, "ROOT": str(ROOT), "HOW": how, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        ["bash", "-c", SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    made = Path(proc.stdout.readline().strip())
    assert made.parent == tmp_path and made.name.startswith("ci-run.")
    assert any(made.rglob("big")), "the script made nothing under the run's directory"
    if how == "signal":
        proc.send_signal(signal.SIGTERM)
    else:
        proc.stdin.write("go on\n")
        proc.stdin.flush()
    try:
        code = proc.wait(timeout=30)
    finally:
        proc.stdin.close()
        proc.stdout.close()
    return code, made


@pytest.mark.parametrize(("how", "code"), [("ok", 0), ("fail", 1), ("signal", 143)])
def test_the_ci_run_removes_its_temporary_directory(how: str, code: int, tmp_path: Path) -> None:
    """Before: ``.ci/run`` left its venvs and browser profiles in /tmp (~380 MB a run)."""
    returned, made = _run(how, tmp_path)
    assert returned == code
    assert not made.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_ci_run_sources_it_before_making_anything() -> None:
    """Every mktemp of ``.ci/run`` comes after ``source .ci/tmp.sh``."""
    text = (ROOT / ".ci" / "run").read_text()
    sourced = text.index("source .ci/tmp.sh")
    assert "mktemp" not in text[:sourced]
    assert "TMPDIR=" not in text[sourced:], "something sets TMPDIR again after the trap"
