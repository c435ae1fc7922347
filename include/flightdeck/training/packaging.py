"""ONNX packaging of a fitted model pipeline, and the parity measure that decides whether it may ship.

:func:`export_onnx` turns the WHOLE fitted Pipeline into one ONNX graph: the numeric steps
(``log1p`` of the spec'd columns, clipped at 0, then median imputation), the ordinal
encoding of the text categories (unknown and missing -> -1, as the OrdinalEncoder does) and
the tree model (LightGBM through onnxmltools' converter, categorical splits included; a
random forest through skl2onnx's). The preprocessing nodes are written here from the fitted
steps' learned values (medians, categories) because skl2onnx has no converter for our
``_log1p_columns`` FunctionTransformer; the trees come from the converters.

A family that does not convert gets an :class:`Unsupported` with the reason, never an
exception. :func:`measure_parity` scores the same rows with onnxruntime and the Pipeline and
returns the largest absolute difference in probability.

Inputs of the graph: ``numeric`` (float64, the layout's numeric columns in order) and
``categorical`` (string, the layout's categorical columns; a missing value is fed as
:data:`MISSING_CATEGORY`). :func:`onnx_inputs` builds them from a feature frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.training.features import FeatureLayout, select_features

MISSING_CATEGORY = "__flightdeck_missing__"
OPSET = {"": 15, "ai.onnx.ml": 3}
PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class Unsupported:
    """The model's family does not convert to ONNX, and why."""

    family: str
    reason: str


@dataclass(frozen=True)
class Parity:
    """How closely the ONNX graph reproduces the Pipeline's positive-class probabilities."""

    max_abs_diff: float
    rows: int
    limit: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.limit


def model_family(pipeline: Any) -> str:
    """The family name of a fitted pipeline (``ensemble`` for a soft-voting ensemble)."""
    if hasattr(pipeline, "members"):
        return "ensemble"
    name = type(pipeline.named_steps["model"]).__name__
    return {"LGBMClassifier": "lightgbm", "RandomForestClassifier": "random_forest",
            "LogisticRegression": "logistic", "DummyClassifier": "dummy"}.get(name, name)


UNSUPPORTED_REASONS = {
    "dummy": "DummyClassifier: skl2onnx has no converter for it, and a constant prior has nothing to "
             "run faster",
    "logistic": "LogisticRegression behind a one-hot encoder that groups infrequent categories "
                "(min_frequency/max_categories, handle_unknown='infrequent_if_exist') and a StandardScaler: "
                "the graph written here covers the ordinal-encoded tree pipelines only, and skl2onnx cannot "
                "convert the Pipeline whole (no converter for the _log1p_columns FunctionTransformer)",
    "ensemble": "a soft-voting ensemble averages its members' probabilities in Python (SoftVotingEnsemble); "
                "no graph is written for the average, and a logistic member would not convert anyway",
}


def export_onnx(pipeline: Any, layout: FeatureLayout, sample: pd.DataFrame | None = None) -> bytes | Unsupported:
    """The fitted pipeline as one serialised ONNX model, or why its family does not convert.

    Args:
        pipeline: the fitted ``Pipeline([("features", ColumnTransformer), ("model", ...)])``.
        layout: the recorded feature layout (input order).
        sample: rows of the feature frame; when given, the graph is checked to run on them.
    """
    family = model_family(pipeline)
    if family not in ("lightgbm", "random_forest"):
        return Unsupported(family, UNSUPPORTED_REASONS.get(family, f"no ONNX converter for {family}"))
    import onnx

    pre = _preprocessing_nodes(pipeline, layout)
    trees = _tree_model(pipeline.named_steps["model"], len(layout.columns))
    model = _join(pre, trees, layout)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if sample is not None and len(sample):
        predict_onnx(session_for(data), select_features(sample, layout), layout)
    return data


# ---------------------------------------------------------------- the preprocessing graph
@dataclass
class _Graph:
    nodes: list[Any]
    initializers: list[Any]
    output: str


