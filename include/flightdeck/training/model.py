"""The packaged model: an MLflow pyfunc around the fitted Pipeline that returns probabilities.

(The pyfunc of a bare LGBMClassifier returns labels; scoring needs probabilities.) The
input is the feature frame built by :mod:`flightdeck.training.features`; columns are put in the
recorded order and typed before the Pipeline sees them.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from flightdeck.training.features import FeatureLayout, select_features


class FlightDeckClassifier(mlflow.pyfunc.PythonModel):  # type: ignore[misc, name-defined]
    """Positive-class probability of a fitted pipeline (or soft-voting ensemble)."""

    def __init__(self, pipeline: Any, layout: dict[str, list[str]]) -> None:
        self.pipeline = pipeline
        self.layout = layout

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        layout = FeatureLayout(tuple(self.layout["numeric"]), tuple(self.layout["categorical"]))
        X = select_features(pd.DataFrame(model_input), layout)
        return np.asarray(self.pipeline.predict_proba(X))[:, 1]
