"""The scoring report operator sums its mapped score tasks, however many ran."""

from __future__ import annotations

import pytest


class _Ti:
    def __init__(self, value):
        self.value = value

    def xcom_pull(self, task_ids):
        return self.value


def _manifest(partition: str, rows: int, unknown: dict[str, int]) -> dict:
    return {"partition": partition, "rows": rows, "empty": rows == 0, "model_version": "1",
            "unknown_categories": unknown}


@pytest.mark.parametrize(("pulled", "partitions", "rows", "unknown"), [
    # one mapped instance: Airflow hands back its value, not a list of one (seen in the demo)
    (_manifest("2013-02-01", 926, {"dest": 2}), ["2013-02-01"], 926, {"dest": 2}),
    ([_manifest("2013-02-01", 926, {"dest": 2}), _manifest("2013-02-02", 0, {"dest": 1, "carrier": 3})],
     ["2013-02-01", "2013-02-02"], 926, {"dest": 3, "carrier": 3}),
    (None, [], 0, {}),
    ([None], [], 0, {}),
])
def test_report_sums_single_and_mapped_manifests(pulled, partitions, rows, unknown):
    from flightdeck_airflow.scoring import ScoringReportOperator

    summary = ScoringReportOperator(task_id="report", spec_name="flights").execute({"ti": _Ti(pulled)})
    assert (summary["partitions"], summary["rows"], summary["unknown_categories"]) == (partitions, rows, unknown)
    assert summary["empty"] == [p for p in partitions if p == "2013-02-02"]
