"""A compiled fast path for the packaged Pipeline: the same probabilities, without scikit-learn's per-call overhead.

The LightGBM Pipeline the training builds is ``ColumnTransformer(num: log1p at positions +
median imputation; cat: OrdinalEncoder, unknown and missing -> -1) + LGBMClassifier``.
:func:`compile_pipeline` reads its fitted state once (log1p positions, the imputer's
medians, the encoder's categories, the booster) and :class:`CompiledLightGBM` rebuilds the
very same float64 matrix with numpy and vectorised pandas, then calls ``Booster.predict``
on it: same input, same booster, so the output is bit-identical. A soft-voting ensemble
averages its members exactly as :class:`flightdeck.training.train.SoftVotingEnsemble` does
(a member the fast path does not know keeps its own ``predict_proba``). Any other shape
(logistic, random forest, dummy, an unfamiliar step) compiles to ``None`` and the caller
keeps the Pipeline's own ``predict_proba``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd


class Predictor(Protocol):
    """Positive-class probabilities of a feature frame (numeric float64, categorical text or Categorical)."""

    def predict(self, X: pd.DataFrame) -> np.ndarray: ...

    def unknown_categories(self, X: pd.DataFrame) -> dict[str, int]: ...


@dataclass(frozen=True)
class CompiledLightGBM:
    """One fitted LightGBM Pipeline as numpy steps plus its booster."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    log1p_positions: tuple[int, ...]
    medians: np.ndarray
    categories: tuple[pd.Index, ...]
    booster: Any
    threads: int
    needs_text = False

    def encoded_codes(self, column: pd.Series, i: int) -> tuple[np.ndarray, int]:
        """Ordinal codes of one categorical column (unknown and missing -1) and how many were unknown."""
        uniques: Any
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes, uniques = column.cat.codes.to_numpy(), column.cat.categories
        else:
            codes, uniques = pd.factorize(column.to_numpy(dtype=object), use_na_sentinel=True)
        mapping = self.categories[i].get_indexer(pd.Index(np.asarray(uniques, dtype=object), dtype=object))
        out = np.where(codes >= 0, mapping[codes] if len(mapping) else -1, -1)
        unknown = int(np.count_nonzero((codes >= 0) & (out < 0)))
        return out, unknown

    def matrix(self, X: pd.DataFrame) -> np.ndarray:
        """The ColumnTransformer's output: numeric (log1p, median-imputed) then ordinal codes, float64."""
        from flightdeck.training.features import _log1p_columns

        num = _log1p_columns(X[list(self.numeric)], list(self.log1p_positions))  # the Pipeline's own step
        if np.isinf(num).any():
            raise ValueError("Input X contains infinity")  # SimpleImputer refuses it the same way
        missing = np.isnan(num)
        if missing.any():
            num[missing] = np.take(self.medians, np.nonzero(missing)[1])
        out = np.empty((len(X), len(self.numeric) + len(self.categorical)), dtype="float64")
        out[:, :len(self.numeric)] = num
        for i, name in enumerate(self.categorical):
            out[:, len(self.numeric) + i] = self.encoded_codes(X[name], i)[0]
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster.predict(self.matrix(X), num_threads=self.threads), dtype="float64")

    def unknown_categories(self, X: pd.DataFrame) -> dict[str, int]:
        """Non-missing values of each categorical feature the encoder never saw (only columns with some)."""
        out = {}
        for i, name in enumerate(self.categorical):
            n = self.encoded_codes(X[name], i)[1]
            if n:
                out[name] = n
        return out


@dataclass(frozen=True)
class CompiledEnsemble:
    """The soft-voting ensemble's mean of its members' probabilities, member by member."""

    members: tuple[Any, ...]  # CompiledLightGBM or a fitted Pipeline (its own predict_proba)
    first: Predictor | None

    @property
    def needs_text(self) -> bool:
        """Whether a member keeps its Pipeline (it wants the categorical features as object text)."""
        return not all(isinstance(m, CompiledLightGBM) for m in self.members)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        probs = [np.asarray(m.predict_proba(X)) if not isinstance(m, CompiledLightGBM) else _two_columns(m.predict(X))
                 for m in self.members]
        return np.asarray(np.mean(probs, axis=0))[:, 1]

    def unknown_categories(self, X: pd.DataFrame) -> dict[str, int]:
        return self.first.unknown_categories(X) if self.first is not None else {}


