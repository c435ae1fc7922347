"""ONNX packaging of a fitted model pipeline, and the parity measure that decides whether it may ship.

:func:`export_onnx` turns the WHOLE fitted Pipeline into one ONNX graph: the numeric steps
(``log1p`` of the spec'd columns, clipped at 0, then median imputation), the ordinal
encoding of the text categories (unknown and missing -> -1, as the OrdinalEncoder does) and
the trees, all from the fitted steps' learned values (medians, categories, splits, leaves).

The trees are written as ONNX's ``TreeEnsemble`` (ai.onnx.ml opset 5): float64 thresholds and
leaf values, and each LightGBM categorical split as one set-membership node. LightGBM comes
from ``booster.dump_model()`` (sigmoid of the summed margins); a random forest from its trees'
arrays (the mean of the trees' positive-class shares, inputs rounded to float32 first, as
scikit-learn compares them); a soft-voting ensemble of such members is the mean of their
graphs. Why not the stock converters: skl2onnx has no converter for our ``_log1p_columns``
FunctionTransformer, and onnxmltools' LightGBM converter (1.16) emits the older
TreeEnsembleClassifier, with float32 thresholds and sums (parity ~2.5e-7 here instead of
~2e-16) and every categorical set unrolled into a chain of equality nodes (13x the nodes per
categorical split on the flights model), which ran about half as fast.

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
    "dummy": "DummyClassifier: a constant prior, nothing to run faster; no graph is written for it",
    "logistic": "LogisticRegression behind a one-hot encoder that groups infrequent categories "
                "(min_frequency/max_categories, handle_unknown='infrequent_if_exist') into a sparse matrix "
                "and a StandardScaler: the graph written here covers the ordinal-encoded tree pipelines only",
}


def _unsupported_reason(family: str, families: list[str], refused: list[str]) -> str:
    if family != "ensemble":
        return UNSUPPORTED_REASONS.get(family, f"no ONNX graph is written for {family}")
    why = "; ".join(f"{f}: {UNSUPPORTED_REASONS.get(f, 'no ONNX graph is written for it')}"
                    for f in dict.fromkeys(refused))
    return f"a soft-voting ensemble of {' + '.join(families)} converts only when every member does ({why})"


def export_onnx(pipeline: Any, layout: FeatureLayout, sample: pd.DataFrame | None = None) -> bytes | Unsupported:
    """The fitted pipeline as one serialised ONNX model, or why its family does not convert.

    Args:
        pipeline: the fitted ``Pipeline([("features", ColumnTransformer), ("model", ...)])``.
        layout: the recorded feature layout (input order).
        sample: rows of the feature frame; when given, the graph is checked to run on them.
    """
    family = model_family(pipeline)
    members = list(pipeline.members) if family == "ensemble" else [pipeline]
    refused = [f for f in map(model_family, members) if f not in CONVERTIBLE]
    if refused:
        return Unsupported(family, _unsupported_reason(family, [model_family(m) for m in members], refused))
    import onnx

    graph = _ensemble_graph(members, layout) if family == "ensemble" else _member_graph(pipeline, layout)
    model = _join(graph, layout)
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
OPSET = {"": 21, "ai.onnx.ml": 5}  # TreeEnsemble: float64 splits and leaves, set membership
MODE_LEQ, MODE_MEMBER = 0, 6  # TreeEnsemble's nodes_modes
CONVERTIBLE = ("lightgbm", "random_forest")


@dataclass
class _Trees:
    """Trees in the arrays of ONNX's TreeEnsemble (ai.onnx.ml opset 5), one output: the positive class."""

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

    def node(self, feature: int, split: float, mode: int, missing_true: int) -> int:
        self.features.append(feature)
        self.splits.append(split)
        self.modes.append(mode)
        self.missing_true.append(missing_true)
        for side in (self.true_ids, self.true_leafs, self.false_ids, self.false_leafs):
            side.append(0)
        return len(self.features) - 1

    def link(self, i: int, true: tuple[int, int], false: tuple[int, int]) -> None:
        """Point node ``i``'s sides at (index, is_leaf) pairs."""
        self.true_ids[i], self.true_leafs[i] = true
        self.false_ids[i], self.false_leafs[i] = false

    def leaf(self, weight: float) -> tuple[int, int]:
        self.leaves.append(weight)
        return len(self.leaves) - 1, 1

    def add_root(self, root: tuple[int, int]) -> None:
        """A tree's root; a single-leaf tree becomes one split whose both sides are that leaf."""
        if root[1]:
            i = self.node(0, 0.0, MODE_LEQ, 0)
            self.link(i, root, root)
            root = (i, 0)
        self.roots.append(root[0])

    # LightGBM (from booster.dump_model()): left is taken when the decision holds
    def add_lightgbm(self, node: dict[str, Any]) -> tuple[int, int]:
        if "split_index" not in node:
            return self.leaf(float(node["leaf_value"]))
        if node["decision_type"] == "==":
            # category codes in the set go left; -1 (unknown/missing) is in no set and goes right
            self.members += [float(c) for c in str(node["threshold"]).split("||")] + [float("nan")]
            i = self.node(int(node["split_feature"]), 0.0, MODE_MEMBER, 0)
        elif node["decision_type"] == "<=":
            if node["missing_type"] == "Zero":
                raise ValueError("LightGBM zero-as-missing splits are not reproduced in ONNX")
            tracks = int(bool(node["default_left"]) and node["missing_type"] == "NaN")
            i = self.node(int(node["split_feature"]), float(node["threshold"]), MODE_LEQ, tracks)
        else:
            raise ValueError(f"LightGBM decision type {node['decision_type']!r} has no ONNX equivalent here")
        self.link(i, self.add_lightgbm(node["left_child"]), self.add_lightgbm(node["right_child"]))
        return i, 0

    # scikit-learn (tree_ arrays): x <= threshold goes left; a leaf gives its share of the positive class
    def add_sklearn(self, tree: Any, i: int, scale: float) -> tuple[int, int]:
        if tree.children_left[i] == -1:
            counts = tree.value[i, 0]
            return self.leaf(float(counts[1] / counts.sum()) * scale)
        missing_left = getattr(tree, "missing_go_to_left", None)
        j = self.node(int(tree.feature[i]), float(tree.threshold[i]), MODE_LEQ,
                      int(missing_left[i]) if missing_left is not None else 0)
        self.link(j, self.add_sklearn(tree, tree.children_left[i], scale),
                  self.add_sklearn(tree, tree.children_right[i], scale))
        return j, 0


