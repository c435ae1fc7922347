"""Runs that fail part-way strand nothing, and late or absent outcomes never invent labels."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from flightdeck.core import warehouse
from flightdeck.core.spec import SpecError, load_spec
from flightdeck.core.storage import open_store
from flightdeck.data import replay, runners
from flightdeck.data.ingest import QualityGateError
from flightdeck.data.wrangle import attach_labels
from flightdeck.training.pipeline import window_bounds


def test_good_batches_of_a_failed_ingest_are_picked_up_by_the_next_run(flights_spec, settings):
    """One bad file fails run 1 at ingest; run 2 profiles, validates and curates run 1's good batches."""
    replay.replay(flights_spec, open_store(settings.landing_uri), date(2013, 2, 1), date(2013, 2, 1))
    (Path(settings.landing_uri) / "flights" / "outcomes_2013-02-02.csv").write_text("")
    first = runners.StageContext(flights_spec, settings, run_id="run-1")
    with pytest.raises(QualityGateError, match="outcomes_2013-02-02.csv: empty file"):
        runners.ingest_deliveries(first)
    second = runners.StageContext(flights_spec, settings, run_id="run-2")
    runners.ingest_deliveries(second)  # nothing new landed
    assert runners.profile_batches(second)["profiled"] == 2
    assert runners.validate_batches(second)["validated"] == 2
    assert runners.curate_batches(second)["labelled"] > 0
    statuses = {b["file_name"]: b["status"] for b in warehouse.list_batches(warehouse.connect(settings.warehouse_url),
                                                                             "flights")}
    assert statuses == {"flights_2013-02-01.csv": "curated", "outcomes_2013-02-01.csv": "curated",
                        "outcomes_2013-02-02.csv": "rejected"}


def test_a_batch_left_received_by_a_dead_run_is_taken_over(flights_spec, settings):
    replay.replay(flights_spec, open_store(settings.landing_uri), date(2013, 2, 3), date(2013, 2, 3))
    dead = runners.StageContext(flights_spec, settings, run_id="dead-run")
    claimed = runners.claim_landed_files(dead)["claimed"]  # the worker died right after claiming
    alive = runners.StageContext(flights_spec, settings, run_id="next-run")
    manifest = runners.ingest_deliveries(alive)
    assert manifest["batches"] == len(claimed) == 2 and manifest["rejected"] == 0
    engine = warehouse.connect(settings.warehouse_url)
    assert {b["status"] for b in warehouse.list_batches(engine, "flights")} == {"staged"}


@pytest.mark.parametrize("when_missing", ["drop", "negative", "positive"])
def test_no_label_before_the_outcome_arrives(flights_spec, when_missing):
    """when_missing only applies to delivered outcomes whose value is missing (a cancelled flight)."""
    spec = flights_spec.model_copy(update={"target": flights_spec.target.model_copy(
        update={"when_missing": when_missing})})
    key = list(spec.entity_key)
    features = pd.DataFrame([{**dict.fromkeys(key, 1), "flight": n} for n in (1, 2, 3)])
    labels = pd.DataFrame([{**dict.fromkeys(key, 1), "flight": 1, "dep_delay": 30.0},
                           {**dict.fromkeys(key, 1), "flight": 2, "dep_delay": None}])
    out = attach_labels(features, labels, spec).set_index("flight")["departed_late"]
    assert out[1] == 1
    assert pd.isna(out[3]), "flight 3's outcome has not arrived"
    expected = {"drop": pd.NA, "negative": 0, "positive": 1}[when_missing]
    assert (pd.isna(out[2]) and expected is pd.NA) or out[2] == expected


def test_training_window_is_whole_local_days_across_daylight_saving():
    lo, hi = window_bounds("2013-11-03", "2013-11-03", "America/New_York")  # a 25-hour day
    assert hi - lo == pd.Timedelta(hours=25)
    lo, hi = window_bounds("2013-03-10", "2013-03-10", "America/New_York")  # a 23-hour day
    assert hi - lo == pd.Timedelta(hours=23)
    assert window_bounds(None, None, "UTC") == (None, None)


def test_spec_rejects_derived_or_history_columns_read_from_outcomes(tmp_path):
    text = (Path(__file__).resolve().parents[3] / "include" / "specs" / "flights.yaml").read_text()
    bad = text.replace("{name: dep_weekday, op: weekday, column: time_hour}",
                       "{name: dep_weekday, op: weekday, column: time_hour}\n"
                       "    - {name: dep_hr, op: hhmm_hour, column: dep_time}")
    path = tmp_path / "flights.yaml"
    path.write_text(bad)
    with pytest.raises(SpecError, match="unknown column 'dep_time'|reads target or leakage columns"):
        load_spec(path)
