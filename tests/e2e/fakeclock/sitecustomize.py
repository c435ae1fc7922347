"""Put the wall clock of every Python process of the end-to-end demo where the test wants it.

On ``PYTHONPATH`` only in the end-to-end test. With ``FLIGHTDECK_FAKE_CLOCK_OFFSET`` (seconds)
set, every interpreter that starts (the demo, ``airflow standalone`` and each of its
components, every task process) travels that far ahead at start-up and keeps ticking in real
time, so all of them agree on the faked time. Monotonic clocks stay real: sleeps and timeouts
behave. (libfaketime cannot do this for Python 3.11: its ``clock_nanosleep`` makes
``time.sleep`` fail with EINVAL.)
"""

import os

_offset = os.environ.get("FLIGHTDECK_FAKE_CLOCK_OFFSET")
if _offset:
    import time

    import time_machine

    time_machine.travel(time.time() + float(_offset), tick=True).start()