def _fitted_steps(pipeline: Any) -> tuple[list[int], np.ndarray, list[list[str]]]:
    """Logged positions, imputation medians and known categories of the fitted ColumnTransformer."""
    pre = pipeline.named_steps["features"]
    num = pre.named_transformers_["num"]
    steps = dict(num.steps)
    log_step = steps.get("functiontransformer")
    positions = list((log_step.kw_args or {}).get("positions", [])) if log_step is not None else []
    medians = np.asarray(steps["simpleimputer"].statistics_, dtype=np.float64)
    encoder = pre.named_transformers_["cat"]
    categories = []
    for column, known in zip(pre.transformers_[1][2], getattr(encoder, "categories_", []), strict=True):
        values = [v for v in known if not (isinstance(v, float) and np.isnan(v))]
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"categorical feature {column!r}: expected text categories, found "
                             f"{sorted({type(v).__name__ for v in values})}")
        if MISSING_CATEGORY in values:
            raise ValueError(f"categorical feature {column!r} has a category equal to the missing marker "
                             f"{MISSING_CATEGORY!r}")
        categories.append(values)
    return positions, medians, categories


def _preprocessing_nodes(pipeline: Any, layout: FeatureLayout) -> _Graph:
    from onnx import TensorProto, helper, numpy_helper

    positions, medians, categories = _fitted_steps(pipeline)
    k = len(layout.numeric)
    nodes: list[Any] = []
    inits = [numpy_helper.from_array(np.zeros((1, 1)), "fd_zero"), numpy_helper.from_array(np.ones((1, 1)), "fd_one")]
    parts = []
    if k:
        mask = np.zeros((1, k), dtype=bool)
        mask[0, positions] = True
        inits += [numpy_helper.from_array(mask, "fd_log_mask"),
                  numpy_helper.from_array(medians.reshape(1, k), "fd_medians")]
        nodes += [
            # log1p(clip(x, 0)) on the spec'd columns; NaN stays NaN (Less(NaN, 0) is false)
            helper.make_node("Less", ["numeric", "fd_zero"], ["fd_negative"]),
            helper.make_node("Where", ["fd_negative", "fd_zero", "numeric"], ["fd_clipped"]),
            helper.make_node("Add", ["fd_clipped", "fd_one"], ["fd_shifted"]),
            helper.make_node("Log", ["fd_shifted"], ["fd_logged"]),
            helper.make_node("Where", ["fd_log_mask", "fd_logged", "numeric"], ["fd_transformed"]),
            helper.make_node("IsNaN", ["fd_transformed"], ["fd_absent"]),
            helper.make_node("Where", ["fd_absent", "fd_medians", "fd_transformed"], ["fd_imputed"]),
        ]
        parts.append("fd_imputed")
    for j, known in enumerate(categories):
        inits.append(numpy_helper.from_array(np.array([j], dtype=np.int64), f"fd_cat_index_{j}"))
        nodes += [
            helper.make_node("Gather", ["categorical", f"fd_cat_index_{j}"], [f"fd_cat_text_{j}"], axis=1),
            helper.make_node("LabelEncoder", [f"fd_cat_text_{j}"], [f"fd_cat_code_{j}"], domain="ai.onnx.ml",
                             keys_strings=known, values_floats=[float(i) for i in range(len(known))],
                             default_float=-1.0),
            helper.make_node("Cast", [f"fd_cat_code_{j}"], [f"fd_cat_double_{j}"], to=TensorProto.DOUBLE),
        ]
        parts.append(f"fd_cat_double_{j}")
    nodes.append(helper.make_node("Concat", parts, ["fd_features_double"], axis=1))
    nodes.append(helper.make_node("Cast", ["fd_features_double"], ["features"], to=TensorProto.FLOAT))
    return _Graph(nodes, inits, "features")


# ---------------------------------------------------------------- the trees
def _tree_model(estimator: Any, n_features: int) -> Any:
    """The converted estimator, taking ``features`` (float32) and giving ``probabilities`` [N, 2]."""
    if type(estimator).__name__ == "LGBMClassifier":
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType as MLFloat

        types = [("features", MLFloat([None, n_features]))]
        model = onnxmltools.convert_lightgbm(estimator, initial_types=types, zipmap=False,
                                             target_opset=OPSET[""])
    else:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        types = [("features", FloatTensorType([None, n_features]))]
        model = convert_sklearn(estimator, initial_types=types, options={id(estimator): {"zipmap": False}},
                                target_opset=OPSET)
    return model


