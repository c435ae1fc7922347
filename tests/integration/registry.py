"""Reading the MLflow registry in integration tests (``env`` holds the test's settings and spec)."""

from __future__ import annotations

from typing import Any


def registry_client(env: dict[str, Any]) -> Any:
    """An MLflow client of the test's own tracking URI."""
    import mlflow

    mlflow.set_tracking_uri(env["settings"].mlflow_tracking_uri)
    return mlflow.MlflowClient()


def alias_version(env: dict[str, Any], alias: str) -> str | None:
    """The version an alias of the spec's registered model points to, or None."""
    import mlflow

    try:
        return str(registry_client(env).get_model_version_by_alias(env["spec"].registered_model_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None
