"""Airflow wrappers for the FlightDeck stage library: operators, sensors, triggers.

Each class is a thin wrapper: parameters in ``__init__``, the work in ``execute`` by a
call into :mod:`flightdeck.data.runners` (and each stage package's runner), heavy modules imported only there.
"""
