"""Helpers of the end-to-end tests: the faked clock's target, free ports, the demo's environment."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAKE_CLOCK = Path(__file__).resolve().parent / "fakeclock"


def next_monday_0400(now: datetime) -> datetime:
    """The next Monday 04:00 UTC after ``now``: the weekly training's trigger time."""
    day = (now + timedelta(days=(7 - now.weekday()) % 7)).replace(hour=4, minute=0, second=0, microsecond=0)
    return day if day > now else day + timedelta(days=7)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class DemoRun:
    """What the session's demo left: its home, its environments, its output and the faked start."""

    home: Path
    env: dict[str, str]        # the demo's environment, real clock (for `airflow dags list-runs` and the like)
    fake_env: dict[str, str]   # the same with the faked clock (what the demo ran with)
    fake_start: datetime
    faked_now: datetime        # what a faked process saw as "now" before the demo
    returncode: int
    output: str
    log: Path


def demo_env(home: Path, port: int) -> dict[str, str]:
    """The environment ``make demo`` gives the demo, on a private home and API port."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "FLIGHTDECK_", "MLFLOW_TRACKING"))}
    env.update({
        "FLIGHTDECK_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env
