"""Gate operators through ``execute`` with a minimal context: which version is judged, and
what happens without a verdict or a challenger."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


class _Ti:
    def __init__(self, value):
        self.value = value

    def xcom_pull(self, task_ids):
        return self.value


@pytest.mark.parametrize(("events", "expected"), [
    ({}, None),
    ({"challenger": [SimpleNamespace(extra={})]}, None),
    ({"challenger": [SimpleNamespace(extra={"version": "3"})]}, "3"),
    ({"challenger": [SimpleNamespace(extra={"version": "3"}), SimpleNamespace(extra={"version": "4"})]}, "4"),
    ({"challenger": [SimpleNamespace(extra=None)]}, None),
])
def test_judge_takes_the_version_from_the_newest_triggering_asset_event(events, expected):
    from flightdeck_airflow.gates import JudgeChallengerOperator

    assert JudgeChallengerOperator._version_from_asset_event({"triggering_asset_events": events}) == expected


def test_judge_fails_without_retry_when_there_is_no_challenger(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException
    from flightdeck_airflow.gates import JudgeChallengerOperator

    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    context = {"run_id": "manual__judge", "dag_run": SimpleNamespace(run_type="manual"),
               "triggering_asset_events": {}}
    with pytest.raises(AirflowFailException, match="no challenger to judge"):
        JudgeChallengerOperator(task_id="judge", spec_name="flights").execute(context)


def test_decide_fails_without_a_verdict_from_the_judge(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException
    from flightdeck_airflow.gates import DecidePromotionOperator

    monkeypatch.setenv("FLIGHTDECK_HOME", str(tmp_path / "fd"))
    with pytest.raises(AirflowFailException, match="no verdict from task 'judge'"):
        DecidePromotionOperator(task_id="decide", spec_name="flights").execute({"run_id": "r", "ti": _Ti(None)})
