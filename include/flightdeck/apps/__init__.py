"""What users run: the ``flightdeck`` command line, ``flightdeck init`` (every store created and
migrated once), the demo through the real scheduler, and the year-in-replay driver and report."""
