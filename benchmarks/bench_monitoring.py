"""Benchmark: what the monitoring run costs next to the scoring run it watches (1M-row batch).

Set-up (once, kept in ``--home``): ``bench_scoring.prepare`` with January 2013 through the
data stages and a 300-tree LightGBM trained by the training runners (dummy and lightgbm, no
tuning), promoted by the gate (``gates.judge_version`` + ``gates.decide``), not by setting
the alias. (January: the gates' limits are set for it; bench_scoring's March model fails the
baseline and slice gates.) Then
one day's deliveries of N rows: 1 February 2013's schedule (the day after the training month)
and, later, its outcomes, replicated with ``year`` and ``day`` shifted so entity keys stay unique
(``time_hour`` is kept: the ingestion window rule and the weather join still hold). They go
through the data stages (ingest, validate, curate), so the raw delivery that the skew check
re-parses and the labels that the decay check joins are the real ones.

Then, per database and size, each step in a fresh subprocess (peak RSS is its own VmHWM),
all against one warehouse copied from the set-up's:

1. data: the schedule delivery is ingested, validated and curated (context, not compared);
2. **scoring**: ``scoring.load_model`` + ``scoring.score_partition`` (GX validation, scoring,
   atomic publication into the predictions table);
3. **monitoring, cold**: ``monitoring.run_monitoring(ctx, as_of=P, partitions=[P])``: stability,
   invariants, drift (its first call builds and caches the training reference sample),
   skew, staleness, performance, dependencies; no labels yet;
4. **monitoring, warm**: the same call again (reference sample cached);
5. data: the outcomes delivery is ingested, validated and curated (the partition is rebuilt
   with its labels, as the data DAG does when outcomes arrive);
6. **monitoring, decay**: ``run_monitoring(ctx, as_of=P)`` with no partitions named, what the
   monitoring DAG runs when the curated Asset fires: only what changed (realised metrics on
   the labelled predictions, per slice and rolling, label orphans) plus the run-level checks;
7. **monitoring, full**: ``partitions=[P]`` again, now labelled: every check plus decay.

Inside each monitoring subprocess the check functions are wrapped with timers (inclusive
and exclusive of nested timed calls), so the table says where the time goes.
Usage: ``python benchmarks/bench_monitoring.py [--rows 1000000] [--db sqlite postgres]``.
Nothing here is asserted; figures are ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "include"), str(HERE)]

from bench_data_pipeline import peak_rss_mib  # noqa: E402
from bench_scoring import PG_DEFAULT, _context, bench_schema, drop_bench_schema, prepare, set_env  # noqa: E402

TRAIN_MONTH = date(2013, 1, 1)
DAY = date(2013, 2, 1)  # the day after the training month: weather joins hit, history is known
PARTITION = DAY.isoformat()
MONITOR_RUNS = {"cold": [PARTITION], "warm": [PARTITION], "decay": None, "full": [PARTITION]}
BLOCK = 200_000


# ---------------------------------------------------------------- set-up (main process)
def delivery_files(home: Path, rows: int) -> dict[str, Path]:
    """Source name -> the CSV delivery of N rows for ``DAY`` (written once, kept in the home)."""
    import numpy as np
    from flightdeck.core.spec import load_spec
    from flightdeck.data import replay

    spec = load_spec(home / "specs" / "flights.yaml")
    out_dir = home / "deliveries" / str(rows)
    files = {name: out_dir / replay.delivery_name(source.pattern, DAY) for name, source in spec.sources.items()}
    if (out_dir / "DONE").exists():
        return files
    out_dir.mkdir(parents=True, exist_ok=True)
    source_rows = replay.load_replay_source(spec)
    day = source_rows[source_rows["_local_date"] == DAY].reset_index(drop=True)
    n = len(day)
    for name, source in spec.sources.items():
        with open(files[name], "w", encoding=source.encoding, newline="") as fh:
            for start in range(0, rows, BLOCK):
                pos = np.arange(start, min(start + BLOCK, rows))
                copy = pos // n
                block = day.iloc[pos % n][list(source.columns)].copy()
                block["year"] = (2013 + copy // 31).astype(str)  # (year, day) unique per copy
                block["day"] = (1 + copy % 31).astype(str)
                block.to_csv(fh, index=False, header=start == 0, sep=source.delimiter)
    (out_dir / "DONE").write_text(f"{rows} rows, {math.ceil(rows / n)} copies of {n} flights on {DAY}")
    return files


def reset_lake(home: Path) -> None:
    """Forget the benchmark day in the lake: curated partition, cached reference sample, archived deliveries."""
    lake = home / "lake"
    shutil.rmtree(lake / "curated" / "flights" / f"batch_date={PARTITION}", ignore_errors=True)
    shutil.rmtree(lake / "monitoring", ignore_errors=True)
    for f in (home / "landing" / "flights").glob(f"*{PARTITION}*"):
        f.unlink()
    for f in (home / "landing" / "flights" / "_archive").glob(f"*{PARTITION}*"):
        f.unlink()


def copy_sqlite(src: Path, dest: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    a.close()
    b.close()
    return f"sqlite:///{dest}"


def copy_to_postgres(src: Path, url: str) -> None:
    """The set-up warehouse's tables (catalog, dataset versions, evidence, ...) into a PostgreSQL schema."""
    import sqlalchemy as sa
    from flightdeck.core import warehouse

    source = sa.create_engine(f"sqlite:///{src}")
    target = warehouse.connect(url)
    with source.connect() as s, target.begin() as t:
        for table in warehouse.metadata.sorted_tables:
            rows = [dict(r) for r in s.execute(sa.select(table)).mappings()]
            if rows:
                t.execute(table.insert(), rows)
            for col in table.primary_key.columns:  # copied ids: move the id sequences past them
                if isinstance(col.type, sa.Integer):
                    t.execute(sa.text(f"SELECT setval(seq, (SELECT coalesce(max({col.name}), 0) + 1 FROM "
                                      f"{table.name}), false) FROM pg_get_serial_sequence('{table.name}', "
                                      f"'{col.name}') AS seq WHERE seq IS NOT NULL"))
    source.dispose()
    target.dispose()