def _lightgbm_trees(booster: Any) -> tuple[_Trees, float]:
    """A binary LightGBM booster's trees (margins) and its sigmoid scale."""
    dump = booster.dump_model()
    objective = str(dump.get("objective", ""))
    if not objective.startswith("binary") or dump.get("average_output") or dump.get("num_class", 1) != 1:
        raise ValueError(f"only binary gradient-boosted LightGBM models convert, not {objective!r}")
    trees = _Trees()
    for tree in dump["tree_info"]:
        if tree.get("is_linear"):
            raise ValueError("linear LightGBM trees have no ONNX equivalent here")
        trees.add_root(trees.add_lightgbm(tree["tree_structure"]))
    return trees, float(objective.split("sigmoid:")[1].split()[0]) if "sigmoid:" in objective else 1.0


def _forest_trees(forest: Any) -> _Trees:
    """A random forest's trees: the mean of the trees' positive-class shares, as a sum of leaf weights."""
    if list(forest.classes_) != [0, 1] or forest.n_outputs_ != 1:
        raise ValueError(f"only binary 0/1 random forests convert, not classes {list(forest.classes_)}")
    trees = _Trees()
    for estimator in forest.estimators_:
        trees.add_root(trees.add_sklearn(estimator.tree_, 0, 1.0 / len(forest.estimators_)))
    return trees


