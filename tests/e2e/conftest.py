"""The end-to-end tests share one demo run: ``flightdeck demo`` through the real scheduler, once per session.

The demo (its ``airflow standalone`` and every task process) runs with the wall clock put just
past the next Monday 04:00 UTC (``fakeclock/sitecustomize.py``), when every scheduled interval
has passed (see ``test_demo.py``). ``test_demo.py`` checks what the demo promises;
``test_ui.py`` then starts Airflow on the same home, as ``make up`` does, and browses the
FlightDeck views of what the demo left.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e_support import FAKE_CLOCK, DemoRun, demo_env, free_port, next_monday_0400


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """Run ``flightdeck demo`` (January 2013) once, with the clock where it hurts."""
    tmp = tmp_path_factory.mktemp("demo")
    real_now = datetime.now(UTC)
    fake_start = next_monday_0400(real_now)
    offset = math.ceil((fake_start - real_now).total_seconds()) + 2  # the faked clock starts just past 04:00
    home = tmp / "home"
    env = demo_env(home, free_port())
    fake = {**env, "PYTHONPATH": str(FAKE_CLOCK), "FLIGHTDECK_FAKE_CLOCK_OFFSET": str(offset)}
    clock = subprocess.run([sys.executable, "-c", "import datetime; print(datetime.datetime.now(datetime.UTC))"],
                           env=fake, capture_output=True, text=True, check=True).stdout
    faked = datetime.fromisoformat(clock.strip())
    flightdeck = shutil.which("flightdeck", path=env["PATH"]) or str(Path(sys.executable).with_name("flightdeck"))
    demo = subprocess.run([flightdeck, "demo", "--start", "2013-01-01", "--end", "2013-01-31"], env=fake,
                          capture_output=True, text=True, timeout=2400)
    output = demo.stdout + demo.stderr
    log = tmp / "demo.log"
    log.write_text(output)
    return DemoRun(home, env, fake, fake_start, faked, demo.returncode, output, log)
