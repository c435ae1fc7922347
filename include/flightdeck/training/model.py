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

from flightdeck.training.compiled import compile_pipeline
from flightdeck.training.features import FeatureLayout, select_features, select_features_categorical


class FlightDeckClassifier(mlflow.pyfunc.PythonModel):  # type: ignore[misc, name-defined]
    """Positive-class probability of a fitted pipeline (or soft-voting ensemble)."""

    def __init__(self, pipeline: Any, layout: dict[str, list[str]]) -> None:
        self.pipeline = pipeline
        self.layout = layout

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        layout = FeatureLayout(tuple(self.layout["numeric"]), tuple(self.layout["categorical"]))
        compiled = self.compiled()
        if compiled is not None and not compiled.needs_text:  # the same texts, converted once per distinct value
            return compiled.predict(select_features_categorical(pd.DataFrame(model_input), layout))
        X = select_features(pd.DataFrame(model_input), layout)
        if compiled is not None:
            return compiled.predict(X)
        return np.asarray(self.pipeline.predict_proba(X))[:, 1]

    def compiled(self) -> Any:
        """The Pipeline's compiled fast path (same probabilities), built once; ``None`` if it has none."""
        if "_compiled" not in self.__dict__:
            self._compiled = compile_pipeline(self.pipeline)
        return self._compiled

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_compiled"}
