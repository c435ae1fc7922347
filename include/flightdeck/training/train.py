"""Model engineering: compare model families with time-series cross-validation, tune the
best under a seeded budget, try a soft-voting ensemble, and choose on the validation split.

No tracking or I/O here: a callback reports every candidate so the caller can log it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core.errors import Rejected
from flightdeck.core.spec import DatasetSpec
from flightdeck.training.features import FeatureLayout, build_estimator, fit_params

CandidateCallback = Callable[[str, str, dict[str, Any], dict[str, float]], None]


class TrainingDataError(Rejected, ValueError):
    """The training data cannot train a model (empty, one class, missing target...)."""


def check_training_data(X: pd.DataFrame, y: pd.Series, name: str, min_rows: int) -> None:
    """Fail clearly on data no model should be trained on."""
    if len(X) == 0:
        raise TrainingDataError(f"{name} split is empty: no labelled rows in the training window")
    if y.isna().any():
        raise TrainingDataError(f"{name} split has {int(y.isna().sum())} rows with a missing target")
    if y.nunique() < 2:
        raise TrainingDataError(f"{name} split has a single class ({y.iloc[0]}): cannot train a classifier")
    if len(X) < min_rows:
        raise TrainingDataError(f"{name} split has {len(X)} rows, fewer than training.min_train_rows={min_rows}")


def score(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    return {"roc_auc": float(roc_auc_score(y, proba)),
            "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1]))}


def better(a: float, b: float, metric: str) -> bool:
    return a < b if metric == "log_loss" else a > b


class SoftVotingEnsemble:
    """Average of the members' probabilities (members are fitted pipelines)."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.mean([m.predict_proba(X) for m in self.members], axis=0)


def positive_proba(model: Any, X: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(X))[:, 1]


def cross_validate(family: str, params: dict[str, Any], X: pd.DataFrame, y: np.ndarray, spec: DatasetSpec,
                   layout: FeatureLayout) -> dict[str, float]:
    """Time-series CV (expanding window over time-ordered rows): mean and std per metric."""
    from sklearn.model_selection import TimeSeriesSplit

    folds = []
    for train_idx, valid_idx in TimeSeriesSplit(n_splits=spec.training.cv_folds).split(X):
        if len(np.unique(y[train_idx])) < 2 or len(np.unique(y[valid_idx])) < 2:
            continue
        model = build_estimator(family, spec, layout, params)
        model.fit(X.iloc[train_idx], y[train_idx], **fit_params(family, layout))
        folds.append(score(y[valid_idx], positive_proba(model, X.iloc[valid_idx])))
    if not folds:
        raise TrainingDataError("no cross-validation fold has both classes: the training window is too small")
    out = {}
    for metric in ("roc_auc", "log_loss"):
        values = np.array([f[metric] for f in folds])
        out[f"cv_{metric}_mean"], out[f"cv_{metric}_std"] = float(values.mean()), float(values.std())
    out["cv_folds"] = float(len(folds))
    return out


SEARCH_SPACES: dict[str, Callable[[np.random.Generator], dict[str, Any]]] = {
    "lightgbm": lambda r: {"num_leaves": int(r.choice([15, 31, 63, 127])),
                           "learning_rate": float(r.choice([0.02, 0.05, 0.1])),
                           "n_estimators": int(r.choice([200, 400, 600])),
                           "min_child_samples": int(r.choice([20, 50, 100, 200])),
                           "colsample_bytree": float(r.choice([0.6, 0.8, 1.0])),
                           "reg_lambda": float(r.choice([0.0, 1.0, 5.0]))},
    "random_forest": lambda r: {"min_samples_leaf": int(r.choice([5, 10, 20, 50])),
                                "max_features": ["sqrt", 0.3, 0.5][int(r.integers(3))],
                                "n_estimators": int(r.choice([60, 100]))},
    "logistic": lambda r: {"C": float(r.choice([0.01, 0.1, 0.3, 1.0, 3.0, 10.0]))},
}


# Hyperparameters set on purpose but not searched, each with its reason (ML Test Score, Model 3).
PINNED_HYPERPARAMETERS: dict[str, dict[str, str]] = {
    "lightgbm": {"random_state": "training.seed: reproducible fits",
                 "n_jobs": "training.threads: a fixed thread count keeps fits bit-identical",
                 "deterministic": "bit-identical fits on one machine",
                 "force_row_wise": "bit-identical fits on one machine",
                 "verbose": "logging only",
                 "subsample": "row bagging fixed at 0.8: regularisation, budget kept for the searched knobs",
                 "subsample_freq": "bag every iteration, with subsample"},
    "random_forest": {"random_state": "training.seed: reproducible fits",
                      "n_jobs": "training.threads",
                      "max_samples": "0.5: bounds fit time and memory on small workers"},
    "logistic": {"random_state": "training.seed: reproducible fits",
                 "max_iter": "a convergence bound, not a capacity knob"},
    "dummy": {"strategy": "prior: the baseline by definition"},
}


