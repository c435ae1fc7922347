"""The ONNX export of a judged version: exported, checked for parity on the test split, and logged
only when it reproduces the registered model.

The export is optional: its outcome never refuses the model (the promotion gate that reports
it is not hard). A passing export is logged to the version's training run as
``onnx/model.onnx`` + ``onnx/parity.json``; a failing one is refused (nothing logged under
``onnx/``). Either way the version carries ``flightdeck.onnx`` = ``passed``/``failed``/
``unsupported`` and ``flightdeck.onnx_max_abs_diff``; consumers read the tag, not the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flightdeck.gates.candidate import Candidate, registry_client
from flightdeck.training import features, packaging

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "unsupported", "not_run"]
ARTIFACT_DIR = "onnx"
SPLIT = "test"


@dataclass
class OnnxOutcome:
    """What happened to the export: its status, the figure, and the evidence recorded."""

    status: Status
    detail: str
    max_abs_diff: float | None = None
    limit: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)


def packaged_pipeline(cand: Candidate) -> Any:
    """The fitted pipeline inside the registered pyfunc (``None`` when it is not ours)."""
    python_model = cand.require_model().unwrap_python_model()
    return getattr(python_model, "pipeline", None)


def check_export(cand: Candidate, model: bytes | packaging.Unsupported, limit: float) -> OnnxOutcome:
    """Parity of an export on the rows the gates evaluate, against the registered pyfunc's scores."""
    if isinstance(model, packaging.Unsupported):
        return OnnxOutcome("unsupported", f"{model.family} does not convert to ONNX: {model.reason}",
                           evidence={"family": model.family, "reason": model.reason})
    X = features.select_features(cand.data.frames[SPLIT], cand.layout)
    parity = packaging.measure_parity(model, X, cand.layout, cand.proba[SPLIT], limit,
                                      cand.spec.training.threads)
    evidence = {"split": SPLIT, "rows": parity.rows, "max_abs_diff": parity.max_abs_diff, "limit": limit,
                "scope": "whole pipeline (preprocessing + model)", "inputs": packaging.onnx_inputs_doc(cand.layout),
                "opset": packaging.model_opsets(model), "versions": packaging.runtime_versions(),
                "sha256": hashlib.sha256(model).hexdigest(), "bytes": len(model)}
    figure = f"max |p_onnx - p_pyfunc| {parity.max_abs_diff:.3g} on {parity.rows} {SPLIT} rows (limit {limit:g})"
    if parity.passed:
        return OnnxOutcome("passed", f"exported: {figure}", parity.max_abs_diff, limit, evidence)
    return OnnxOutcome("failed", f"export refused (the model is not): {figure}", parity.max_abs_diff, limit,
                       evidence)


def export_version(cand: Candidate) -> OnnxOutcome:
    """Export the candidate to ONNX, check parity, log the passing export and tag the version."""
    if cand.model is None or SPLIT not in cand.proba:
        return OnnxOutcome("not_run", f"not exported: the model did not load or score ({cand.load_error})")
    limit = cand.gates.onnx_max_abs_diff
    pipeline = packaged_pipeline(cand)
    try:
        if pipeline is None:
            model: bytes | packaging.Unsupported = packaging.Unsupported(
                "unknown", "the registered pyfunc holds no fitted pipeline (not a FlightDeckClassifier)")
        else:
            model = packaging.export_onnx(pipeline, cand.layout, cand.data.frames[SPLIT].head(16))
        outcome = check_export(cand, model, limit)
    except Exception as exc:  # noqa: BLE001 - an export that breaks is a refused export, never a crash
        log.exception("ONNX export of %s version %s failed", cand.name, cand.version)
        outcome = OnnxOutcome("failed", f"export refused (the model is not): {type(exc).__name__}: {exc}",
                              limit=limit, evidence={"error": f"{type(exc).__name__}: {exc}"})
        model = b""
    if outcome.status == "passed" and isinstance(model, bytes):
        outcome.artifacts = log_export(cand, model, outcome.evidence)
    tag_version(cand, outcome)
    return outcome


def log_export(cand: Candidate, model: bytes, evidence: dict[str, Any]) -> list[str]:
    """Log ``onnx/model.onnx`` and ``onnx/parity.json`` to the version's training run."""
    with tempfile.TemporaryDirectory(dir=cand.ctx.workdir) as tmp:
        folder = Path(tmp) / ARTIFACT_DIR
        folder.mkdir()
        (folder / "model.onnx").write_bytes(model)
        (folder / "parity.json").write_text(json.dumps({**evidence, "model_name": cand.name,
                                                        "model_version": cand.version,
                                                        "gate_run_id": cand.ctx.run_id}, indent=2))
        registry_client(cand.ctx).log_artifacts(cand.training_run_id, str(folder), artifact_path=ARTIFACT_DIR)
    return [f"{ARTIFACT_DIR}/model.onnx", f"{ARTIFACT_DIR}/parity.json"]


def tag_version(cand: Candidate, outcome: OnnxOutcome) -> None:
    client = registry_client(cand.ctx)
    diff = outcome.max_abs_diff
    tags = {"flightdeck.onnx": outcome.status,
            "flightdeck.onnx_max_abs_diff": "" if diff is None else f"{diff:.6g}",
            "flightdeck.onnx_detail": outcome.detail[:4900]}
    for key, value in tags.items():
        client.set_model_version_tag(cand.name, cand.version, key, value)


def figures(outcome: OnnxOutcome) -> dict[str, Any]:
    """The evidence as the gate report keeps it (JSON-able, finite numbers or None)."""
    out = {"status": outcome.status, **outcome.evidence, "artifacts": outcome.artifacts}
    if isinstance(out.get("max_abs_diff"), float) and not np.isfinite(out["max_abs_diff"]):
        out["max_abs_diff"] = None
    return out