def _join(pre: _Graph, trees: Any, layout: FeatureLayout) -> Any:
    """One model: the preprocessing nodes feeding the converted trees; output ``probabilities``."""
    from onnx import TensorProto, helper

    g = trees.graph
    outputs = [o for o in g.output if o.type.tensor_type.elem_type == TensorProto.FLOAT and
               len(o.type.tensor_type.shape.dim) == 2]
    if len(outputs) != 1:
        raise ValueError(f"converted model has no single probability output: {[o.name for o in g.output]}")
    rename = [] if outputs[0].name == PROBABILITIES else [helper.make_node("Identity", [outputs[0].name],
                                                                             [PROBABILITIES])]
    inputs = []
    if layout.numeric:
        inputs.append(helper.make_tensor_value_info("numeric", TensorProto.DOUBLE, [None, len(layout.numeric)]))
    if layout.categorical:
        inputs.append(helper.make_tensor_value_info("categorical", TensorProto.STRING,
                                                    [None, len(layout.categorical)]))
    graph = helper.make_graph([*pre.nodes, *g.node, *rename], "flightdeck_pipeline", inputs,
                              [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [None, 2])],
                              [*pre.initializers, *g.initializer])
    opsets = {o.domain: o.version for o in trees.opset_import}
    opsets[""] = max(opsets.get("", 0), OPSET[""])
    opsets["ai.onnx.ml"] = max(opsets.get("ai.onnx.ml", 0), OPSET["ai.onnx.ml"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="flightdeck")
    model.ir_version = trees.ir_version
    model.metadata_props.add(key="flightdeck.layout", value=repr(layout.to_dict()))
    model.metadata_props.add(key="flightdeck.missing_category", value=MISSING_CATEGORY)
    return model


# ---------------------------------------------------------------- scoring and parity
def session_for(model: bytes, threads: int = 1) -> Any:
    """An onnxruntime session over a serialised model, on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnx_inputs(X: pd.DataFrame, layout: FeatureLayout) -> dict[str, np.ndarray]:
    """The graph's inputs from a model-input frame (:func:`select_features` output)."""
    feed: dict[str, np.ndarray] = {}
    if layout.numeric:
        feed["numeric"] = X[list(layout.numeric)].to_numpy(dtype=np.float64)
    if layout.categorical:
        text = X[list(layout.categorical)].astype(object)
        feed["categorical"] = text.where(text.notna(), MISSING_CATEGORY).to_numpy(dtype=str)
    return feed


def onnx_inputs_doc(layout: FeatureLayout) -> dict[str, Any]:
    """The graph's inputs as recorded with the export: name, element type, columns."""
    return {"numeric": {"dtype": "float64", "columns": list(layout.numeric)},
            "categorical": {"dtype": "string", "columns": list(layout.categorical), "missing": MISSING_CATEGORY}}


def predict_onnx(session: Any, X: pd.DataFrame, layout: FeatureLayout) -> np.ndarray:
    """Positive-class probability from the ONNX graph (float64, one per row)."""
    out = session.run([PROBABILITIES], onnx_inputs(X, layout))[0]
    return np.asarray(out, dtype=np.float64)[:, 1]


def measure_parity(model: bytes, X: pd.DataFrame, layout: FeatureLayout, reference: np.ndarray,
                   limit: float, threads: int = 1) -> Parity:
    """Largest |p_onnx - p_reference| over the rows of ``X`` (NaN on either side counts as infinite).

    ``reference`` is what the packaged model gives on the same rows (the pyfunc's or the
    Pipeline's positive-class probabilities).
    """
    X = select_features(X, layout)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    if len(X) != len(reference):
        raise ValueError(f"parity: {len(X)} rows of features but {len(reference)} reference probabilities")
    if len(X) == 0:
        return Parity(float("inf"), 0, limit)
    diff = np.abs(predict_onnx(session_for(model, threads), X, layout) - reference)
    worst = float(np.max(np.where(np.isfinite(diff), diff, np.inf)))
    return Parity(worst, len(X), limit)


def runtime_versions() -> dict[str, str]:
    """Versions of the ONNX toolchain, recorded with every parity figure."""
    from importlib.metadata import version

    return {name: version(name) for name in ("onnx", "onnxruntime", "onnxmltools", "skl2onnx")}


def model_opsets(model: bytes) -> dict[str, int]:
    import onnx

    return {o.domain or "ai.onnx": int(o.version) for o in onnx.load_from_string(model).opset_import}
