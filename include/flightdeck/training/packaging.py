"""ONNX packaging of a fitted model pipeline, and the parity measure that decides whether it may ship.

:func:`export_onnx` turns the WHOLE fitted Pipeline into one ONNX graph: the numeric steps
(``log1p`` of the spec'd columns, clipped at 0, then median imputation), the ordinal
encoding of the text categories (unknown and missing -> -1, as the OrdinalEncoder does) and
the trees. The preprocessing nodes are written here from the fitted steps' learned values
(medians, categories): skl2onnx has no converter for our ``_log1p_columns`` FunctionTransformer.

LightGBM is written here too, from ``booster.dump_model()``, as ONNX's ``TreeEnsemble``
(ai.onnx.ml opset 5): float64 thresholds and leaf values, and each categorical split as one
set-membership node. onnxmltools' converter (1.16) emits the older TreeEnsembleClassifier:
float32 thresholds and sums (parity ~2.5e-7 instead of ~2e-16) and every categorical set
unrolled into a chain of equality nodes (13x more nodes per categorical split here), which
ran about twice as slow. A random forest goes through skl2onnx's converter (float32
comparisons, as scikit-learn's trees make them).

A family that does not convert gets an :class:`Unsupported` with the reason, never an
exception. :func:`measure_parity` scores rows with onnxruntime and compares them with the
packaged model's probabilities on the same rows.

Inputs of the graph: ``numeric`` (float64, the layout's numeric columns in order) and
``categorical`` (string, the layout's categorical columns; a missing value is fed as
:data:`MISSING_CATEGORY`); output ``probabilities`` (float64 [N, 2]). :func:`onnx_inputs`
builds the inputs from a feature frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flightdeck.training.features import FeatureLayout, select_features

MISSING_CATEGORY = "__flightdeck_missing__"
SKLEARN_OPSET = {"": 15, "ai.onnx.ml": 3}
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
    trees = _tree_graph(pipeline.named_steps["model"], len(layout.columns), pre.output)
    model = _join(pre, trees, layout)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if sample is not None and len(sample):
        predict_onnx(session_for(data), select_features(sample, layout), layout)
    return data


# ---------------------------------------------------------------- the preprocessing graph
@dataclass
class _Graph:
    """Nodes, initialisers, the output's name and the opsets they need."""

    nodes: list[Any]
    initializers: list[Any]
    output: str
    opsets: dict[str, int] = field(default_factory=dict)


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
    return _Graph(nodes, inits, "fd_features_double")


# ---------------------------------------------------------------- the trees
LIGHTGBM_OPSET = {"": 21, "ai.onnx.ml": 5}  # TreeEnsemble: float64 splits and leaves, set membership
MODE_LEQ, MODE_MEMBER = 0, 6  # TreeEnsemble's nodes_modes


@dataclass
class _Trees:
    """LightGBM's trees in the arrays of ONNX's TreeEnsemble (ai.onnx.ml opset 5)."""

    features: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    true_leafs: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    false_leafs: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    members: list[float] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    leaves: list[float] = field(default_factory=list)

    def add_tree(self, root: dict[str, Any]) -> None:
        if "split_index" in root:
            self.roots.append(self._split(root))
            return
        # a single-leaf tree: one split whose both sides are that leaf
        leaf = self._leaf(root)
        self.roots.append(self._node(0, 0.0, MODE_LEQ, 0))
        self._link(self.roots[-1], (leaf, 1), (leaf, 1))

    def _node(self, feature: int, split: float, mode: int, missing_true: int) -> int:
        self.features.append(feature)
        self.splits.append(split)
        self.modes.append(mode)
        self.missing_true.append(missing_true)
        for side in (self.true_ids, self.true_leafs, self.false_ids, self.false_leafs):
            side.append(0)
        return len(self.features) - 1

    def _link(self, i: int, true: tuple[int, int], false: tuple[int, int]) -> None:
        self.true_ids[i], self.true_leafs[i] = true
        self.false_ids[i], self.false_leafs[i] = false

    def _leaf(self, node: dict[str, Any]) -> int:
        self.leaves.append(float(node["leaf_value"]))
        return len(self.leaves) - 1

    def _child(self, node: dict[str, Any]) -> tuple[int, int]:
        return (self._split(node), 0) if "split_index" in node else (self._leaf(node), 1)

    def _split(self, node: dict[str, Any]) -> int:
        """One LightGBM split; left is taken when the decision holds (as in LightGBM)."""
        if node["decision_type"] == "==":
            # category codes in the set go left; -1 (unknown/missing) is in no set and goes right
            self.members += [float(c) for c in str(node["threshold"]).split("||")] + [float("nan")]
            i = self._node(int(node["split_feature"]), 0.0, MODE_MEMBER, 0)
        elif node["decision_type"] == "<=":
            if node["missing_type"] == "Zero":
                raise ValueError("LightGBM zero-as-missing splits are not reproduced in ONNX")
            tracks = int(bool(node["default_left"]) and node["missing_type"] == "NaN")
            i = self._node(int(node["split_feature"]), float(node["threshold"]), MODE_LEQ, tracks)
        else:
            raise ValueError(f"LightGBM decision type {node['decision_type']!r} has no ONNX equivalent here")
        self._link(i, self._child(node["left_child"]), self._child(node["right_child"]))
        return i


