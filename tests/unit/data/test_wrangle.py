"""Wrangling learned on train only, derived columns in the spec's time zone, labels (pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from flightdeck.data import wrangle


# ---------------------------------------------------------------- wrangling
def test_fill_and_caps_are_learned_on_train_only(flights_spec):
    """The distance fill is the *train* median (200), not the test median (5500), and test
    values are capped at the train quantile; tailnum gets the declared constant."""
    train = pd.DataFrame(
        {"distance": [100.0, 200.0, 300.0, np.nan], "tailnum": ["p_a", None, "p_b", "p_c"]}
    )
    test = pd.DataFrame({"distance": [5000.0, 6000.0, np.nan], "tailnum": [None, "p_d", "p_e"]})

    params = wrangle.fit_wrangle(train, flights_spec)
    assert params["fill"] == {"tailnum": "unknown", "distance": 200.0}
    lo, hi = params["cap"]["distance"]
    assert lo == 100.0 and 299 < hi <= 300

    out = wrangle.apply_wrangle(test, flights_spec, params)
    assert out["distance"].tolist() == [hi, hi, 200.0]
    assert out["tailnum"].tolist() == ["unknown", "p_d", "p_e"]
    assert test["distance"].isna().sum() == 1, "apply_wrangle does not modify its input"


def test_fit_wrangle_result_does_not_change_with_the_test_data(flights_spec):
    train = pd.DataFrame({"distance": [1.0, 2.0, 3.0], "tailnum": ["a", "b", None]})
    assert wrangle.fit_wrangle(train, flights_spec) == wrangle.fit_wrangle(
        train.copy(), flights_spec
    )
    assert wrangle.fit_wrangle(train, flights_spec)["fill"]["distance"] == 2.0


def test_derived_weekday_and_day_of_year_use_the_spec_time_zone(flights_spec):
    """02:00 UTC on Sat 2 March is 21:00 on Fri 1 March in New York: weekday 4, day 60, not
    5 and 61. 03:00 UTC on 1 Jan 2014 is still 31 Dec 2013 locally: day 365."""
    frame = pd.DataFrame(
        {
            "time_hour": pd.to_datetime(
                ["2013-03-02T02:00:00Z", "2013-03-01T15:00:00Z", "2014-01-01T03:00:00Z"], utc=True
            )
        }
    )
    out = wrangle.derive_columns(frame, flights_spec.wrangle.derive, flights_spec.timezone)
    assert out["dep_weekday"].tolist() == [4, 4, 1]
    assert out["day_of_year"].tolist() == [60, 60, 365]
    utc = wrangle.derive_columns(frame, flights_spec.wrangle.derive, "UTC")
    assert utc["dep_weekday"].tolist() == [5, 4, 2] and utc["day_of_year"].tolist() == [61, 60, 1]


def test_labels_follow_the_target_rule_and_missing_outcome_stays_unlabelled(flights_spec):
    """dep_delay > 15 is late; exactly 15 is not; a cancelled flight (no delay) has no label."""
    key = {
        "year": 2013,
        "month": 3,
        "day": 1,
        "carrier": "UA",
        "origin": "JFK",
        "sched_dep_time": 1000,
    }
    features = pd.DataFrame([{**key, "flight": f} for f in (1, 2, 3, 4)])
    labels = pd.DataFrame(
        [
            {**key, "flight": 1, "dep_delay": 16.0},
            {**key, "flight": 2, "dep_delay": 15.0},
            {**key, "flight": 3, "dep_delay": np.nan},
        ]
    )
    out = wrangle.attach_labels(features, labels, flights_spec)
    assert out["departed_late"].tolist() == [1, 0, pd.NA, pd.NA]
    assert len(out) == 4





def test_days_to_nearest_holiday_uses_local_dates_and_caps():
    """Independence Day is 0 days away on 4 July, New Year's Day 1 day from 31 Dec 23:00 New York time."""
    from flightdeck.data.wrangle import days_to_nearest_holiday

    local = pd.Series(pd.to_datetime(["2013-07-04 10:00", "2013-07-01 10:00", "2013-12-31 23:00",
                                      "2013-03-01 12:00", None]).tz_localize("America/New_York"))
    assert days_to_nearest_holiday(local, cap=14).tolist() == [0, 3, 1, 11, pd.NA]
    assert days_to_nearest_holiday(local, cap=2).tolist()[:4] == [0, 2, 1, 2]


def test_days_to_nearest_holiday_across_year_ends_equals_a_brute_force_count():
    """The calendar is cached by whole years: days near New Year (either side) still find the nearest holiday."""
    from flightdeck.data.wrangle import days_to_nearest_holiday
    from pandas.tseries.holiday import USFederalHolidayCalendar

    days = pd.Series(pd.date_range("2012-12-15", "2014-01-20", freq="D", tz="America/New_York"))
    holidays = USFederalHolidayCalendar().holidays("2012-01-01", "2014-12-31")
    for cap in (3, 14):
        expected = [min(min(abs((d.tz_localize(None).normalize() - h).days) for h in holidays), cap) for d in days]
        assert days_to_nearest_holiday(days, cap=cap).tolist() == expected
    # one day alone, right after New Year's Day, and the first call for its span
    assert days_to_nearest_holiday(pd.Series(pd.to_datetime(["2031-01-02"]).tz_localize("UTC"))).tolist() == [1]