def _two_columns(positive: np.ndarray) -> np.ndarray:
    """What LGBMClassifier.predict_proba returns for a binary booster's output."""
    return np.vstack((1.0 - positive, positive)).transpose()


def compile_pipeline(model: Any, threads: int | None = None) -> CompiledLightGBM | CompiledEnsemble | None:
    """The fast path of a packaged model (a Pipeline or a soft-voting ensemble), or ``None`` if it has none."""
    members = getattr(model, "members", None)
    if members is not None:
        compiled = [compile_lightgbm(m, threads) for m in members]
        if not any(compiled):
            return None
        first = compiled[0]
        if len(members) == 1:
            return first
        return CompiledEnsemble(tuple(c if c is not None else m for c, m in zip(compiled, members, strict=True)),
                                first)
    return compile_lightgbm(model, threads)


def compile_lightgbm(pipeline: Any, threads: int | None = None) -> CompiledLightGBM | None:
    """Read a fitted ``features + LGBMClassifier`` Pipeline's state; ``None`` for any other shape."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or [name for name, _ in pipeline.steps] != ["features", "model"]:
        return None
    pre, est = pipeline.named_steps["features"], pipeline.named_steps["model"]
    if type(est).__name__ != "LGBMClassifier" or not isinstance(pre, ColumnTransformer):
        return None
    if callable(getattr(est, "_objective", None)) or len(getattr(est, "classes_", ())) != 2:
        return None
    parts = {name: (step, list(cols)) for name, step, cols in pre.transformers_
             if not (name == "remainder" and step == "drop")}
    if set(parts) != {"num", "cat"} or getattr(pre, "sparse_output_", False):
        return None
    numeric = _numeric_state(*parts["num"])
    categories = _ordinal_state(parts["cat"][0])
    if numeric is None or categories is None:
        return None
    names, positions, medians = numeric
    return CompiledLightGBM(tuple(names), tuple(parts["cat"][1]), tuple(positions), medians, categories,
                            est.booster_, threads or _threads(est.n_jobs))


def _threads(n_jobs: int | None) -> int:
    """LightGBM's reading of ``n_jobs`` (negative counts back from the cores + 1)."""
    import os

    n = int(n_jobs or 0)
    return max(1, (os.cpu_count() or 1) + 1 + n) if n < 0 else max(n, 1)


def _numeric_state(step: Any, columns: list[str]) -> tuple[list[str], list[int], np.ndarray] | None:
    """log1p positions and medians of ``FunctionTransformer(_log1p_columns) + SimpleImputer(median)``."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from flightdeck.training import features

    if not isinstance(step, Pipeline) or len(step.steps) != 2:
        return None
    log1p, imputer = step.steps[0][1], step.steps[1][1]
    if not (isinstance(log1p, FunctionTransformer) and log1p.func is features._log1p_columns  # noqa: SLF001
            and not log1p.validate and isinstance(imputer, SimpleImputer) and imputer.strategy == "median"
            and not imputer.add_indicator and imputer.keep_empty_features
            and isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values)):
        return None
    positions = list((log1p.kw_args or {}).get("positions", []))
    medians = np.asarray(imputer.statistics_, dtype="float64")
    if len(medians) != len(columns):
        return None
    return columns, positions, medians


def _ordinal_state(encoder: Any) -> tuple[pd.Index, ...] | None:
    """The encoder's categories (without a learned missing value) if unknown and missing both map to -1."""
    from sklearn.preprocessing import OrdinalEncoder

    if not (isinstance(encoder, OrdinalEncoder) and encoder.handle_unknown == "use_encoded_value"
            and encoder.unknown_value == -1 and encoder.encoded_missing_value == -1
            and encoder.dtype is np.float64 and encoder.min_frequency is None and encoder.max_categories is None):
        return None
    out = []
    for cats in encoder.categories_:
        values = [c for c in cats if not (isinstance(c, float) and np.isnan(c)) and c is not None]
        if len(values) < len(cats) - 1 or (len(values) == len(cats) - 1 and isinstance(cats[-1], str)):
            return None  # a learned missing value sorts last; anywhere else the codes would shift
        if not all(isinstance(v, str) for v in values):
            return None  # select_features gives the encoder text; anything else stays with the Pipeline
        out.append(pd.Index(values, dtype=object))
    return tuple(out)
