"""Batch periods: the day, ISO week or month a delivery covers, keyed by the period's first day.

A curated partition is keyed ``batch_date=<period start>`` (YYYY-MM-DD) whatever the grain,
so scoring, lookup and monitoring address a month as ``2007-11-01``.
"""

from __future__ import annotations

from datetime import date, timedelta


def period_start(day: date, grain: str) -> date:
    """The first day of the ``grain`` period holding ``day`` (``none`` and ``day``: the day itself)."""
    if grain == "month":
        return day.replace(day=1)
    if grain == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    return day


def next_period_start(start: date, grain: str) -> date:
    """The first day of the period after the one starting at ``start``."""
    if grain == "month":
        return date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    if grain == "week":
        return start + timedelta(days=7)
    return start + timedelta(days=1)


def period_from_groups(groups: dict[str, str | None], grain: str) -> date:
    """The period start named by a batch-date match: ``date``, or ``year`` with ``month`` or ``week``.

    Raises:
        ValueError: the groups do not form a valid date (the message quotes them).
    """
    if groups.get("date"):
        return period_start(date.fromisoformat(str(groups["date"])), grain)
    year = int(str(groups.get("year")))
    if groups.get("month"):
        month = int(str(groups["month"]))
        if not 1 <= month <= 12:
            raise ValueError(f"month {groups['month']!r} is not 01-12")
        return period_start(date(year, month, 1), grain)
    if groups.get("week"):
        return date.fromisocalendar(year, int(str(groups["week"])), 1)
    raise ValueError(f"no date, month or week in {groups}")