def _lightgbm_graph(booster: Any, source: str) -> _Graph:
    """A binary LightGBM booster as TreeEnsemble (float64 margin) + sigmoid -> ``probabilities``."""
    from onnx import helper, numpy_helper

    dump = booster.dump_model()
    objective = str(dump.get("objective", ""))
    if not objective.startswith("binary") or dump.get("average_output") or dump.get("num_class", 1) != 1:
        raise ValueError(f"only binary gradient-boosted LightGBM models convert, not {objective!r}")
    trees = _Trees()
    for tree in dump["tree_info"]:
        if tree.get("is_linear"):
            raise ValueError("linear LightGBM trees have no ONNX equivalent here")
        trees.add_tree(tree["tree_structure"])
    scale = float(objective.split("sigmoid:")[1].split()[0]) if "sigmoid:" in objective else 1.0
    tensors: dict[str, np.ndarray] = {"nodes_modes": np.array(trees.modes, dtype=np.uint8),
               "nodes_splits": np.array(trees.splits, dtype=np.float64),
               "leaf_weights": np.array(trees.leaves, dtype=np.float64)}
    if trees.members:
        tensors["membership_values"] = np.array(trees.members, dtype=np.float64)
    ensemble = helper.make_node(
        "TreeEnsemble", [source], ["fd_margin"], domain="ai.onnx.ml", n_targets=1, aggregate_function=1,
        post_transform=0, tree_roots=trees.roots, nodes_featureids=trees.features,
        nodes_truenodeids=trees.true_ids, nodes_trueleafs=trees.true_leafs, nodes_falsenodeids=trees.false_ids,
        nodes_falseleafs=trees.false_leafs, nodes_missing_value_tracks_true=trees.missing_true,
        leaf_targetids=[0] * len(trees.leaves),
        **{k: numpy_helper.from_array(v, k) for k, v in tensors.items()})
    inits = [numpy_helper.from_array(np.array([[scale]]), "fd_sigmoid_scale"),
             numpy_helper.from_array(np.ones((1, 1)), "fd_unit")]
    nodes = [ensemble, helper.make_node("Mul", ["fd_margin", "fd_sigmoid_scale"], ["fd_scaled_margin"]),
             helper.make_node("Sigmoid", ["fd_scaled_margin"], ["fd_positive"]),
             helper.make_node("Sub", ["fd_unit", "fd_positive"], ["fd_negative_class"]),
             helper.make_node("Concat", ["fd_negative_class", "fd_positive"], [PROBABILITIES], axis=1)]
    return _Graph(nodes, inits, PROBABILITIES, dict(LIGHTGBM_OPSET))


def _sklearn_graph(estimator: Any, n_features: int, source: str) -> _Graph:
    """A scikit-learn tree model through skl2onnx (float32 input, as sklearn's trees compare in float32)."""
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = convert_sklearn(estimator, initial_types=[("fd_features_float", FloatTensorType([None, n_features]))],
                            options={id(estimator): {"zipmap": False}}, target_opset=SKLEARN_OPSET)
    g = model.graph
    outputs = [o.name for o in g.output if len(o.type.tensor_type.shape.dim) == 2
               and o.type.tensor_type.elem_type == TensorProto.FLOAT]
    if len(outputs) != 1:
        raise ValueError(f"converted model has no single probability output: {[o.name for o in g.output]}")
    inner = f"fd_sklearn_{outputs[0]}"
    for node in g.node:  # free the output's name for the float64 cast below
        node.output[:] = [inner if o == outputs[0] else o for o in node.output]
        node.input[:] = [inner if i == outputs[0] else i for i in node.input]
    nodes = [helper.make_node("Cast", [source], ["fd_features_float"], to=TensorProto.FLOAT), *g.node,
             helper.make_node("Cast", [inner], [PROBABILITIES], to=TensorProto.DOUBLE)]
    return _Graph(nodes, list(g.initializer), PROBABILITIES,
                  {o.domain or "": o.version for o in model.opset_import})


def _tree_graph(estimator: Any, n_features: int, source: str) -> _Graph:
    if type(estimator).__name__ == "LGBMClassifier":
        return _lightgbm_graph(estimator.booster_, source)
    return _sklearn_graph(estimator, n_features, source)


def _join(pre: _Graph, trees: _Graph, layout: FeatureLayout) -> Any:
    """One model: the preprocessing nodes feeding the trees; output ``probabilities`` (float64 [N, 2])."""
    from onnx import TensorProto, helper

    inputs = []
    if layout.numeric:
        inputs.append(helper.make_tensor_value_info("numeric", TensorProto.DOUBLE, [None, len(layout.numeric)]))
    if layout.categorical:
        inputs.append(helper.make_tensor_value_info("categorical", TensorProto.STRING,
                                                    [None, len(layout.categorical)]))
    graph = helper.make_graph([*pre.nodes, *trees.nodes], "flightdeck_pipeline", inputs,
                              [helper.make_tensor_value_info(PROBABILITIES, TensorProto.DOUBLE, [None, 2])],
                              [*pre.initializers, *trees.initializers])
    opsets = {**SKLEARN_OPSET}
    for domain, version in trees.opsets.items():
        opsets[domain] = max(opsets.get(domain, 0), version)
    ids = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    model = helper.make_model(graph, opset_imports=ids, producer_name="flightdeck")
    model.ir_version = helper.find_min_ir_version_for(ids)
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
    # no busy-waiting threads: on shared 2-core machines spinning costs more than it saves
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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

    return {name: version(name) for name in ("onnx", "onnxruntime", "skl2onnx")}


def model_opsets(model: bytes) -> dict[str, int]:
    import onnx

    return {o.domain or "ai.onnx": int(o.version) for o in onnx.load_from_string(model).opset_import}
