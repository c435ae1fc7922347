"""The two ways a stage ends without doing its work, which the operators map to Airflow once.

- :class:`Rejected`: the input can never succeed as it is (bad data, a malformed spec,
  leakage); the task fails without retrying.
- :class:`NothingToDo`: there is nothing to do yet (no champion, no data, nothing new); the
  task is skipped, and the message says why in the log.

Any other exception is an ordinary failure that Airflow retries. The stage errors subclass
one of the two (and keep their older base, e.g. ``ValueError``, for callers that catch it):
rejected are ``SpecError``, ``DeliveryError``, ``QualityGateError``, ``LeakageError``,
``FeatureError``, ``TrainingDataError``, ``GateError``, ``ChampionLoadError``,
``ScoringInputError``; nothing to do are ``NoDatasetError``, ``AlreadyTrained``,
``NoChampionError``, ``NothingToMonitor``.
"""

from __future__ import annotations


class FlightDeckError(Exception):
    """Base of the errors that say how a run should end."""


class Rejected(FlightDeckError):
    """The input is refused; retrying cannot help (the message names the file, row or field)."""


class NothingToDo(FlightDeckError):
    """Nothing to do yet; the run is harmless and skips (the message says why)."""
