"""Compatibility: models registered by FlightDeck before the stage packages pickled their pyfunc as
``flightdeck.model.FlightDeckClassifier`` (MLflow pickles it by reference), so that path keeps
loading them. New code imports ``flightdeck.training.model``."""

from flightdeck.training.model import FlightDeckClassifier

__all__ = ["FlightDeckClassifier"]