# ---------------------------------------------------------------- timing the checks
class CheckClock:
    """Inclusive and exclusive (own) seconds of wrapped functions, nested calls subtracted from their parent."""

    def __init__(self) -> None:
        self.stack: list[float] = []
        self.figures: dict[str, dict[str, float]] = {}

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            self.stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                children = self.stack.pop()
                fig = self.figures.setdefault(label, {"calls": 0, "inclusive": 0.0, "exclusive": 0.0})
                fig["calls"] += 1
                fig["inclusive"] += took
                fig["exclusive"] += took - children
                if self.stack:
                    self.stack[-1] += took
        return timed

    def patch(self, owner: Any, name: str, label: str) -> None:
        setattr(owner, name, self.wrap(label, getattr(owner, name)))


def instrument(clock: CheckClock) -> None:
    from flightdeck.core import warehouse
    from flightdeck.data import drift, wrangle
    from flightdeck.monitoring import monitor as monitoring
    from flightdeck.serving import champion as serving
    from flightdeck.serving import scoring

    m = monitoring
    for owner, name, label in [
        (m, "published_partitions", "inputs: published partitions"),
        (m, "_already_monitored", "inputs: figures already stored"),
        (m, "resolve_model", "registry: resolve champion (first MLflow import)"),
        (m, "load_serving_model", "model load (registry, references, history)"),
        (m, "read_predictions", "read predictions (SELECT into a DataFrame)"),
        (m, "read_curated", "read curated partition (whole Parquet)"),
        (m, "check_stability", "stability"),
        (m, "check_invariants", "invariants"),
        (m, "check_drift", "drift: rest (merging figures)"),
        (m, "reference_sample", "drift: training reference sample"),
        (drift, "feature_drift", "drift: PSI + KS/chi2 of the features"),
        (drift, "score_drift", "drift: PSI + KS of the scores"),
        (m, "check_skew", "skew: rest (sample, align, compare)"),
        (m, "raw_partition_rows", "skew: re-parse the raw delivery"),
        (wrangle, "wrangle_frame", "skew: wrangle the raw rows"),
        (m, "key_frame", "entity keys as strings (skew, decay joins)"),
        (serving.ServingModel, "feature_matrix", "feature building (ServingModel.feature_matrix)"),
        (serving.ServingModel, "predict_matrix", "model predict (reference sample)"),
        (m, "check_decay", "decay: rest"),
        (m, "record_label_orphans", "decay: label orphans (group delivered labels)"),
        (m, "labels_of", "decay: read delivered labels"),
        (m, "join_labels", "decay: join labels to predictions"),
        (m, "decay_figures", "decay: realised metrics, per slice"),
        (m, "rolling_decay", "decay: rolling window"),
        (scoring, "curated_partitions", "lake listing (curated fingerprints)"),
        (m, "check_staleness", "staleness"),
        (m, "check_performance", "performance"),
        (m, "check_dependencies", "dependencies: rest"),
        (m, "environment_fingerprint", "dependencies: installed packages"),
        (m, "record_monitoring_evidence", "ML Test Score evidence"),
        (warehouse, "replace_rows", "warehouse writes (figures, orphans, evidence)"),
    ]:
        clock.patch(owner, name, label)


