"""FlightDeck stage library: Airflow-free functions for every pipeline stage.

One package per pipeline stage, in the order the data flows: ``core`` (settings, spec,
storage, warehouse, registry), ``data``, ``training``, ``gates``, ``serving``, ``monitoring``,
and ``apps`` (CLI, init, demo, year in replay). A package imports ``core`` and the stages
before it, never one after it (``tests/unit/test_layering.py``). Each stage is a function
over data frames (``verb_noun``); runners load inputs by URI, call the stages, write outputs
atomically and return small manifests that the Airflow operators in ``flightdeck_airflow``
push to XCom.
"""

__version__ = "0.1.0"
