"""``make lint`` in the suite: ruff finds nothing, and mypy passes (strict on ``core/`` and ``data/``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    out = _run("ruff", "check", "include", "plugins", "dags", "tests", "benchmarks")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_passes_with_the_project_configuration():
    out = _run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout


def test_core_and_data_are_checked_strictly():
    """A function without annotations is an error in core/ (so the strict settings really apply there)."""
    probe = REPO / "include" / "flightdeck" / "core" / "_strict_probe.py"
    probe.write_text("def f(x):\n    return x\n")
    try:
        out = _run("mypy", str(probe))
    finally:
        probe.unlink()
    assert out.returncode == 1 and "Function is missing a type annotation" in out.stdout, out.stdout
