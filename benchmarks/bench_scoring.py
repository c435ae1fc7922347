"""Benchmark: batch scoring of the champion into SQLite and PostgreSQL, against the floor and the naive path.

Set-up (once, kept in ``--home``): a month of real flights (March 2013) through the data
stages, a LightGBM champion trained by the training runners (``[dummy, lightgbm]``, no
tuning, to keep the set-up short; the model itself is a full 300-tree LightGBM), and one
unlabelled scoring partition per size: the month's curated rows replicated with ``year``
shifted so keys stay unique (weather and history joins still hit).

Then, per database and size, each in a fresh subprocess so peak RSS is its own:

* ``validate`` (once per size): the spec's GX suite on the partition, what the first scoring
  of an input pays (its report is kept under the input's fingerprint; later scorings of the
  same input, and inputs the data DAG validated, reuse it);
* ``floor``: ``Booster.predict`` on the model's encoded float64 feature matrix with the
  spec's ``training.threads``, plus a raw bulk load of the finished rows (PostgreSQL: one
  ``COPY`` of pre-serialised CSV; SQLite: ``executemany`` of pre-built tuples, one
  transaction), timed apart, chunk by chunk (memory stays flat); the packaged model's own
  ``predict`` on the same rows is timed too (its ratio to the booster);
* ``flightdeck``: ``scoring.score_partition``: serving validation (reused), record batches
  through the training feature code and the compiled model into a spool, atomic publication;
* ``naive``: ``pd.read_parquet``, the same feature code, ``pyfunc.predict``, ``DataFrame.to_sql``
  (up to 3M rows: at 10M it would need about 31 GiB).

Model loading (registry, references, history) is a fixed cost per task, reported apart.
Usage: ``python benchmarks/bench_scoring.py [--rows 1000000 3000000 10000000] [--db sqlite postgres]``.
Nothing here is asserted; figures are ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "include"), str(HERE)]

from bench_data_pipeline import peak_rss_mib  # noqa: E402

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def set_env(home: Path, warehouse_url: str | None = None) -> None:
    os.environ.update({"FLIGHTDECK_HOME": str(home), "FLIGHTDECK_SPECS_DIR": str(home / "specs"),
                       "FLIGHTDECK_PSEUDONYMISATION_KEY": "bench-key", "MLFLOW_DISABLE_TELEMETRY": "true",
                       "GX_ANALYTICS_ENABLED": "false"})
    if warehouse_url:
        os.environ["FLIGHTDECK_WAREHOUSE_URL"] = warehouse_url


def partition_of(rows: int) -> str:
    return f"2099-01-{(rows // 1_000_000) % 28 + 1:02d}" if rows >= 1_000_000 else "2099-02-01"


def prepare(home: Path, sizes: list[int], through_gates: bool = False, quick_training: bool = True,
            month: date = date(2013, 3, 1)) -> None:
    """Data, champion and scoring partitions (kept between runs).

    With ``through_gates`` the trained version becomes champion only if the gate promotes it
    (``gates.judge_version`` + ``gates.decide``); otherwise ``@champion`` is set directly.
    ``quick_training=False`` keeps the spec's own training section (all candidates, tuning).
    ``month`` (its first day) is the month of flights replayed and trained on.
    """
    month_end = (month + timedelta(days=31)).replace(day=1) - timedelta(days=1)
    import yaml

    if not (home / "READY").exists():
        if home.exists():
            shutil.rmtree(home)
        shutil.copytree(REPO / "include" / "specs", home / "specs")
        raw = yaml.safe_load((home / "specs" / "flights.yaml").read_text())
        if quick_training:
            raw["training"].update(candidates=["dummy", "lightgbm"], tune_top=0, cv_folds=2)
        for source in raw["sources"].values():  # replicated rows shift `year` to keep keys unique
            source["columns"]["year"]["max"] = 3000
        (home / "specs" / "flights.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        set_env(home)
        import mlflow
        from flightdeck.core.settings import Settings
        from flightdeck.core.spec import load_spec
        from flightdeck.core.storage import open_store
        from flightdeck.data import replay, runners
        from flightdeck.training import pipeline as training

        settings = Settings.from_env()
        spec = load_spec(settings.specs_dir / "flights.yaml")
        replay.replay(spec, open_store(settings.landing_uri), month, month_end)
        ctx = runners.StageContext(spec, settings, run_id="bench-data")
        for stage in (runners.ingest_deliveries, runners.validate_batches, runners.curate_batches,
                      runners.split_dataset):
            stage(ctx)
        tctx = runners.StageContext(spec, settings, run_id="bench-train", dag_id="flights_training")
        version = training.register_model(tctx, training.train_model(tctx))["version"]
        if through_gates:
            from flightdeck.gates import promotion as gates

            gctx = runners.StageContext(spec, settings, run_id="bench-gate", dag_id="flights_gate")
            decision = gates.decide(gctx, gates.judge_version(gctx, version))
            if not decision["promoted"]:
                raise RuntimeError(f"the gate rejected version {version}: {decision['reasons']}")
        else:
            mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
            mlflow.MlflowClient().set_registered_model_alias(spec.registered_model_name, "champion", version)
        (home / "READY").write_text("ok")
    set_env(home)
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from flightdeck.core import lake
    from flightdeck.core.settings import Settings
    from flightdeck.core.storage import open_store

    store = open_store(Settings.from_env().lake_uri)
    march = pd.concat([pd.read_parquet(store.path(o.key)) for o in store.list("curated/flights/")
                       if o.key.endswith(".parquet") and f"{month:%Y-%m}" in o.key], ignore_index=True)
    for rows in sizes:
        dest = store.path(lake.curated("flights", partition_of(rows)))
        if dest.exists() and pq.ParquetFile(dest).metadata.num_rows == rows:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        schema = pa.Schema.from_pandas(march, preserve_index=False)
        with pq.ParquetWriter(dest, schema, compression="zstd") as writer:
            done, copy = 0, 0
            while done < rows:
                part = march.head(rows - done).copy()
                part["year"] = part["year"] + 1 + copy  # unique keys per copy; year is not a feature
                part["departed_late"] = pd.array([pd.NA] * len(part), dtype="Int8")  # tomorrow's flights
                writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False),
                                   row_group_size=200_000)
                done += len(part)
                copy += 1


# ---------------------------------------------------------------- workers (fresh subprocesses)
def _context(run_id: str):  # type: ignore[no-untyped-def]
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.data.runners import StageContext

    settings = Settings.from_env()
    return StageContext(load_spec(settings.specs_dir / "flights.yaml"), settings, run_id=run_id)


def _fresh_table(ctx):  # type: ignore[no-untyped-def]
    from flightdeck.serving import predictions

    engine = ctx.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP VIEW IF EXISTS flights_predictions_current")
        conn.exec_driver_sql("DROP TABLE IF EXISTS flights_predictions")
    return predictions.ensure_tables(engine, ctx.spec)


CHUNK = 200_000
NAIVE_MAX_ROWS = 3_000_000  # the naive path holds the partition several times over: ~31 GiB at 10M rows


def _floor(ctx, model, pt, path, partition: str, out: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """Booster.predict on the encoded float matrix + the raw bulk load, timed apart, chunk by chunk.

    Everything untimed (features, encoding, finished rows, tuples or CSV) is prepared per
    chunk, so memory stays flat; the timed parts are only ``Booster.predict`` (the spec's
    threads), the packaged model's own ``predict`` on the same rows (for its ratio to the
    booster) and the load (one transaction: ``executemany`` per chunk on SQLite, one ``COPY``
    on PostgreSQL, commit included).
    """
    import pandas as pd
    import pyarrow.parquet as pq
    from flightdeck.core import warehouse
    from flightdeck.serving import predictions

    compiled, threads = model.compiled, ctx.spec.training.threads
    timed = {"booster_s": 0.0, "packaged_predict_s": 0.0, "bulk_load_s": 0.0}
    cols = ", ".join(pt.columns)
    pg = ctx.engine.dialect.name == "postgresql"
    scored_at = warehouse.now()

    def chunks():  # type: ignore[no-untyped-def]
        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK, columns=model.required_columns()):
            frame = batch.to_pandas()
            X = model.feature_matrix(frame)
            matrix = compiled.matrix(model.feature_matrix(frame, categorical=True))
            clock = time.perf_counter()
            score = compiled.booster.predict(matrix, num_threads=threads)
            timed["booster_s"] += time.perf_counter() - clock
            clock = time.perf_counter()
            packaged = model.python_model.predict(None, X)
            timed["packaged_predict_s"] += time.perf_counter() - clock
            if not (packaged == score).all():
                raise AssertionError("the packaged model and the booster disagree")
            yield predictions.prediction_rows(
                pt, frame, score, (score >= model.threshold).astype("int8"),
                pd.util.hash_pandas_object(X, index=False).to_numpy().view("int64"), partition=partition,
                model_name=model.resolved.name, model_version=model.version, run_id=ctx.run_id,
                scored_at=scored_at)

    conn = ctx.engine.connect()
    try:
        transaction = conn.begin()
        if pg:
            with conn.connection.driver_connection.cursor() as cur:
                copy_cm = cur.copy(f"COPY flights_predictions ({cols}) FROM STDIN (FORMAT csv)")
                copy = copy_cm.__enter__()
                for finished in chunks():
                    payload = predictions._csv_bytes(finished)  # noqa: SLF001 - the floor is the bare COPY
                    clock = time.perf_counter()
                    copy.write(payload)
                    timed["bulk_load_s"] += time.perf_counter() - clock
                clock = time.perf_counter()
                copy_cm.__exit__(None, None, None)
                timed["bulk_load_s"] += time.perf_counter() - clock
        else:
            marks = ", ".join("?" for _ in pt.columns)
            for finished in chunks():
                tuples = predictions._sqlite_rows(finished)  # noqa: SLF001
                clock = time.perf_counter()
                conn.exec_driver_sql(f"INSERT INTO flights_predictions ({cols}) VALUES ({marks})", tuples)
                timed["bulk_load_s"] += time.perf_counter() - clock
        clock = time.perf_counter()
        transaction.commit()
        timed["bulk_load_s"] += time.perf_counter() - clock
    finally:
        conn.close()
    out.update(timed, seconds=timed["booster_s"] + timed["bulk_load_s"])


def worker(kind: str, rows: int) -> dict[str, object]:
    from flightdeck.core import lake, warehouse
    from flightdeck.serving import scoring

    ctx = _context(f"bench-{kind}-{rows}")
    start = time.perf_counter()
    model = scoring.load_model(ctx)
    load_s = time.perf_counter() - start
    pt = _fresh_table(ctx)
    partition = partition_of(rows)
    path = ctx.lake.path(lake.curated("flights", partition))
    out: dict[str, object] = {"kind": kind, "rows": rows, "db": ctx.engine.dialect.name, "load_s": load_s}
    if kind == "validate":  # what the first scoring of an input pays once: the GX suite on the partition
        import pyarrow.parquet as pq

        start = time.perf_counter()
        fingerprint = scoring.curated_partitions(ctx)[partition]
        report = scoring.validate_partition(ctx, pq.ParquetFile(path), partition, fingerprint)
        out.update(seconds=time.perf_counter() - start, success=report["success"])
    elif kind == "flightdeck":
        start = time.perf_counter()
        manifest = scoring.score_partition(ctx, partition, model.version, model=model)
        out.update(seconds=time.perf_counter() - start, timings=manifest["timings"], published=manifest["rows"],
                   validation=manifest["validation"])
    elif kind == "floor":
        _floor(ctx, model, pt, path, partition, out)
    elif kind == "naive":
        import mlflow.pyfunc
        import pandas as pd
        from flightdeck.data import wrangle
        from flightdeck.training import features

        pyfunc = mlflow.pyfunc.load_model(model.model_uri)
        start = time.perf_counter()
        frame = pd.read_parquet(path)
        prepared = features.build_feature_frame(wrangle.apply_wrangle(frame, ctx.spec, model.wrangle_params),
                                                ctx.spec, model.references, model.history, model.prior)
        X = features.select_features(prepared, model.layout)
        score = pyfunc.predict(X)
        result = prepared[list(ctx.spec.entity_key)].copy()
        result["partition_date"] = partition
        result["score"] = score
        result["label"] = (score >= model.threshold).astype("int8")
        result["model_name"] = model.resolved.name
        result["model_version"] = model.version
        result["run_id"] = ctx.run_id
        result["scored_at"] = warehouse.now()
        result["feature_hash"] = pd.util.hash_pandas_object(X, index=False).to_numpy().view("int64")
        result.to_sql("flights_predictions", ctx.engine, if_exists="append", index=False)
        out.update(seconds=time.perf_counter() - start)
    with ctx.engine.connect() as conn:
        out["rows_in_table"] = conn.exec_driver_sql("SELECT count(*) FROM flights_predictions").scalar()
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def bench_schema(pg_url: str) -> tuple[str, str, object] | None:
    """A fresh PostgreSQL schema for one benchmark run: (warehouse URL searching it, schema, admin engine).

    None (and a line saying why) when the server is unreachable; drop it with :func:`drop_bench_schema`.
    """
    import sqlalchemy as sa

    schema = f"fd_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL at {sa.make_url(pg_url).render_as_string(hide_password=True)} unreachable, "
              f"skipped ({exc.orig}); set --pg-url or FLIGHTDECK_TEST_POSTGRES_URL", flush=True)
        admin.dispose()
        return None
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"}) \
        .render_as_string(hide_password=False)
    return url, schema, admin


def drop_bench_schema(schema: str, admin: object) -> None:
    import sqlalchemy as sa

    with admin.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()  # type: ignore[attr-defined]


def run_worker(home: Path, url: str, kind: str, rows: int) -> dict[str, object]:
    env = {**os.environ, "FLIGHTDECK_WAREHOUSE_URL": url}
    proc = subprocess.run([sys.executable, __file__, "--home", str(home), "--worker", kind, "--rows", str(rows)],
                          env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{kind} {rows} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--pg-url", default=os.environ.get("FLIGHTDECK_TEST_POSTGRES_URL", PG_DEFAULT))
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "flightdeck-bench-scoring")
    parser.add_argument("--kinds", nargs="+", default=["validate", "floor", "flightdeck", "naive"])
    parser.add_argument("--naive-max-rows", type=int, default=NAIVE_MAX_ROWS,
                        help="skip the naive path above this size (it holds the partition in memory)")
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        set_env(args.home)
        print(json.dumps(worker(args.worker, args.rows[0]), default=str))
        return
    started = time.perf_counter()
    prepare(args.home, args.rows)
    print(f"set-up ready in {time.perf_counter() - started:.0f}s ({args.home})", flush=True)

    results = []
    urls: dict[str, str] = {}
    made = bench_schema(args.pg_url) if "postgres" in args.db else None
    if made is None:
        args.db = [d for d in args.db if d != "postgres"]
    else:
        urls["postgres"], schema, admin = made
    try:
        for rows in args.rows:  # size by size, both databases: a cut-short run still pairs them
            for db in args.db:
                for kind in args.kinds:
                    if (kind == "naive" and rows > args.naive_max_rows) or (kind == "validate" and db != args.db[0]):
                        continue  # validation evidence lives in the lake: validated once per input
                    url = urls.get(db, "")
                    if db == "sqlite":
                        db_file = args.home / f"bench-{kind}.db"
                        for suffix in ("", "-wal", "-shm"):
                            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
                        url = f"sqlite:///{db_file}"
                    r = run_worker(args.home, url, kind, rows)
                    r["db"] = db
                    results.append(r)
                    print(json.dumps(r, default=str), flush=True)
    finally:
        if made is not None:
            drop_bench_schema(schema, admin)
    print_tables(results, args.db, args.rows)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")


def print_tables(results: list[dict[str, object]], dbs: list[str], sizes: list[int]) -> None:
    """The floor's parts, the path against it (with and without first-sight validation), the naive path."""
    def get(db: str, rows: int, kind: str) -> dict[str, object] | None:
        found = [r for r in results if r["kind"] == kind and r["rows"] == rows
                 and (r["db"] == db or kind == "validate")]
        return found[-1] if found else None

    print("\n| db | rows | booster predict s | packaged predict s (x booster) | bulk load s | floor s "
          "| flightdeck s (parts) | x floor | s per M rows (path) | + GX on first sight: x floor "
          "| naive s (x floor) | peak RSS MiB floor / path / naive |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for db in dbs:
        for rows in sizes:
            floor, path, naive, gx = (get(db, rows, k) for k in ("floor", "flightdeck", "naive", "validate"))
            if floor is None or path is None:
                continue
            f, p = float(floor["seconds"]), float(path["seconds"])  # type: ignore[arg-type]
            booster, packaged = float(floor["booster_s"]), float(floor["packaged_predict_s"])  # type: ignore[arg-type]
            parts = "; ".join(f"{k} {v:.2f}" for k, v in dict(path.get("timings", {})).items())  # type: ignore[call-overload]
            first = f"{(p + float(gx['seconds'])) / f:.2f} (GX {float(gx['seconds']):.1f}s)" if gx else "-"  # type: ignore[arg-type]
            nv = "not run (needs ~31 GiB)" if rows > NAIVE_MAX_ROWS else "not run (time)"
            if naive:
                nv = f"{float(naive['seconds']):.1f} ({float(naive['seconds']) / f:.2f})"  # type: ignore[arg-type]
            rss = " / ".join(f"{float(r['peak_rss_mib']):.0f}" if r else "-" for r in (floor, path, naive))  # type: ignore[arg-type]
            print(f"| {db} | {rows:,} | {booster:.2f} | {packaged:.2f} ({packaged / booster:.2f}) "
                  f"| {float(floor['bulk_load_s']):.2f} | {f:.2f} | {p:.2f} ({parts}) | {p / f:.2f} "  # type: ignore[arg-type]
                  f"| {p / rows * 1e6:.2f} | {first} | {nv} | {rss} |")


if __name__ == "__main__":
    main()
