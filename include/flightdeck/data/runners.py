"""Runners: load inputs by URI, call the stages, write outputs atomically, return manifests.

A runner is what an Airflow operator calls (and what the CLI and the tests call without
Airflow). Its manifest is small and JSON-able: counts, URIs and ids, never data.

Batches move through the catalog: ``received`` -> ``staged`` (or ``rejected``) ->
``profiled`` -> ``validated`` (or ``invalid``) -> ``curated``. Each stage works on the
batches its run claimed, so re-running a DAG run replaces that run's outputs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from flightdeck.core import lake, warehouse
from flightdeck.core.context import StageContext
from flightdeck.core.errors import NothingToDo
from flightdeck.core.manifests import (
    CurateManifest,
    DatasetManifest,
    IngestManifest,
    ProfileManifest,
    ValidateManifest,
)
from flightdeck.core.storage import Store
from flightdeck.data import ingest, profile, split, validate, wrangle

log = logging.getLogger(__name__)
LIVE = ("staged", "profiled", "validated", "invalid", "curated")
WAITING = ("received", "staged", "profiled", "validated")


class NoCuratedData(NothingToDo, ValueError):
    """No curated partition exists yet: there is nothing to split."""


def nothing_ingested(ctx: StageContext, manifest: IngestManifest) -> str | None:
    """Why the rest of a data run has nothing to do after ingest, or ``None`` when it has work.

    Nothing was ingested (no new file, or only duplicates) and no batch of an earlier run is
    waiting at a later stage.
    """
    if manifest["batches"]:
        return None
    waiting = warehouse.list_batches(ctx.engine, ctx.name, statuses=WAITING)
    if waiting:
        return None
    what = (f"only duplicates of ingested files ({', '.join(manifest['duplicates'][:5])})"
            if manifest["duplicates"] else f"no new deliveries in {ctx.landing.uri(ctx.name)}")
    return f"nothing to ingest for {ctx.name}: {what}, and no batch of an earlier run is waiting"




# ---------------------------------------------------------------- ingest
def waiting_files(landing: Store, spec_name: str, patterns: list[str]) -> list[str]:
    """Keys of files waiting in ``<landing>/<spec>/`` that match one of ``patterns``.

    Archived (``_archive/``), hidden and temporary files are not waiting.
    """
    out = []
    for obj in landing.list(f"{spec_name}/"):
        rel = obj.key[len(spec_name) + 1:]
        if "/" in rel or rel.startswith("."):
            continue
        if any(fnmatch.fnmatchcase(rel, p) for p in patterns):
            out.append(obj.key)
    return out


def list_landed(ctx: StageContext) -> list[tuple[str, str]]:
    """(landing key, source name) of files waiting in ``<landing>/<spec>/``."""
    out = []
    for key in waiting_files(ctx.landing, ctx.name, ["*"]):
        source = ingest.match_source(ctx.spec, key.rsplit("/", 1)[-1])
        if source is None:
            log.warning("landing file %s matches no source pattern of spec %s; left in place", key, ctx.name)
            continue
        out.append((key, source))
    return out


def claim_landed_files(ctx: StageContext) -> dict[str, list[str]]:
    """Copy new landing files to the immutable raw area, catalog them for this run, archive them.

    A file whose sha256 is already in the catalog is a duplicate delivery: it is recorded
    in ``fd_deliveries`` and archived, never ingested twice.
    """
    claimed: list[str] = []
    duplicates: list[str] = []
    for key, source_name in list_landed(ctx):
        file_name = key.rsplit("/", 1)[-1]
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            local = ctx.landing.download(key, Path(tmp) / file_name)
            sha = ingest.sha256_file(local)
            size = local.stat().st_size
            received = warehouse.now()
            existing = warehouse.get_batch(ctx.engine, ctx.name, sha)
            outcome = "duplicate" if existing is not None else "new"
            if existing is None:
                rkey = lake.raw(ctx.name, source_name, sha, file_name)
                raw_uri = ctx.lake.uri(rkey) if ctx.lake.exists(rkey) else ctx.lake.put_file(local, rkey)
                try:
                    batch_date = ingest.batch_date_of(ctx.spec.sources[source_name], file_name,
                                                      received_at=received, tz=ctx.spec.timezone)
                except ingest.DeliveryError:
                    batch_date = None  # reported when the batch is parsed
                warehouse.upsert_batch(ctx.engine, {
                    "spec_name": ctx.name, "batch_id": sha, "source": source_name, "file_name": file_name,
                    "source_uri": ctx.landing.uri(key), "raw_uri": raw_uri, "bytes": size,
                    "batch_date": batch_date.isoformat() if batch_date else None,
                    "spec_version": ctx.spec.fingerprint(), "received_at": received,
                    "dag_id": ctx.dag_id, "run_id": ctx.run_id, "status": "received"})
                claimed.append(sha)
            else:
                duplicates.append(file_name)
                log.info("%s is a duplicate of batch %s (%s); not ingested again",
                         file_name, sha[:12], existing["file_name"])
            warehouse.record_delivery(ctx.engine, {
                "spec_name": ctx.name, "file_name": file_name, "source_uri": ctx.landing.uri(key),
                "sha256": sha, "bytes": size, "received_at": received, "run_id": ctx.run_id,
                "outcome": outcome})
        ctx.landing.move(key, f"{ctx.name}/_archive/{sha[:12]}-{file_name}")
    return {"claimed": claimed, "duplicates": duplicates}


def ingest_batch(ctx: StageContext, batch: dict[str, Any]) -> dict[str, Any]:
    """Parse one cataloged batch from the raw area into staged Parquet and quarantine rows."""
    source = ctx.spec.sources[batch["source"]]
    pii_key = ctx.pii_key or ctx.settings.resolve_pseudonymisation_key()
    batch_id, file_name = batch["batch_id"], batch["file_name"]
    raw = ctx.lake
    raw_rel = lake.raw(ctx.name, batch["source"], batch_id, file_name)
    quarantined: list[dict[str, Any]] = []
    counts = {"rows_in": 0, "rows_accepted": 0}
    at = warehouse.now()
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
        local = raw.download(raw_rel, Path(tmp) / file_name)
        rules = ingest.batch_rules(source, batch)

        def accepted_chunks() -> Iterator[pd.DataFrame]:
            offset = 1
            for chunk in ingest.read_delivery(local, source, file_name, ctx.settings.chunk_rows):
                parsed = ingest.parse_rows(chunk, ctx.spec, source, rules, offset, pii_key)
                counts["rows_in"] += len(chunk)
                counts["rows_accepted"] += len(parsed.accepted)
                quarantined.extend(ingest.quarantine_records(parsed, ctx.name, batch_id, ctx.run_id, at))
                offset += len(chunk)
                yield parsed.accepted

        staged_path = Path(tmp) / "staged.parquet"
        ingest.write_chunks_parquet(accepted_chunks(), ingest.arrow_schema(source), staged_path)
        staged_uri = ctx.lake.put_file(staged_path, lake.staged(ctx.name, batch["source"], batch_id))
    warehouse.replace_quarantine(ctx.engine, ctx.name, batch_id, quarantined)
    n_quarantined = len({q["row_number"] for q in quarantined})
    if counts["rows_in"] != counts["rows_accepted"] + n_quarantined:
        raise AssertionError(f"{file_name}: counts do not reconcile: {counts} vs {n_quarantined} quarantined")
    return {**counts, "rows_quarantined": n_quarantined, "staged_uri": staged_uri}


def ingest_deliveries(ctx: StageContext) -> IngestManifest:
    """Claim new landing files and ingest every batch of this run.

    Raises:
        QualityGateError: after all batches are recorded, if any batch was rejected
            (unreadable delivery or quarantine share above the spec's limit).
    """
    claim = claim_landed_files(ctx)
    # batches an earlier run claimed but never got to parse (it died) are taken over by this run
    for orphan in warehouse.list_batches(ctx.engine, ctx.name, statuses=("received",)):
        if orphan["run_id"] != ctx.run_id:
            warehouse.update_batch(ctx.engine, ctx.name, orphan["batch_id"], run_id=ctx.run_id)
    batches = warehouse.list_batches(ctx.engine, ctx.name, run_id=ctx.run_id)
    rejected, totals = [], {"rows_in": 0, "rows_accepted": 0, "rows_quarantined": 0}
    limit = ctx.spec.quality.max_quarantine_share
    for batch in batches:
        fields: dict[str, Any]
        try:
            result = ingest_batch(ctx, batch)
            share = result["rows_quarantined"] / result["rows_in"] if result["rows_in"] else 0.0
            fields = {**result, "status": "staged", "error": None, "ingested_at": warehouse.now(),
                      "schema_json": json.dumps(list(ctx.spec.sources[batch["source"]].columns))}
            if share > limit:
                reasons = warehouse.quarantine_counts(ctx.engine, ctx.name, batch["batch_id"])
                fields.update(status="rejected", error=(
                    f"{batch['file_name']}: {result['rows_quarantined']} of {result['rows_in']} rows "
                    f"quarantined ({share:.1%}), above the spec's max_quarantine_share {limit:.1%}; "
                    f"reasons {reasons}"))
            for k in totals:
                totals[k] += result[k]
        except ingest.DeliveryError as exc:
            warehouse.replace_quarantine(ctx.engine, ctx.name, batch["batch_id"], [])
            fields = {"status": "rejected", "error": str(exc), "ingested_at": warehouse.now(),
                      "rows_in": None, "rows_accepted": None, "rows_quarantined": None}
        warehouse.update_batch(ctx.engine, ctx.name, batch["batch_id"], **fields)
        if fields["status"] == "rejected":
            rejected.append(fields["error"])
    manifest = IngestManifest(spec=ctx.name, run_id=ctx.run_id, claimed=len(claim["claimed"]),
                              duplicates=claim["duplicates"], batches=len(batches), rejected=len(rejected),
                              rows_in=totals["rows_in"], rows_accepted=totals["rows_accepted"],
                              rows_quarantined=totals["rows_quarantined"])
    if rejected:
        raise ingest.QualityGateError(
            f"{len(rejected)} of {len(batches)} batches rejected (raw files kept, details in fd_catalog):\n"
            + "\n".join(f"  - {r}" for r in rejected[:20]))
    return manifest


# ---------------------------------------------------------------- profile
def _batches_for(ctx: StageContext, waiting: str) -> list[dict[str, Any]]:
    """This run's live batches, plus batches of any run still waiting at this stage.

    A run that failed part-way (say, ingest rejected one file) leaves its good batches
    waiting; the next run picks them up, so nothing is stranded.
    """
    mine = warehouse.list_batches(ctx.engine, ctx.name, run_id=ctx.run_id, statuses=LIVE)
    ids = {b["batch_id"] for b in mine}
    return mine + [b for b in warehouse.list_batches(ctx.engine, ctx.name, statuses=(waiting,))
                   if b["batch_id"] not in ids]


def profile_batches(ctx: StageContext) -> ProfileManifest:
    """Profile every staged batch of this run (and any left waiting): JSON and HTML reports in the lake."""
    done = []
    for batch in _batches_for(ctx, "staged"):
        staged = lake.staged(ctx.name, batch["source"], batch["batch_id"])
        # the profile leaves out the lineage columns (_batch_id, _row_number): never decode them
        prof = profile.profile_chunks(lake.iter_parquet(ctx.lake, staged, ctx.workdir, ctx.settings.chunk_rows,
                                                        drop=("_batch_id", "_row_number")))
        prof.update(batch_id=batch["batch_id"], file_name=batch["file_name"], source=batch["source"])
        name = f"{batch['source']}-{batch['batch_id'][:16]}"
        uri = lake.put_json(ctx.lake, lake.report(ctx.name, "profiles", name, "json"), prof)
        ctx.lake.put_bytes(profile.render_profile_html(prof, f"Profile of {batch['file_name']}").encode(),
                           lake.report(ctx.name, "profiles", name, "html"))
        fields: dict[str, Any] = {"profile_uri": uri}
        if batch["status"] == "staged":
            fields["status"] = "profiled"
        warehouse.update_batch(ctx.engine, ctx.name, batch["batch_id"], **fields)
        done.append(batch["batch_id"][:12])
    return ProfileManifest(spec=ctx.name, run_id=ctx.run_id, profiled=len(done))


# ---------------------------------------------------------------- validate
def validate_batches(ctx: StageContext) -> ValidateManifest:
    """Validate every live batch of this run with the spec's GX expectations.

    Raises:
        QualityGateError: naming each batch that broke a hard expectation, with a summary.
    """
    suites = {name: validate.load_expectations(ctx.spec, name) for name in ctx.spec.sources}
    failures, warnings, passed = [], 0, 0
    for batch in _batches_for(ctx, "profiled"):
        staged = lake.staged(ctx.name, batch["source"], batch["batch_id"])

        def chunks(staged: str = staged) -> Iterator[pd.DataFrame]:  # re-readable: GX imports while it streams
            return lake.iter_parquet(ctx.lake, staged, ctx.workdir, ctx.settings.chunk_rows,
                                     drop=("_batch_id", "_row_number"))

        report = validate.validate_chunks(chunks, suites[batch["source"]])
        report.update(batch_id=batch["batch_id"], file_name=batch["file_name"])
        name = f"{batch['source']}-{batch['batch_id'][:16]}"
        uri = lake.put_json(ctx.lake, lake.report(ctx.name, "validations", name, "json"), report)
        ctx.lake.put_bytes(validate.render_validation_html(report, f"Validation of {batch['file_name']}").encode(),
                           lake.report(ctx.name, "validations", name, "html"))
        status = "validated" if report["success"] else "invalid"
        error = None if report["success"] else (
            f"{batch['file_name']}: {len(report['hard_failures'])} hard expectations failed:\n"
            + validate.summarise_failures(report))
        warehouse.update_batch(ctx.engine, ctx.name, batch["batch_id"], status=status, error=error,
                               validation_uri=uri, validation_success=report["success"])
        warnings += len(report["warnings"])
        if error:
            failures.append(error)
        else:
            passed += 1
    if failures:
        raise ingest.QualityGateError(f"{len(failures)} batches failed validation:\n" + "\n".join(failures))
    return ValidateManifest(spec=ctx.name, run_id=ctx.run_id, validated=passed, warnings=warnings)


# ---------------------------------------------------------------- wrangle
def _load_batches(ctx: StageContext, batches: list[dict[str, Any]]) -> pd.DataFrame | None:
    frames = [lake.read_parquet(ctx.lake, lake.staged(ctx.name, b["source"], b["batch_id"]), ctx.workdir)
              for b in batches]
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    # a later re-delivery of the same entity replaces the earlier one
    return frame.drop_duplicates(list(ctx.spec.entity_key), keep="last")


def curate_batches(ctx: StageContext) -> CurateManifest:
    """Rebuild the curated partitions touched by newly validated batches (of any run).

    A partition (one batch date) joins all validated features of that date with the
    outcomes delivered so far and adds the derived columns; it is replaced atomically.
    """
    pending = warehouse.list_batches(ctx.engine, ctx.name, statuses=("validated",))
    dates = sorted({b["batch_date"] or "undated" for b in pending})
    features_name, labels_name = ctx.spec.features_source_name, ctx.spec.labels_source_name
    rows = labelled = 0
    for day in dates:
        usable = [b for b in warehouse.list_batches(ctx.engine, ctx.name, statuses=("validated", "curated"))
                  if (b["batch_date"] or "undated") == day]
        features = _load_batches(ctx, [b for b in usable if b["source"] == features_name])
        if features is None:
            continue  # outcomes before their schedule: curated when the schedule arrives
        labels = _load_batches(ctx, [b for b in usable if b["source"] == labels_name]) if labels_name else None
        if labels_name is None:
            labels = features
        curated = wrangle.wrangle_frame(features.drop(columns=["_row_number"]), labels, ctx.spec)
        lake.write_parquet(ctx.lake, lake.curated(ctx.name, day), curated, ctx.workdir)
        rows += len(curated)
        labelled += int(curated[ctx.spec.target.name].notna().sum())
        for b in usable:
            warehouse.update_batch(ctx.engine, ctx.name, b["batch_id"], status="curated", curated_at=warehouse.now())
    return CurateManifest(spec=ctx.name, run_id=ctx.run_id, partitions=len(dates), rows=rows, labelled=labelled)


# ---------------------------------------------------------------- split
def split_dataset(ctx: StageContext) -> DatasetManifest:
    """Time-split all labelled curated rows, check leakage, fit wrangling on train, publish.

    The dataset version id is a hash of the curated partitions, so re-running on the same
    data republishes the same version instead of adding one.

    Raises:
        LeakageError: listing every leak found.
    """
    spec = ctx.spec
    keys = lake.curated_keys(ctx.lake, spec.name)
    if not keys:
        raise NoCuratedData(f"no curated data for spec {spec.name!r} yet: ingest and validate deliveries first")
    frame = pd.concat([lake.read_parquet(ctx.lake, k, ctx.workdir) for k in keys], ignore_index=True)
    labelled = frame[frame[spec.target.name].notna()].sort_values([spec.event_time, *spec.entity_key])
    splits = split.time_split(labelled, spec.event_time, (spec.split.train, spec.split.validation, spec.split.test))
    problems = split.check_leakage(splits, spec)
    if problems:
        raise split.LeakageError(f"spec {spec.name}: " + "; ".join(problems))
    params = wrangle.fit_wrangle(splits["train"], spec)
    digest = hashlib.sha256()
    for name in split.SPLITS:
        digest.update(pd.util.hash_pandas_object(splits[name], index=False).to_numpy().tobytes())
    digest.update(spec.fingerprint().encode())
    version_id = digest.hexdigest()[:16]
    prefix = lake.dataset(spec.name, version_id)
    out: dict[str, Any] = {"spec": spec.name, "version_id": version_id, "run_id": ctx.run_id,
                           "spec_version": spec.fingerprint(), "wrangle_params": params, "splits": {}}
    for name in split.SPLITS:
        part = wrangle.apply_wrangle(splits[name], spec, params)
        uri = lake.write_parquet(ctx.lake, lake.dataset_split(spec.name, version_id, name), part, ctx.workdir)
        ts = part[spec.event_time]
        out["splits"][name] = {"uri": uri, "rows": len(part), "start": ts.min(), "end": ts.max(),
                               "positive_rate": float(part[spec.target.name].astype("float64").mean()),
                               "sha256": hashlib.sha256(pd.util.hash_pandas_object(
                                   part, index=False).to_numpy().tobytes()).hexdigest()}
    out["frozen_holdout"] = "test"
    train_profile = profile.profile_frame(splits["train"], label=spec.target.name)
    out["profile_uri"] = lake.put_json(ctx.lake, f"{prefix}/profile_train.json", train_profile)
    ctx.lake.put_bytes(profile.render_profile_html(train_profile, f"{spec.name}: training split").encode(),
                       f"{prefix}/profile_train.html")
    lake.put_json(ctx.lake, f"{prefix}/wrangle_params.json", params)
    manifest_uri = lake.put_json(ctx.lake, lake.dataset_manifest(spec.name, version_id), out)
    lake.put_json(ctx.lake, lake.current_dataset(spec.name), {"version_id": version_id, "manifest_uri": manifest_uri})
    warehouse.record_dataset_version(ctx.engine, {
        "spec_name": spec.name, "version_id": version_id, "run_id": ctx.run_id, "created_at": warehouse.now(),
        "manifest_uri": manifest_uri, **{f"{n}_rows": out["splits"][n]["rows"] for n in split.SPLITS},
        **{f"{n}_end": out["splits"][n]["end"] for n in split.SPLITS}})
    rows = {n: int(out["splits"][n]["rows"]) for n in split.SPLITS}
    return DatasetManifest(spec=spec.name, version_id=version_id, manifest_uri=manifest_uri, train_rows=rows["train"],
                           validation_rows=rows["validation"], test_rows=rows["test"])


