"""Stopping ``airflow standalone`` by its process group: nothing of the group outlives it.

A scheduler that ignored SIGTERM was seen to outlive its ``airflow standalone`` (the leader),
left running with its home deleted; here a member that ignores SIGTERM stands in for it.
"""

from __future__ import annotations

import os
import subprocess
import time

from flightdeck.apps.demo import _group_alive, stop


def test_a_member_that_ignores_sigterm_does_not_outlive_the_leader():
    proc = subprocess.Popen(["sh", "-c", "(trap '' TERM; exec sleep 300) & exec sleep 300"], start_new_session=True)
    time.sleep(0.5)
    assert _group_alive(proc.pid)
    started = time.monotonic()
    stop(proc, grace=10)
    assert not _group_alive(proc.pid)
    assert time.monotonic() - started < 10  # the leader went at once; the stubborn member after a few seconds
    assert proc.returncode is not None and os.getpgid(os.getpid()) != proc.pid