def _tree_graph(estimator: Any, source: str) -> _Graph:
    """TreeEnsemble + the link (sigmoid for LightGBM; none for a forest) -> ``probabilities`` [N, 2]."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    if type(estimator).__name__ == "LGBMClassifier":
        trees, scale = _lightgbm_trees(estimator.booster_)
    else:
        # scikit-learn's trees compare float32 inputs against float64 thresholds: round the same way
        trees, scale = _forest_trees(estimator), 0.0
        nodes += [helper.make_node("Cast", [source], ["fd_features_float"], to=TensorProto.FLOAT),
                  helper.make_node("Cast", ["fd_features_float"], ["fd_features_rounded"], to=TensorProto.DOUBLE)]
        source = "fd_features_rounded"
    tensors: dict[str, np.ndarray] = {"nodes_modes": np.array(trees.modes, dtype=np.uint8),
                                      "nodes_splits": np.array(trees.splits, dtype=np.float64),
                                      "leaf_weights": np.array(trees.leaves, dtype=np.float64)}
    if trees.members:
        tensors["membership_values"] = np.array(trees.members, dtype=np.float64)
    nodes.append(helper.make_node(
        "TreeEnsemble", [source], ["fd_score"], domain="ai.onnx.ml", n_targets=1, aggregate_function=1,
        post_transform=0, tree_roots=trees.roots, nodes_featureids=trees.features,
        nodes_truenodeids=trees.true_ids, nodes_trueleafs=trees.true_leafs, nodes_falsenodeids=trees.false_ids,
        nodes_falseleafs=trees.false_leafs, nodes_missing_value_tracks_true=trees.missing_true,
        leaf_targetids=[0] * len(trees.leaves), **{k: numpy_helper.from_array(v, k) for k, v in tensors.items()}))
    inits = [numpy_helper.from_array(np.ones((1, 1)), "fd_unit")]
    if scale:
        inits.append(numpy_helper.from_array(np.array([[scale]]), "fd_sigmoid_scale"))
        nodes += [helper.make_node("Mul", ["fd_score", "fd_sigmoid_scale"], ["fd_margin"]),
                  helper.make_node("Sigmoid", ["fd_margin"], ["fd_positive"])]
    else:
        nodes.append(helper.make_node("Identity", ["fd_score"], ["fd_positive"]))
    nodes += [helper.make_node("Sub", ["fd_unit", "fd_positive"], ["fd_negative_class"]),
              helper.make_node("Concat", ["fd_negative_class", "fd_positive"], [PROBABILITIES], axis=1)]
    return _Graph(nodes, inits, PROBABILITIES, dict(OPSET))


def _member_graph(pipeline: Any, layout: FeatureLayout, prefix: str = "") -> _Graph:
    """One fitted pipeline's nodes, every internal name prefixed (the graph inputs are shared)."""
    pre = _preprocessing_nodes(pipeline, layout)
    trees = _tree_graph(pipeline.named_steps["model"], pre.output)
    graph = _Graph([*pre.nodes, *trees.nodes], [*pre.initializers, *trees.initializers], trees.output, trees.opsets)
    if not prefix:
        return graph
    shared = {"numeric", "categorical"}

    def rename(name: str) -> str:
        return name if name in shared or not name else prefix + name

    for node in graph.nodes:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for init in graph.initializers:
        init.name = rename(init.name)
    graph.output = rename(graph.output)
    return graph


def _ensemble_graph(members: list[Any], layout: FeatureLayout) -> _Graph:
    """The members' graphs side by side and the mean of their probabilities (SoftVotingEnsemble)."""
    from onnx import helper, numpy_helper

    graphs = [_member_graph(m, layout, f"m{i}_") for i, m in enumerate(members)]
    # Sum then Div, as numpy's mean does it (onnxruntime has no float64 Mean)
    mean = [helper.make_node("Sum", [g.output for g in graphs], ["fd_member_sum"]),
            helper.make_node("Div", ["fd_member_sum", "fd_member_count"], [PROBABILITIES])]
    count = numpy_helper.from_array(np.array([[float(len(graphs))]]), "fd_member_count")
    return _Graph([n for g in graphs for n in g.nodes] + mean, [i for g in graphs for i in g.initializers] + [count],
                  PROBABILITIES, dict(OPSET))


def _join(body: _Graph, layout: FeatureLayout) -> Any:
    """One model: the graph inputs, the nodes, the output ``probabilities`` (float64 [N, 2])."""
    from onnx import TensorProto, helper

    inputs = []
    if layout.numeric:
        inputs.append(helper.make_tensor_value_info("numeric", TensorProto.DOUBLE, [None, len(layout.numeric)]))
    if layout.categorical:
        inputs.append(helper.make_tensor_value_info("categorical", TensorProto.STRING,
                                                    [None, len(layout.categorical)]))
    graph = helper.make_graph(body.nodes, "flightdeck_pipeline", inputs,
                              [helper.make_tensor_value_info(PROBABILITIES, TensorProto.DOUBLE, [None, 2])],
                              body.initializers)
    ids = [helper.make_opsetid(d, v) for d, v in body.opsets.items()]
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

    return {name: version(name) for name in ("onnx", "onnxruntime")}


def model_opsets(model: bytes) -> dict[str, int]:
    import onnx

    return {o.domain or "ai.onnx": int(o.version) for o in onnx.load_from_string(model).opset_import}
