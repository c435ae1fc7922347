"""Scoring runners (Precompute serving): what the scoring DAG's operators, the CLI and the demo call.

* :func:`resolve_champion` resolves ``models:/<name>@champion`` once per run, loads it (so a
  broken champion fails the run before anything is written) and returns the exact version;
* :func:`partitions_to_score` lists the curated partitions to (re)score: the *open* ones
  (schedules curated, outcomes not yet) not yet published by this version from this input,
  or the partitions a backfill names;
* :func:`score_partition` validates one partition with the spec's GX suite, streams it in
  Arrow record batches through the training-time feature code and the packaged model into
  a local spool, then publishes it atomically (:func:`flightdeck.serving.predictions.publish_partition`).

The curated partition ``curated/<spec>/batch_date=D/data.parquet`` holds every scheduled
row of day D (labelled or not), so the run for day D scores D's and D+horizon's schedules
as soon as the data DAG has curated them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flightdeck.core import lake, warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.manifests import ScoreManifest
from flightdeck.core.settings import Settings
from flightdeck.core.spec import parse_duration, spec_named
from flightdeck.core.values import safe_name, utc
from flightdeck.data import validate
from flightdeck.serving import predictions
from flightdeck.serving.champion import (
    ChampionLoadError,
    NoChampionError,
    ScoringInputError,
    ServingModel,
    load_serving_model,
)
from flightdeck.serving.predictions import check_partition

log = logging.getLogger(__name__)

__all__ = ["ChampionLoadError", "NoChampionError", "ScoringInputError", "resolve_champion", "open_partitions",
           "partitions_to_score", "score_partition", "score_open_partitions", "lookup_predictions"]


def load_model(ctx: StageContext, version: str | None = None) -> ServingModel:
    """The champion (or a given promoted version) with its training-time state."""
    return load_serving_model(ctx.spec, ctx.settings, version=version, pii_key=ctx.pii_key, workdir=ctx.workdir)


def resolve_champion(ctx: StageContext) -> dict[str, Any]:
    """Resolve and load the champion once per scoring run; every partition of the run uses this version.

    Raises:
        NoChampionError: nothing promoted yet (the run has nothing to do).
        ChampionLoadError: the champion cannot be loaded (the version is named).
    """
    model = load_model(ctx)
    return {"spec": ctx.name, **model.describe()}


def current_champion_version(ctx: StageContext) -> str | None:
    """The version ``@champion`` points to now (``None`` if none), without loading it."""
    from flightdeck.serving.champion import resolve_model

    try:
        return resolve_model(ctx.spec, ctx.settings).version
    except NoChampionError:
        return None


def champion_moved(waiting_with: str, champion: str | None) -> bool:
    """Whether the champion moved away from the version a waiting scoring run resolved.

    Then that run stands down: the run the move triggered scores with the new champion. No
    champion at all (a rollback removed it) is no move to score with.
    """
    return champion is not None and champion != str(waiting_with)


# ---------------------------------------------------------------- which partitions
def curated_partitions(ctx: StageContext) -> dict[str, str]:
    """Batch date -> fingerprint (size and modification time) of every curated partition."""
    out = {}
    for obj in ctx.lake.list(lake.curated_prefix(ctx.name)):
        day = lake.curated_date(ctx.name, obj.key)
        if day is not None:
            out[day] = f"{obj.size}:{obj.modified.isoformat()}"
    return out


def open_partitions(ctx: StageContext) -> list[str]:
    """Curated partitions whose schedules arrived but whose outcomes have not: predictions still matter.

    A spec without a labels source learns each outcome with its row (``label_delay`` none), so
    every curated partition is open: :func:`partitions_to_score` then scores those the
    champion has not yet published from the same input (new deliveries, a new champion).
    """
    labels = ctx.spec.labels_source_name
    if labels is None:
        return sorted(curated_partitions(ctx))
    curated = warehouse.list_batches(ctx.engine, ctx.name, statuses=("curated",))
    scheduled = {b["batch_date"] for b in curated if b["source"] == ctx.spec.features_source_name and b["batch_date"]}
    labelled = {b["batch_date"] for b in curated if b["source"] == labels and b["batch_date"]}
    return sorted((scheduled - labelled) & set(curated_partitions(ctx)))


def partitions_to_score(ctx: StageContext, version: str, requested: Sequence[str] | None = None,
                        force: bool = False, until: date | None = None) -> list[str]:
    """Partitions this run scores.

    Named partitions (a backfill) are always scored. Otherwise the open partitions up to
    ``until`` (the run's date plus ``serving.horizon``) that are not yet published by
    ``version`` from the same input; ``force`` rescores them anyway.

    Raises:
        ScoringInputError: a named partition has no curated data.
    """
    available = curated_partitions(ctx)
    if requested:
        wanted = sorted({check_partition(p) for p in requested})
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ScoringInputError(f"no curated partition for {missing} of spec {ctx.name!r} "
                                    f"(curated: {len(available)} partitions); run the {ctx.name}_data DAG first")
        return wanted
    published = predictions.latest_published(ctx.engine, ctx.name)
    out = []
    for part in open_partitions(ctx):
        if until is not None and date.fromisoformat(part) > until:
            continue
        done = published.get(part)
        if (force or done is None or done["model_version"] != str(version)
                or done["input_fingerprint"] != available[part]):
            out.append(part)
    return out


def horizon_end(spec_horizon: str, day: date) -> date:
    """The last partition a run of ``day`` scores: the day plus the spec's serving horizon."""
    return day + timedelta(days=max(parse_duration(spec_horizon).days, 0))


# ---------------------------------------------------------------- score one partition
def suite_digest(expectations: list[dict[str, Any]]) -> str:
    """A short digest of a GX suite (its expectations, kwargs and severities)."""
    return hashlib.sha256(json.dumps(expectations, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evidence_key(spec_name: str, partition: str, fingerprint: str, suite: str) -> str:
    """Where the serving validation of one input (partition + fingerprint) under one suite is kept."""
    digest = hashlib.sha256(f"{fingerprint}|{suite}".encode()).hexdigest()[:16]
    return lake.report(spec_name, "serving_validations", f"{partition}-{digest}", "json")


def validate_partition(ctx: StageContext, pf: pq.ParquetFile, partition: str,
                       fingerprint: str | None = None) -> dict[str, Any]:
    """The spec's GX suite (declared + reviewed) of the features source, chunk by chunk, on the serving batch.

    The report is kept under the input's fingerprint and the suite's digest, so scoring the
    same input again (a new champion, a rerun) reuses it instead of validating twice.
    """
    source = ctx.spec.features_source_name
    names = pf.schema_arrow.names
    columns = [c for c in ctx.spec.features_source.columns if c in names]
    expectations = validate.load_expectations(ctx.spec, source)
    chunks = (b.to_pandas() for b in pf.iter_batches(batch_size=ctx.settings.chunk_rows, columns=columns))
    report = validate.validate_chunks(chunks, expectations)
    suite = suite_digest(expectations)
    report.update(partition=partition, run_id=ctx.run_id, input_fingerprint=fingerprint, suite=suite)
    key = (evidence_key(ctx.name, partition, fingerprint, suite) if fingerprint is not None
           else lake.report(ctx.name, "serving_validations", f"{partition}-{safe_name(ctx.run_id)}", "json"))
    uri = ctx.lake.put_bytes(json.dumps(report, indent=2, default=str, sort_keys=True).encode(), key)
    return {"success": report["success"], "rows": report["rows"], "hard_failures": len(report["hard_failures"]),
            "warnings": len(report["warnings"]), "report_uri": uri, "reused": False,
            "summary": validate.summarise_failures(report)}


def serving_validation(ctx: StageContext, pf: pq.ParquetFile, partition: str, fingerprint: str) -> dict[str, Any]:
    """Validation evidence for this exact input: reused if it exists (and passed), else the GX suite now.

    Reused, in this order: (1) a passed serving validation of the same partition fingerprint
    under the same suite; (2) the data DAG's: every curated features-source batch of the
    date passed the suite's hard expectations and the curated file is unchanged since (see
    :func:`data_dag_evidence`). A changed partition has a new fingerprint: validated again.
    """
    expectations = validate.load_expectations(ctx.spec, ctx.spec.features_source_name)
    suite = suite_digest(expectations)
    key = evidence_key(ctx.name, partition, fingerprint, suite)
    if ctx.lake.exists(key):
        kept = json.loads(ctx.lake.read_bytes(key))
        if kept.get("success") and kept.get("input_fingerprint") == fingerprint and kept.get("suite") == suite:
            return {"success": True, "rows": kept.get("rows"), "hard_failures": 0,
                    "warnings": len(kept.get("warnings", [])), "report_uri": ctx.lake.uri(key), "reused": True,
                    "reused_from": kept.get("reused_from", "serving"), "summary": ""}
    evidence = data_dag_evidence(ctx, partition, fingerprint, expectations)
    if evidence is not None:
        evidence.update(input_fingerprint=fingerprint, suite=suite, success=True, reused_from="data_dag")
        uri = ctx.lake.put_bytes(json.dumps(evidence, indent=2, default=str, sort_keys=True).encode(), key)
        return {"success": True, "rows": evidence["rows"], "hard_failures": 0, "warnings": evidence["warnings_count"],
                "report_uri": uri, "reused": True, "reused_from": "data_dag", "summary": ""}
    return validate_partition(ctx, pf, partition, fingerprint)


def _hard_rules(expectations: list[dict[str, Any]]) -> set[str]:
    return {json.dumps([e["type"], {k: v for k, v in e["kwargs"].items() if k != "batch_id"}], sort_keys=True,
                       default=str)
            for e in expectations if e.get("severity", "critical") == "critical"}


def data_dag_evidence(ctx: StageContext, partition: str, fingerprint: str,
                      expectations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The data DAG's validation of the batches this curated partition was built from, if it covers it.

    The data DAG validates each staged delivery of the features source; the curated
    partition is those rows of the date, deduplicated by key, plus derived columns. The
    suite's hard expectations are row rules (not null, ranges, sets), the column set and
    key uniqueness, so they hold on the curated rows when every batch passed them. Reused
    only if every curated features-source batch of the date passed, with the current spec
    version, its report evaluated every hard expectation of today's suite, and the curated
    file was not rewritten after the last of them was curated. Warnings are the batches'.
    """
    source = ctx.spec.features_source_name
    batches = [b for b in warehouse.list_batches(ctx.engine, ctx.name, statuses=("curated",), source=source)
               if b["batch_date"] == partition]
    modified = fingerprint.split(":", 1)[1]
    if not batches or any(not b["validation_success"] or not b["validation_uri"] or not b["curated_at"]
                          or b["spec_version"] != ctx.spec.fingerprint() for b in batches):
        return None
    curated_at = max(utc(b["curated_at"]) for b in batches)
    if datetime.fromisoformat(modified) > curated_at:
        return None  # the partition changed after the data DAG curated it
    wanted, warnings = _hard_rules(expectations), 0
    for b in batches:
        key = lake.report(ctx.name, "validations", f"{source}-{b['batch_id'][:16]}", "json")  # as validate_batches
        if not str(b["validation_uri"]).endswith(key) or not ctx.lake.exists(key):  # a moved lake keeps its keys
            return None
        report = json.loads(ctx.lake.read_bytes(key))
        evaluated = _hard_rules([{**r["expectation_config"], "severity": "critical"}
                                 for r in report.get("gx_result", {}).get("results", [])])
        if not report.get("success") or not wanted <= evaluated:
            return None
        warnings += len(report.get("warnings", []))
    return {"reused": True, "partition": partition, "rows": sum(int(b["rows_accepted"] or 0) for b in batches),
            "warnings_count": warnings, "run_id": ctx.run_id,
            "batches": [{"batch_id": b["batch_id"], "file_name": b["file_name"], "validation_uri": b["validation_uri"],
                         "rows_accepted": b["rows_accepted"], "curated_at": str(b["curated_at"])} for b in batches]}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _spool_batches(path: Path, rows: int = 200_000) -> Iterator[pa.Table]:
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=rows):
        yield pa.Table.from_batches([batch])


def score_partition(ctx: StageContext, partition: str, version: str | None = None, *,
                    model: ServingModel | None = None, validate_batch: bool = True) -> ScoreManifest:
    """Validate, score (streaming) and atomically publish one curated partition.

    Args:
        partition: the batch date, YYYY-MM-DD.
        version: the model version the run resolved; ``None`` resolves ``@champion`` now.
        model: an already loaded model (loops in one process); its version wins.
        validate_batch: run the spec's GX suite on the batch first (a failing batch is not scored).

    Returns:
        A small manifest: rows, model version, unknown categories, validation summary.

    Raises:
        ScoringInputError: no such partition, a missing column (named), or failed validation.
        NoChampionError / ChampionLoadError: no usable model (the version is named); nothing published.
    """
    spec, engine = ctx.spec, ctx.engine
    check_partition(partition)
    key = lake.curated(spec.name, partition)
    started = warehouse.now()
    run: dict[str, Any] = {"run_id": ctx.run_id, predictions.PARTITION: partition, "started_at": started,
                           "input_uri": ctx.lake.uri(key), "model_name": spec.registered_model_name,
                           "model_version": str(version) if version is not None else None}

    def record(status: str, error: str | None = None, **fields: Any) -> None:
        run.update(fields)
        predictions.record_run(engine, spec, {**run, "status": status, "error": error,
                                              "finished_at": None if status == "running" else warehouse.now()})

    fingerprint = curated_partitions(ctx).get(partition)
    if fingerprint is None:
        message = f"no curated partition {partition} for spec {spec.name!r} ({ctx.lake.uri(key)})"
        record("failed", message)
        raise ScoringInputError(message)
    record("running", input_fingerprint=fingerprint)
    try:
        if model is None:
            model = load_model(ctx, version)
        elif version is not None and model.version != str(version):
            raise ChampionLoadError(f"the loaded model is version {model.version}, the run resolved {version}")
    except (NoChampionError, ChampionLoadError) as exc:
        record("failed", str(exc))
        raise
    details: dict[str, Any] = model.describe()
    details.pop("features", None)
    run.update(model_version=model.version, model_name=model.resolved.name)
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp, ctx.lake.local_copy(key, ctx.workdir) as local:
        pf = pq.ParquetFile(local)
        needed = model.required_columns()
        missing = [c for c in needed if c not in pf.schema_arrow.names]
        if missing:
            message = (f"partition {partition} of {spec.name!r} lacks column(s) {missing} needed to score with "
                       f"{model.model_uri}; not scored")
            record("invalid", message, details=details)
            raise ScoringInputError(message)
        total = pf.metadata.num_rows
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        if total and validate_batch:
            details["validation"] = validation = serving_validation(ctx, pf, partition, fingerprint)
            timings["validate_s"] = time.perf_counter() - clock
            if not validation["success"]:
                message = (f"partition {partition} of {spec.name!r} failed validation "
                           f"({validation['hard_failures']} hard expectations); not scored:\n{validation['summary']}")
                record("invalid", message, details=details)
                raise ScoringInputError(message)
        pt = predictions.ensure_tables(engine, spec)
        scored_at = warehouse.now()
        unknown: dict[str, int] = {}
        counted = {"rows": 0}
        final = {**run, "unknown_categories": unknown, "details": details, "error": None}

        def scored_batches() -> Iterator[pa.Table]:
            for batch in pf.iter_batches(batch_size=ctx.settings.chunk_rows, columns=needed):
                scored = model.score_curated(batch.to_pandas())
                for column, n in scored.unknown_categories.items():
                    unknown[column] = unknown.get(column, 0) + n
                frame = scored.frame
                counted["rows"] += len(frame)
                yield predictions.prediction_rows(
                    pt, frame, frame["score"].to_numpy(), frame["label"].to_numpy(), frame["feature_hash"].to_numpy(),
                    partition=partition, model_name=model.resolved.name, model_version=model.version,
                    run_id=ctx.run_id, scored_at=scored_at)
            if total == 0:
                log.warning("partition %s of %s is empty: publishing an empty partition", partition, spec.name)
            if unknown:
                log.warning("partition %s: categories the model never saw (scored in their unknown bucket): %s",
                            partition, unknown)
            final["finished_at"] = warehouse.now()
            # what monitoring compares run by run (Monitor 6): this process's peak memory and the scoring time
            details["resources"] = {"peak_rss_mb": peak_rss_mb(), "rows": counted["rows"],
                                    "score_s": round(time.perf_counter() - clock, 3)}

        clock = time.perf_counter()
        try:
            if engine.dialect.name == "postgresql":
                # COPY straight from the scoring loop inside the publishing transaction: the server
                # loads chunk n while we score chunk n+1; MVCC keeps readers on the old set until commit
                published = predictions.publish_partition(engine, spec, partition, scored_batches(), final)
                timings["score_and_publish_s"] = time.perf_counter() - clock
            else:
                # SQLite has one writer at a time: score into a local spool first, hold the lock only to publish
                spool = Path(tmp) / "scored.parquet"
                with pq.ParquetWriter(spool, pt.arrow_schema, compression="lz4") as writer:
                    for table in scored_batches():
                        writer.write_table(table)
                timings["score_s"] = time.perf_counter() - clock
                clock = time.perf_counter()
                published = predictions.publish_partition(engine, spec, partition, _spool_batches(spool), final)
                timings["publish_s"] = time.perf_counter() - clock
        except Exception as exc:  # the transaction rolled back: the previous predictions stay published
            record("failed", f"{type(exc).__name__}: {exc}", details=details)
            raise
        rows = counted["rows"]
    if published != rows:
        raise AssertionError(f"partition {partition}: scored {rows} rows but published {published}")
    return ScoreManifest(spec=spec.name, partition=partition, rows=published, empty=published == 0,
                         model_version=model.version, model_uri=model.model_uri, table=pt.name,
                         unknown_categories=unknown, timings={k: round(v, 3) for k, v in timings.items()},
                         validation={k: v for k, v in details.get("validation", {}).items() if k != "summary"})


# ---------------------------------------------------------------- outside Airflow
def score_open_partitions(settings: Settings, spec_name: str, run_id: str | None = None,
                          partitions: Sequence[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Resolve the champion and score what is open (or the named partitions) in this process.

    For the CLI and the demo after the gates promoted a champion; the DAG does the same
    with one task per partition. Returns counts and an example lookup.
    """
    spec = spec_named(settings.specs_dir, spec_name)
    ctx = StageContext(spec, settings, run_id=run_id or f"manual__{warehouse.now():%Y%m%dT%H%M%S}",
                       dag_id="flightdeck-cli")
    model = load_model(ctx)
    parts = partitions_to_score(ctx, model.version, partitions, force=force)
    manifests = [score_partition(ctx, p, model.version, model=model) for p in parts]
    example = None
    for m in manifests:
        if m["rows"]:
            first = predictions.lookup(ctx.engine, spec, partition=m["partition"], limit=1)[0]
            key = {k: first[k] for k in spec.entity_key}
            example = {"key": key, "prediction": predictions.lookup(ctx.engine, spec, key=key)[0]}
            break
    return {"spec": spec.name, "run_id": ctx.run_id, "model_version": model.version, "partitions": parts,
            "rows": sum(m["rows"] for m in manifests), "manifests": manifests, "example": example}


def lookup_predictions(settings: Settings, spec_name: str, key_pairs: Sequence[str] = (),
                       partition: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """What ``flightdeck lookup <spec> --key k=v ... | --partition YYYY-MM-DD`` prints."""
    spec = spec_named(settings.specs_dir, spec_name)
    engine = warehouse.connect(settings.warehouse_url)
    key = predictions.parse_key_args(spec, key_pairs)
    return predictions.lookup(engine, spec, key=key, partition=partition, limit=limit)


def format_predictions(rows: Sequence[dict[str, Any]], spec_name: str = "") -> str:
    """Rows of a lookup as an aligned text table (what the CLI prints)."""
    if not rows:
        return f"no predictions{f' for {spec_name}' if spec_name else ''} match"
    columns = [c for c in rows[0] if c not in ("model_name", "feature_hash")]
    cells = [[f"{r[c]:.4f}" if c == "score" else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def demo_lines(settings: Settings, spec_name: str) -> list[str]:
    """What the demo prints after scoring: published partitions, an example lookup and its SQL."""
    spec = spec_named(settings.specs_dir, spec_name)
    engine = warehouse.connect(settings.warehouse_url)
    published = predictions.latest_published(engine, spec.name)
    if not published:
        return [f"predictions: nothing published into {spec.predictions_table} yet"]
    out = []
    for part, run in sorted(published.items()):
        out.append(f"predictions {spec.predictions_table} {part}: {run['rows']} rows by version "
                   f"{run['model_version']} (run {run['run_id']})")
    last = max(published)
    sample = predictions.lookup(engine, spec, partition=last, limit=1)
    if sample:
        key = {k: sample[0][k] for k in spec.entity_key}
        found = predictions.lookup(engine, spec, key=key)[0]
        args = " ".join(f"--key {k}={v}" for k, v in key.items())
        out.append(f"lookup: flightdeck lookup {spec.name} {args}")
        out.append(f"  -> score {found['score']:.3f}, label {found['label']} (threshold "
                   f"{spec.serving.threshold or spec.training.threshold}), version {found['model_version']}")
        out.append(f"  SQL: {predictions.example_sql(spec)['by_key']}")
    return out
