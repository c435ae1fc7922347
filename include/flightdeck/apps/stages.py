"""``flightdeck run <spec> --stage data|training|gate|scoring``: a DAG's work outside the scheduler.

Each stage calls the same runner functions, in the same order, as the tasks of the DAG
``<spec>_<stage>``; a step with nothing to do ends the stage there with its reason, as the
DAG's task would skip (and with it the tasks after it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flightdeck.core.context import StageContext
from flightdeck.core.errors import NothingToDo
from flightdeck.core.settings import Settings
from flightdeck.core.spec import spec_named

STAGES = ("data", "training", "gate", "scoring")


@dataclass(frozen=True)
class Step:
    """One task's outcome: its manifest, or why it had nothing to do."""

    task: str
    manifest: Any = None
    skipped: str | None = None


def _data(ctx: StageContext) -> Iterator[Step]:
    from flightdeck.data import runners

    ingested = runners.ingest_deliveries(ctx)
    reason = runners.nothing_ingested(ctx, ingested)
    yield Step("ingest", ingested, reason)
    if reason:
        return
    for task, stage in (("profile", runners.profile_batches), ("validate", runners.validate_batches),
                        ("wrangle", runners.curate_batches), ("split", runners.split_dataset)):
        yield Step(task, stage(ctx))


def _training(ctx: StageContext) -> Iterator[Step]:
    from flightdeck.training import pipeline as training

    trained = training.train_model(ctx, trigger="manual (flightdeck run)")
    yield Step("train", trained)
    yield Step("register", training.register_model(ctx, trained))


def _gate(ctx: StageContext) -> Iterator[Step]:
    from flightdeck.gates import promotion as gates

    verdict = gates.judge_version(ctx, None, run_type="manual", min_ml_test_score=ctx.settings.min_ml_test_score)
    yield Step("judge", verdict)
    outcome = gates.decide(ctx, verdict)
    yield Step("decide", outcome, None if outcome["promoted"] else
               f"version {verdict['version']} rejected: " + " | ".join(verdict["reasons"]))


def _scoring(ctx: StageContext) -> Iterator[Step]:
    from flightdeck.serving import scoring

    model = scoring.load_model(ctx)
    yield Step("champion", {"spec": ctx.name, **model.describe(), "features": len(model.layout.columns)})
    parts = scoring.partitions_to_score(ctx, model.version)
    yield Step("wait_for_partitions", parts, None if parts else
               f"no curated partition of {ctx.name} waits for version {model.version}")
    if not parts:
        return
    manifests = []
    for part in parts:
        manifest = scoring.score_partition(ctx, part, model.version, model=model)
        manifests.append(manifest)
        yield Step(f"score[{part}]", manifest)
    yield Step("report", {"spec": ctx.name, "partitions": parts, "rows": sum(m["rows"] for m in manifests),
                          "model_versions": sorted({m["model_version"] for m in manifests})})


RUNS: dict[str, Callable[[StageContext], Iterator[Step]]] = {
    "data": _data, "training": _training, "gate": _gate, "scoring": _scoring}


def run_stage(settings: Settings, spec_name: str, stage: str, run_id: str) -> Iterator[Step]:
    """Run the tasks of the DAG ``<spec>_<stage>`` in order, yielding each step as it ends.

    Raises:
        ValueError: an unknown stage. Rejected errors of the runners propagate unchanged.
    """
    if stage not in RUNS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    spec = spec_named(settings.specs_dir, spec_name)
    ctx = StageContext(spec, settings, run_id=run_id, dag_id=f"{spec.name}_{stage}")
    steps = RUNS[stage](ctx)
    while True:
        try:
            step = next(steps)
        except StopIteration:
            return
        except NothingToDo as exc:
            yield Step("(stage)", None, str(exc))
            return
        yield step
        if step.skipped:
            return
