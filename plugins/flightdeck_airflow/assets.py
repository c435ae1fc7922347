"""The Assets through which a spec's DAGs schedule each other (no shared global state)."""

from __future__ import annotations

from airflow.sdk import Asset


def training_data_asset(spec_name: str) -> Asset:
    """Published by the data DAG's split task; schedules the training DAG."""
    return Asset(name=f"flightdeck.{spec_name}.training_data", uri=f"flightdeck://{spec_name}/training_data")


def curated_asset(spec_name: str) -> Asset:
    """Published when the data DAG curates new partitions (a delivery landed); schedules scoring."""
    return Asset(name=f"flightdeck.{spec_name}.curated", uri=f"flightdeck://{spec_name}/curated")


def challenger_asset(spec_name: str) -> Asset:
    """Published when a new model version gets the ``challenger`` alias; schedules the gates."""
    return Asset(name=f"flightdeck.{spec_name}.challenger", uri=f"flightdeck://{spec_name}/challenger")


def champion_asset(spec_name: str) -> Asset:
    """Published when the gates move the ``champion`` alias; schedules (re)scoring."""
    return Asset(name=f"flightdeck.{spec_name}.champion", uri=f"flightdeck://{spec_name}/champion")


def scored_asset(spec_name: str) -> Asset:
    """Published when a scoring run published predictions; schedules monitoring."""
    return Asset(name=f"flightdeck.{spec_name}.scored", uri=f"flightdeck://{spec_name}/scored")


def retrain_asset(spec_name: str) -> Asset:
    """Published when monitoring asks for retraining (decay or drift past the spec's limits); schedules training."""
    return Asset(name=f"flightdeck.{spec_name}.retrain", uri=f"flightdeck://{spec_name}/retrain")
