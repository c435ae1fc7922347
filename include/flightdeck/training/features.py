"""Feature engineering shared by training and scoring.

:func:`build_feature_frame` turns wrangled rows into the model's input: reference joins,
leakage-safe historical rates and the spec's feature columns in a fixed order.
:func:`build_estimator` makes the scikit-learn Pipeline (preprocessing + model) that is
fitted on the training split only and packaged with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.core.errors import Rejected
from flightdeck.core.spec import DatasetSpec, JoinSpec
from flightdeck.data.ingest import pseudonymise
from flightdeck.data.replay import package_file

CATEGORICAL_TYPES = ("category", "string", "bool")


class FeatureError(Rejected, ValueError):
    """The data cannot be turned into the spec's features (names the column)."""


@dataclass(frozen=True)
class FeatureLayout:
    """The fixed feature order, split by kind, recorded with every model."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_dict(self) -> dict[str, list[str]]:
        return {"numeric": list(self.numeric), "categorical": list(self.categorical)}


def load_reference(join: JoinSpec, spec: DatasetSpec, pii_key: str) -> pd.DataFrame:
    """Read a join's reference table, renamed to feature names, keys typed like the features."""
    path = package_file(join.package, join.file)
    table = pd.read_csv(path)
    missing = [c for c in (*join.keys, *join.columns) if c not in table.columns]
    if missing:
        raise FeatureError(f"{path.name}: reference for join {join.name!r} lacks columns {missing}")
    table = table[[*join.keys, *join.columns]].rename(columns=join.columns)
    for key in join.keys:
        kind = spec.column_type(key)
        if kind == "timestamp":
            table[key] = pd.to_datetime(table[key], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        elif kind in CATEGORICAL_TYPES:
            table[key] = table[key].astype("object")
        if key in join.pseudonymise:
            table[key] = pseudonymise(table[key], pii_key)
    return table.drop_duplicates(list(join.keys), keep="last").reset_index(drop=True)


def load_references(spec: DatasetSpec, pii_key: str) -> dict[str, pd.DataFrame]:
    return {j.name: load_reference(j, spec, pii_key) for j in spec.training.joins}


def apply_joins(frame: pd.DataFrame, spec: DatasetSpec, references: dict[str, pd.DataFrame]) -> pd.DataFrame:
    out = frame
    for join in spec.training.joins:
        ref = references[join.name]
        clash = [c for c in join.columns.values() if c in out.columns]
        out = out.drop(columns=clash).merge(ref, on=list(join.keys), how="left", validate="many_to_one")
    return out


@dataclass(frozen=True)
class HistoryTable:
    """One history feature's outcomes, prepared once: running counts per group, ordered by known time."""

    keys: tuple[str, ...]
    groups: pd.Index  # the group texts (see _group_key); a group's id is its position
    right: pd.DataFrame  # _gid, _known_at, _n, _pos sorted by _known_at


def history_tables(history: pd.DataFrame, spec: DatasetSpec) -> dict[str, HistoryTable]:
    """The as-of merge's right side of every history feature (depends only on the history and the spec)."""
    delay = pd.Timedelta(spec.label_delay_timedelta)
    target, ts = spec.target.name, spec.event_time
    labelled = history[history[target].notna()]
    out = {}
    for h in spec.training.history:
        keys = list(h.by)
        hist = labelled[[*keys, ts, target]].copy()
        hist["_known_at"] = hist[ts] + delay
        hist = hist.sort_values("_known_at", kind="stable")
        grouped = hist.groupby(keys, sort=False, dropna=False)[target]
        hist["_n"] = grouped.cumcount() + 1
        hist["_pos"] = grouped.cumsum().astype("float64")
        gid, groups = pd.factorize(_group_key(hist, keys))
        hist["_gid"] = gid.astype("int64")
        out[h.name] = HistoryTable(tuple(keys), pd.Index(groups, dtype=object),
                                   hist[["_gid", "_known_at", "_n", "_pos"]])
    return out


def add_history_features(frame: pd.DataFrame, history: pd.DataFrame, spec: DatasetSpec, prior: float,
                         tables: dict[str, HistoryTable] | None = None) -> pd.DataFrame:
    """Add each spec'd historical target rate per group, using only outcomes known before the row.

    An outcome of an event at time t is known at ``t + label_delay``; a row at time s sees
    only outcomes with known time strictly before s. Rates are smoothed towards ``prior``.
    ``tables`` (from :func:`history_tables` of the same history) saves preparing it again.
    """
    if not spec.training.history:
        return frame
    ts = spec.event_time
    tables = tables if tables is not None else history_tables(history, spec)
    out = frame.copy()
    out["_order"] = np.arange(len(out))
    left = out.sort_values(ts, kind="stable")
    for h in spec.training.history:
        table = tables[h.name]
        probe = left[[ts, "_order"]].assign(_gid=_group_ids(left, list(table.keys), table.groups))
        merged = pd.merge_asof(probe, table.right, left_on=ts, right_on="_known_at", by="_gid",
                               allow_exact_matches=False, direction="backward")
        n = merged["_n"].fillna(0).to_numpy(dtype="float64")
        pos = merged["_pos"].fillna(0).to_numpy(dtype="float64")
        rates = np.empty(len(out), dtype="float64")
        rates[merged["_order"].to_numpy()] = (pos + h.smoothing * prior) / (n + h.smoothing)
        out[h.name] = rates
    return out.drop(columns="_order")


def _group_ids(frame: pd.DataFrame, keys: list[str], groups: pd.Index) -> np.ndarray:
    """Each row's group id in ``groups`` (-1 if the history never saw it), texts built per distinct key only."""
    combo = np.zeros(len(frame), dtype="int64")
    for k in keys:
        codes, uniques = pd.factorize(frame[k], use_na_sentinel=True)
        combo = pd.factorize(combo * (len(uniques) + 1) + (codes + 1))[0].astype("int64")  # stays < rows
    codes, distinct = pd.factorize(combo)
    first = np.full(len(distinct), -1, dtype="int64")
    first[codes[::-1]] = np.arange(len(frame) - 1, -1, -1)  # a row of each distinct key combination
    texts = _group_key(frame.iloc[first], keys)
    return np.asarray(groups.get_indexer(pd.Index(texts.to_numpy(), dtype=object)), dtype="int64")[codes]


def _group_key(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One text key per group, so both sides of an as-of merge have the same dtype."""
    parts = [frame[k].astype("object").where(frame[k].notna(), "").astype(str) for k in keys]
    out = parts[0]
    for part in parts[1:]:
        out = out + "\x1f" + part
    return out.astype(object)


def feature_layout(spec: DatasetSpec, frame: pd.DataFrame) -> FeatureLayout:
    numeric: list[str] = []
    categorical: list[str] = []
    for name in spec.features:
        kind = spec.column_type(name)
        if kind is None:
            kind = "category" if (name in frame and not pd.api.types.is_numeric_dtype(frame[name])) else "float"
        (categorical if kind in CATEGORICAL_TYPES else numeric).append(name)
    return FeatureLayout(tuple(numeric), tuple(categorical))


def select_features(frame: pd.DataFrame, layout: FeatureLayout) -> pd.DataFrame:
    """The model input: features in the recorded order, numeric as float, categories as text."""
    return _select(frame, layout, _as_object_text)


def select_features_categorical(frame: pd.DataFrame, layout: FeatureLayout) -> pd.DataFrame:
    """:func:`select_features` with each categorical feature as a ``Categorical`` of the same texts.

    The values are those of :func:`select_features` (each distinct value is turned into text
    by the same conversion, once), so ``pd.util.hash_pandas_object`` gives the same hashes
    (pandas hashes an object column through its factorised categories) at a fraction of
    the cost of converting every row.
    """
    return _select(frame, layout, _as_text_categorical)


def _as_object_text(values: pd.Series) -> pd.Series:
    col = values.astype("object")
    return col.astype(str).where(col.notna(), np.nan).astype(object)


def _select(frame: pd.DataFrame, layout: FeatureLayout, as_text: Any) -> pd.DataFrame:
    missing = [c for c in layout.columns if c not in frame.columns]
    if missing:
        raise FeatureError(f"feature column(s) {missing} missing from the data; expected {layout.columns}")
    out = pd.DataFrame(index=frame.index)
    for c in layout.numeric:
        out[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    for c in layout.categorical:
        out[c] = as_text(frame[c])
    return out


def _as_text_categorical(column: pd.Series) -> pd.Categorical:
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    distinct = pd.Series(np.asarray(uniques, dtype=object), dtype=object)
    text = distinct.astype("object").astype(str).to_numpy(dtype=object)  # select_features' conversion
    merged, categories = pd.factorize(text)  # two values may give one text (1 and "1")
    final = np.where(codes >= 0, merged[codes] if len(merged) else -1, -1)
    return pd.Categorical.from_codes(final, categories=pd.Index(categories, dtype=object))


def build_feature_frame(frame: pd.DataFrame, spec: DatasetSpec, references: dict[str, pd.DataFrame],
                        history: pd.DataFrame, prior: float,
                        tables: dict[str, HistoryTable] | None = None) -> pd.DataFrame:
    """Joins and historical rates added to wrangled rows (all columns kept)."""
    return add_history_features(apply_joins(frame, spec, references), history, spec, prior, tables)


def _numeric_steps(spec: DatasetSpec, layout: FeatureLayout, scale: bool) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    logged = [i for i, c in enumerate(layout.numeric) if spec.training.transforms.get(c) == "log1p"]
    # transform in place, so the output keeps the recorded feature order
    steps = [FunctionTransformer(_log1p_columns, kw_args={"positions": logged}, feature_names_out="one-to-one"),
             SimpleImputer(strategy="median", keep_empty_features=True)]
    if scale:
        steps.append(StandardScaler())
    return make_pipeline(*steps)


def _log1p_columns(x: Any, positions: list[int]) -> Any:
    out = np.array(x, dtype="float64", copy=True)
    if positions:
        out[:, positions] = np.log1p(np.clip(out[:, positions], 0, None))
    return out


def build_estimator(family: str, spec: DatasetSpec, layout: FeatureLayout, params: dict[str, Any] | None = None) -> Any:
    """A scikit-learn Pipeline for one model family, preprocessing included.

    Unseen categories at scoring time map to a known bucket (-1 for the ordinal
    encoders, which LightGBM treats as its missing bucket; the infrequent bucket for
    one-hot), so they never crash scoring.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    params = dict(params or {})
    seed, threads = spec.training.seed, spec.training.threads
    numeric, categorical = list(layout.numeric), list(layout.categorical)
    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
                             dtype=np.float64)
    if family == "dummy":
        model: Any = DummyClassifier(strategy="prior")
        pre = ColumnTransformer([("num", _numeric_steps(spec, layout, False), numeric), ("cat", ordinal, categorical)])
    elif family == "logistic":
        onehot = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20, max_categories=60,
                               sparse_output=True)
        pre = ColumnTransformer([("num", _numeric_steps(spec, layout, True), numeric),
                                 ("cat", make_imputed(onehot), categorical)])
        model = LogisticRegression(C=params.pop("C", 1.0), max_iter=1000, random_state=seed)
    elif family == "random_forest":
        pre = ColumnTransformer([("num", _numeric_steps(spec, layout, False), numeric), ("cat", ordinal, categorical)])
        model = RandomForestClassifier(**{"n_estimators": 80, "min_samples_leaf": 20, "max_features": "sqrt",
                                          "max_samples": 0.5, **params}, n_jobs=threads, random_state=seed)
    elif family == "lightgbm":
        from lightgbm import LGBMClassifier

        pre = ColumnTransformer([("num", _numeric_steps(spec, layout, False), numeric), ("cat", ordinal, categorical)])
        model = LGBMClassifier(**{"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 31,
                                  "min_child_samples": 50, "subsample": 0.8, "subsample_freq": 1,
                                  "colsample_bytree": 0.8, **params},
                               random_state=seed, n_jobs=threads, deterministic=True, force_row_wise=True,
                               verbose=-1)
    else:
        raise ValueError(f"unknown model family {family!r}")
    return Pipeline([("features", pre), ("model", model)])


def make_imputed(encoder: Any) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    return make_pipeline(SimpleImputer(strategy="constant", fill_value="__missing__"), encoder)


def fit_params(family: str, layout: FeatureLayout) -> dict[str, Any]:
    """Fit-time arguments: LightGBM learns the ordinal-encoded columns as native categoricals."""
    if family == "lightgbm" and layout.categorical:
        start = len(layout.numeric)
        return {"model__categorical_feature": list(range(start, start + len(layout.categorical)))}
    return {}


def count_unseen_categories(pipeline: Any, X: pd.DataFrame, layout: FeatureLayout) -> dict[str, int]:
    """How many values of each categorical feature the fitted pipeline has never seen."""
    categories = known_categories(pipeline, layout)
    out = {}
    for column, known in categories.items():
        values = X[column]
        out[column] = int((values.notna() & ~values.isin(known)).sum())
    return out


def known_categories(pipeline: Any, layout: FeatureLayout) -> dict[str, set[Any]]:
    pre = pipeline.named_steps["features"]
    encoder = pre.named_transformers_["cat"]
    if hasattr(encoder, "steps"):
        encoder = encoder.steps[-1][1]
    return {c: set(cats) for c, cats in zip(layout.categorical, encoder.categories_, strict=True)}
