"""Why a training run trains, and whether new data alone may retrain: the training trigger rules.

Pure functions over what the scheduler hands a run (its run type and the asset events that
triggered it) plus one registry look-up; the training operator only calls them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flightdeck.core import registry
from flightdeck.core.context import StageContext

RETRAIN_ASSET_SUFFIX = ".retrain"
"""The monitoring DAG's retrain Asset (``flightdeck://<spec>/retrain``, name ``<spec>.retrain``)."""


def training_trigger(asset_events: Iterable[tuple[str, Mapping[str, Any] | None]], run_type: str,
                     run_id: str) -> tuple[str, dict[str, Any] | None]:
    """Why this run trains, and monitoring's request (its reasons and window) if it made one.

    Args:
        asset_events: (asset name, event extra) of the events that triggered the run, oldest first.
        run_type: the run's type: ``asset_triggered``, ``scheduled``, ``manual``, ``backfill``.
        run_id: the run's id (named in the reason of a run by hand).

    Returns:
        (reason, request): the request is monitoring's event extra; ``{}`` for a run by hand
        (it always trains); None when only new data or the schedule asks (the champion may stay).
    """
    for name, extra in reversed(list(asset_events)):
        extra = dict(extra or {})
        if name.endswith(RETRAIN_ASSET_SUFFIX) or "monitoring_run_id" in extra:
            return (f"monitoring {extra.get('monitoring_run_id')} (as of {extra.get('as_of')}): "
                    f"{extra.get('reason')}", extra)
    if run_type == "asset_triggered":
        return "new dataset version", None
    if run_type == "scheduled":
        return "weekly schedule", None
    return f"{run_type} run by {run_id}", {} if run_type in ("manual", "backfill") else None


def may_retrain_on_new_data(ctx: StageContext) -> bool:
    """New data (or the weekly schedule) alone retrains only while nothing is promoted, or if the spec says so.

    Raises:
        RegistryError: the registry cannot answer (never read as "no champion").
    """
    if ctx.spec.monitoring.retrain_on_new_data:
        return True
    client = registry.mlflow_client(ctx.settings.mlflow_tracking_uri)
    return registry.alias_version(client, ctx.spec.registered_model_name, registry.CHAMPION) is None