# ---------------------------------------------------------------- workers (fresh subprocesses)
def worker(kind: str, rows: int, arg: str, home: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "arg": arg, "rows": rows}
    if kind == "deliver":
        from flightdeck.data import runners

        ctx = _context(f"bench-data-{arg}-{rows}")
        path = delivery_files(home, rows)[arg]
        ctx.landing.put_file(path, f"{ctx.name}/{path.name}")
        start = time.perf_counter()
        ingested = runners.ingest_deliveries(ctx)
        runners.validate_batches(ctx)
        curated = runners.curate_batches(ctx)
        out.update(seconds=time.perf_counter() - start, rows_in=ingested["rows_in"],
                   quarantined=ingested["rows_quarantined"], curated_rows=curated["rows"],
                   labelled=curated["labelled"])
    elif kind == "score":
        from flightdeck.serving import scoring

        ctx = _context(f"bench-score-{rows}")
        start = time.perf_counter()
        model = scoring.load_model(ctx)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        manifest = scoring.score_partition(ctx, PARTITION, model.version, model=model)
        out.update(seconds=load_s + time.perf_counter() - start, load_s=load_s, timings=manifest["timings"],
                   published=manifest["rows"], validation=manifest["validation"].get("success"))
    elif kind == "monitor":
        import sqlalchemy as sa
        from flightdeck.core import warehouse
        from flightdeck.monitoring import monitor as monitoring

        clock = CheckClock()
        instrument(clock)
        ctx = _context(f"bench-monitor-{arg}-{rows}")
        start = time.perf_counter()
        manifest = monitoring.run_monitoring(ctx, as_of=PARTITION, partitions=MONITOR_RUNS[arg])
        seconds = time.perf_counter() - start
        t = warehouse.monitoring_metrics
        with ctx.engine.connect() as conn:
            figs = conn.execute(sa.select(t.c.check_name, t.c.metric, t.c.window, t.c.value, t.c.status, t.c.rows)
                                .where(t.c.run_id == ctx.run_id, t.c.subject == "")).all()
        load = clock.figures.get("model load (registry, references, history)", {}).get("inclusive", 0.0)
        out.update(seconds=seconds, load_s=load, components=clock.figures, status=manifest["status"],
                   errors=manifest["errors"], checked=manifest["partitions"],
                   figures=[list(f) for f in figs])
    if kind in ("score", "monitor"):
        from flightdeck.serving import predictions

        out["published_rows"] = predictions.count_partition(ctx.engine, ctx.spec, PARTITION)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_worker(home: Path, url: str, kind: str, rows: int, arg: str = "") -> dict[str, Any]:
    env = {**os.environ, "FLIGHTDECK_WAREHOUSE_URL": url}
    proc = subprocess.run([sys.executable, __file__, "--home", str(home), "--worker", kind, "--arg", arg,
                           "--rows", str(rows)], env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{kind} {arg} {rows} failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(lines[-1]))


# ---------------------------------------------------------------- report
RUN_TITLES = {"score": "scoring: load model + `score_partition` (validate, score, publish)",
              "cold": "monitoring, first run (builds the reference sample)",
              "warm": "monitoring, second run (reference cached)",
              "decay": "monitoring after labels arrived (what changed: decay + run-level)",
              "full": "monitoring, every check + decay on the labelled partition"}


def top_components(r: dict[str, Any], n: int = 3) -> str:
    comps = sorted(r["components"].items(), key=lambda kv: -kv[1]["exclusive"])[:n]
    return "; ".join(f"{k} {v['exclusive']:.1f}" for k, v in comps)


