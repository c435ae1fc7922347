"""FlightDeck stage library: Airflow-free functions for every pipeline stage.

Each stage is a pure function over data frames (``verb_noun``); the ``runners`` module
loads inputs by URI, calls the stages, writes outputs atomically and returns small
manifests that the Airflow operators in ``flightdeck_airflow`` push to XCom.
"""

__version__ = "0.1.0"
