"""The training trigger rules: why a run trains, and when new data alone may replace a champion."""

from __future__ import annotations

import pytest
from flightdeck.training.triggers import training_trigger

RETRAIN = {"monitoring_run_id": "m1", "as_of": "2013-03-01", "reason": "decay roc_auc 0.61 < 0.65",
           "window_start": "2013-01-01"}


@pytest.mark.parametrize(("events", "run_type", "reason", "request_"), [
    ([("flights.retrain", RETRAIN)], "asset_triggered",
     "monitoring m1 (as of 2013-03-01): decay roc_auc 0.61 < 0.65", RETRAIN),
    ([("flights.training_data", {}), ("flights.retrain", RETRAIN)], "asset_triggered",
     "monitoring m1 (as of 2013-03-01): decay roc_auc 0.61 < 0.65", RETRAIN),
    ([("flights.training_data", {})], "asset_triggered", "new dataset version", None),
    ([("flights.training_data", None)], "asset_triggered", "new dataset version", None),
    ([], "scheduled", "weekly schedule", None),
    ([], "manual", "manual run by run-1", {}),
    ([], "backfill", "backfill run by run-1", {}),
])
def test_a_run_knows_why_it_trains(events, run_type, reason, request_):
    assert training_trigger(events, run_type, "run-1") == (reason, request_)


def test_the_newest_retrain_request_wins():
    older = {**RETRAIN, "monitoring_run_id": "m0"}
    reason, request = training_trigger([("flights.retrain", older), ("flights.retrain", RETRAIN)],
                                       "asset_triggered", "r")
    assert request == RETRAIN and "m1" in reason