def print_report(results: list[dict[str, Any]], dbs: list[str], sizes: list[int]) -> None:
    print("\n| db | rows | run | seconds | of which model load | peak RSS MiB | × scoring time "
          "| × scoring peak RSS | where the time goes (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for db in dbs:
        for rows in sizes:
            mine = [r for r in results if r["db"] == db and r["rows"] == rows]
            score = next((r for r in mine if r["kind"] == "score"), None)
            if score is None:
                continue
            for r in [score, *[r for r in mine if r["kind"] == "monitor"]]:
                key = "score" if r["kind"] == "score" else r["arg"]
                if r["kind"] == "score":
                    note = "; ".join(f"{k} {v:.1f}" for k, v in r["timings"].items())
                else:
                    note = top_components(r)
                print(f"| {db} | {rows:,} | {RUN_TITLES[key]} | {r['seconds']:.1f} | {r['load_s']:.1f} | "
                      f"{r['peak_rss_mib']:.0f} | {r['seconds'] / score['seconds']:.2f} | "
                      f"{r['peak_rss_mib'] / score['peak_rss_mib']:.2f} | {note} |")
    monitors = [r for r in results if r["kind"] == "monitor"]
    for db in dbs:
        for rows in sizes:
            runs = [r for r in monitors if r["db"] == db and r["rows"] == rows]
            if not runs:
                continue
            labels = sorted({k for r in runs for k in r["components"]},
                            key=lambda k: -max(r["components"].get(k, {}).get("exclusive", 0) for r in runs))
            print(f"\nWhere the monitoring time goes, {db}, {rows:,} rows: own seconds of each timed function "
                  "(nested timed calls subtracted; calls in brackets)")
            print("\n| function | " + " | ".join(r["arg"] for r in runs) + " |")
            print("|---|" + "---|" * len(runs))
            for label in labels:
                cells = []
                for r in runs:
                    c = r["components"].get(label)
                    cells.append(f"{c['exclusive']:.2f} ({c['calls']})" if c else "-")
                print(f"| {label} | " + " | ".join(cells) + " |")
            rest = [r["seconds"] - sum(c["exclusive"] for c in r["components"].values()) for r in runs]
            print("| not timed (run_monitoring's own loop, figure rows) | " + " | ".join(f"{x:.2f}" for x in rest)
                  + " |")
            print("| **total** | " + " | ".join(f"**{r['seconds']:.2f}**" for r in runs) + " |")
            for r in runs:
                headline = [f"{c}.{m}[{w}]={'-' if v is None else f'{v:.4g}'} {s} ({n} rows)"
                            for c, m, w, v, s, n in r["figures"]
                            if (c, m) in {("skew", "rows_differing_share"), ("drift", "features_in_alert"),
                                          ("score_drift", "psi"), ("decay", "roc_auc"),
                                          ("stability", "mean_score"), ("performance", "rows_per_s_ratio")}]
                print(f"- {r['arg']}: statuses {r['status']}; checked {r['checked']}; errors {r['errors'] or 'none'}; "
                      + "; ".join(headline))


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--db", nargs="+", default=["sqlite"], choices=["sqlite", "postgres"])
    parser.add_argument("--pg-url", default=os.environ.get("FLIGHTDECK_TEST_POSTGRES_URL", PG_DEFAULT))
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "flightdeck-bench-monitoring")
    parser.add_argument("--worker")
    parser.add_argument("--arg", default="")
    args = parser.parse_args()
    if args.worker:
        set_env(args.home)
        print(json.dumps(worker(args.worker, args.rows[0], args.arg, args.home), default=str))
        return
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    os.environ.pop("FLIGHTDECK_WAREHOUSE_URL", None)  # the set-up writes to the home's own warehouse
    started = time.perf_counter()
    prepare(args.home, [], through_gates=True, month=TRAIN_MONTH)
    for rows in args.rows:
        delivery_files(args.home, rows)
    print(f"set-up ready in {time.perf_counter() - started:.0f}s ({args.home})", flush=True)

    base = args.home / "warehouse.db"
    results: list[dict[str, Any]] = []
    for db in list(args.db):
        for rows in args.rows:
            schema = admin = None
            if db == "sqlite":
                url = copy_sqlite(base, args.home / f"bench-monitoring-{rows}.db")
            else:
                made = bench_schema(args.pg_url)
                if made is None:
                    args.db.remove("postgres")
                    break
                url, schema, admin = made
                copy_to_postgres(base, url)
            reset_lake(args.home)
            try:
                steps = [("deliver", "schedule"), ("score", ""), ("monitor", "cold"), ("monitor", "warm"),
                         ("deliver", "outcomes"), ("monitor", "decay"), ("monitor", "full")]
                for kind, arg in steps:
                    r = run_worker(args.home, url, kind, rows, arg)
                    r["db"] = db
                    results.append(r)
                    brief = {k: v for k, v in r.items() if k not in ("components", "figures")}
                    print(json.dumps(brief, default=str), flush=True)
            finally:
                if schema and admin is not None:
                    drop_bench_schema(schema, admin)
    print(f"\ncommand: {command}")
    for r in results:
        if r["kind"] == "deliver":
            print(f"data stages ({r['db']}, {r['rows']:,} rows), for context: ingest + validate + curate of the "
                  f"{r['arg']} delivery {r['seconds']:.1f}s, {r['quarantined']} rows quarantined, "
                  f"{r['labelled']:,} labelled, peak RSS {r['peak_rss_mib']:.0f} MiB")
    print_report(results, args.db, args.rows)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