@dataclass
class TrainingOutcome:
    chosen_name: str
    model: Any
    params: dict[str, Any]
    validation: dict[str, float]
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    prediction_fingerprint: str = ""


def prediction_fingerprint(proba: np.ndarray) -> str:
    """Content hash of a model's predictions: equal for bit-identical models on the same data."""
    return hashlib.sha256(np.ascontiguousarray(proba, dtype=np.float64).tobytes()).hexdigest()


def select_model(X_train: pd.DataFrame, y_train: pd.Series, X_val: pd.DataFrame, y_val: pd.Series,
                 spec: DatasetSpec, layout: FeatureLayout,
                 on_candidate: CandidateCallback | None = None) -> TrainingOutcome:
    """Compare, tune, ensemble and choose on the validation split (the test split is not touched)."""
    cfg = spec.training
    metric = cfg.metric
    ytr, yva = y_train.to_numpy(dtype=int), y_val.to_numpy(dtype=int)
    report = on_candidate or (lambda *a: None)
    leaderboard: list[dict[str, Any]] = []
    best_params: dict[str, dict[str, Any]] = {}
    cv_key = f"cv_{metric}_mean"
    for family in cfg.candidates:
        cv = cross_validate(family, {}, X_train, ytr, spec, layout)
        report(f"{family}-default", family, {}, cv)
        best_params[family] = {}
        leaderboard.append({"name": family, "family": family, "params": {}, **cv})
    ranked = sorted((e for e in leaderboard if e["family"] != "dummy"), key=lambda e: e[cv_key],
                    reverse=metric != "log_loss")
    rng = np.random.default_rng(cfg.seed)
    for entry in ranked[:cfg.tune_top]:
        family = entry["family"]
        if family not in SEARCH_SPACES:
            continue
        best_cv = entry[cv_key]
        for trial in range(cfg.tuning_budget):
            params = SEARCH_SPACES[family](rng)
            cv = cross_validate(family, params, X_train, ytr, spec, layout)
            report(f"{family}-trial-{trial}", family, params, cv)
            if better(cv[cv_key], best_cv, metric):
                best_cv, best_params[family] = cv[cv_key], params
        leaderboard.append({"name": f"{family}-tuned", "family": family, "params": best_params[family],
                            "cv_tuned": best_cv})
    fitted: dict[str, tuple[Any, dict[str, float]]] = {}
    for family in cfg.candidates:
        model = build_estimator(family, spec, layout, best_params[family])
        model.fit(X_train, ytr, **fit_params(family, layout))
        val = score(yva, positive_proba(model, X_val))
        fitted[family] = (model, val)
        report(f"{family}-final", family, best_params[family], {f"val_{k}": v for k, v in val.items()})
        leaderboard.append({"name": f"{family}-final", "family": family, "params": best_params[family],
                            **{f"val_{k}": v for k, v in val.items()}})
    order = sorted((f for f in fitted if f != "dummy"), key=lambda f: fitted[f][1][metric],
                   reverse=metric != "log_loss")
    if not order:
        order = ["dummy"]
    chosen = order[0]
    model, val = fitted[chosen]
    params = best_params[chosen]
    if len(order) >= 2:
        ensemble = SoftVotingEnsemble([fitted[order[0]][0], fitted[order[1]][0]])
        ens_val = score(yva, positive_proba(ensemble, X_val))
        report("ensemble", "ensemble", {"members": order[:2]}, {f"val_{k}": v for k, v in ens_val.items()})
        leaderboard.append({"name": "ensemble", "family": "ensemble", "members": order[:2],
                            **{f"val_{k}": v for k, v in ens_val.items()}})
        if better(ens_val[metric], val[metric], metric):
            chosen, model, val, params = "ensemble", ensemble, ens_val, {"members": order[:2]}
    return TrainingOutcome(chosen_name=chosen, model=model, params=params, validation=val, leaderboard=leaderboard,
                           prediction_fingerprint=prediction_fingerprint(positive_proba(model, X_val)))
