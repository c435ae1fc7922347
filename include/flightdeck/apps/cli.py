"""The ``flightdeck`` command line: init, specs, run, replay, bootstrap-suite, catalog, quarantine, train, judge,
score-card, promotions, rollback, delivery-metrics, score, lookup, serve, worker, monitor, year, demo, cluster."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime

from flightdeck.core.errors import FlightDeckError
from flightdeck.core.settings import Settings
from flightdeck.core.spec import SpecError, load_spec, spec_named


def _spec(settings: Settings, name: str):  # type: ignore[no-untyped-def]
    return spec_named(settings.specs_dir, name)


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Create and migrate every store once: Airflow metadata DB, warehouse, MLflow."""
    from flightdeck.apps import init as stores

    report = stores.init_stores(settings, airflow=not args.no_airflow, repair=args.repair)
    print("\n".join(report.lines))
    return 0


def cmd_specs(args: argparse.Namespace, settings: Settings) -> int:
    """Validate every spec (of the specs folder, or the files/folders given): one line each, errors by field."""
    from pathlib import Path

    paths: list[Path] = []
    for given in args.check or [str(settings.specs_dir)]:
        path = Path(given)
        if path.is_dir():
            paths.extend(sorted(path.glob("*.yaml")))
        else:
            paths.append(path)
    if not paths:
        print(f"no specs (*.yaml) in {', '.join(args.check or [str(settings.specs_dir)])}")
        return 1
    invalid = 0
    for path in paths:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            invalid += 1
            print(f"{path.stem:<16} INVALID")
            for line in str(exc).splitlines():
                print(f"    {line}")
            continue
        print(f"{spec.name:<16} {spec.fingerprint():<18} {spec.title}")
    if invalid:
        print(f"{invalid} of {len(paths)} specs invalid")
    return 1 if invalid else 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one DAG's work (data, training, gate, scoring) outside the scheduler, printing each manifest."""
    from flightdeck.apps import stages

    run_id = args.run_id or f"cli__{args.stage}__{datetime.now(UTC):%Y%m%dT%H%M%S}"
    for step in stages.run_stage(settings, args.spec, args.stage, run_id):
        if step.manifest is not None:
            print(f"{step.task}: {json.dumps(step.manifest, default=str, sort_keys=True)}")
        if step.skipped:
            print(f"{step.task}: skipped: {step.skipped}")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from flightdeck.core.storage import open_store
    from flightdeck.data import replay

    spec = _spec(settings, args.spec)
    default_start, default_end = (spec.replay.start, spec.replay.end) if spec.replay else (None, None)
    start_text = args.start or default_start
    if start_text is None:
        raise ValueError(f"spec {spec.name!r} has no replay section: pass --start")
    start = date.fromisoformat(start_text)
    end = date.fromisoformat(args.end or (args.start if args.start else default_end) or start_text)
    landing = open_store(settings.landing_uri, settings.s3_endpoint_url)
    done = replay.replay(spec, landing, start, end, pace_seconds=args.pace,
                         on_delivery=lambda d: print(f"delivered {d.file_name} ({d.rows} rows)"))
    print(f"{len(done)} files into {landing.uri(spec.name)}")
    return 0


def cmd_bootstrap_suite(args: argparse.Namespace, settings: Settings) -> int:
    """Profile the training window of the replay source and write the reviewed suite files."""
    import pandas as pd

    from flightdeck.core.warehouse import now
    from flightdeck.data import ingest, profile, replay, validate

    spec = _spec(settings, args.spec)
    frame = replay.load_replay_source(spec)
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    window = frame[(frame["_local_date"] >= start) & (frame["_local_date"] <= end)]
    assert spec.suite_dir is not None
    spec.suite_dir.mkdir(parents=True, exist_ok=True)
    for name, source in spec.sources.items():
        rules = ingest.RowRules(batch_id="bootstrap", batch_date=None, received_at=now())
        delivered = window[list(source.headers)].rename(columns=source.headers)
        parsed = ingest.parse_rows(delivered, spec, source, rules, 1, "bootstrap")
        accepted = parsed.accepted.drop(columns=["_batch_id", "_row_number"])
        prof = profile.profile_frame(pd.DataFrame(accepted))
        expectations = validate.bootstrap_expectations(spec, name, prof)
        doc = validate.suite_document(spec, name, expectations)
        doc["bootstrapped_from"] = {"start": args.start, "end": args.end, "rows": len(accepted)}
        path = validate.suite_path(spec, name)
        assert path is not None
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        print(f"{path}: {len(expectations)} expectations from {len(accepted)} rows; review, then commit")
    return 0


def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    from flightdeck.core import warehouse

    engine = warehouse.connect(settings.warehouse_url)
    for b in warehouse.list_batches(engine, args.spec):
        print(f"{b['batch_id'][:12]} {b['source']:<10} {b['file_name']:<28} {b['status']:<9} "
              f"in={b['rows_in']} ok={b['rows_accepted']} q={b['rows_quarantined']}"
              + (f"  {b['error'].splitlines()[0]}" if b["error"] else ""))
    return 0


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from flightdeck.core import warehouse

    for r in warehouse.queries.quarantined_rows(warehouse.connect(settings.warehouse_url), args.spec, args.limit):
        print(f"{r['batch_id'][:12]} row {r['row_number']:<6} {r['reason']:<16} {r['column_name']:<16} "
              f"value={r['value']!r} key={r['entity_key']}")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train and register a challenger outside Airflow (same code as the training DAG)."""
    from flightdeck.core.context import StageContext
    from flightdeck.training import pipeline as training

    spec = _spec(settings, args.spec)
    ctx = StageContext(spec, settings, run_id=args.run_id, dag_id="flightdeck-cli")
    trained = training.train_model(ctx, (args.window_start, args.window_end), force=args.force)
    print(json.dumps({k: trained[k] for k in ("chosen", "validation", "test", "dataset_version")}, indent=2))
    if args.register:
        print(json.dumps(training.register_model(ctx, trained), indent=2))
    return 0


def cmd_judge(args: argparse.Namespace, settings: Settings) -> int:
    """Run the checks and gates on a version outside Airflow (a manual run: its checks score 0.5 at most)."""
    from flightdeck.core.context import StageContext
    from flightdeck.gates import promotion as gates

    ctx = StageContext(_spec(settings, args.spec), settings, run_id=args.run_id, dag_id="flightdeck-cli")
    verdict = gates.judge_version(ctx, args.version, run_type="manual",
                                  min_ml_test_score=settings.min_ml_test_score)
    if args.decide:
        verdict = gates.decide(ctx, verdict)
    print(json.dumps({k: verdict[k] for k in ("version", "decision", "reasons", "ml_test_score", "band",
                                              "sections", "report_uri")}, indent=2))
    return 0


def cmd_score_card(args: argparse.Namespace, settings: Settings) -> int:
    """Print the ML Test Score of a version (default: the champion) as a table."""
    from flightdeck.core.context import StageContext
    from flightdeck.gates import promotion as gates

    ctx = StageContext(_spec(settings, args.spec), settings)
    card = gates.score_version(ctx, args.version)
    print(json.dumps(card.to_dict(), indent=2) if args.json else card.table())
    return 0


def cmd_promotions(args: argparse.Namespace, settings: Settings) -> int:
    """List the promotion, rejection and rollback records of a spec, newest first."""
    from flightdeck.core import warehouse

    for r in warehouse.queries.promotion_history(warehouse.connect(settings.warehouse_url), args.spec, args.limit):
        score = "" if r["ml_test_score"] is None else f" score={r['ml_test_score']:g}"
        print(f"{r['decided_at']:%Y-%m-%d %H:%M:%S} {r['action']:<8} version {r['model_version']:<4} "
              f"previous={r['previous_champion'] or '-'}{score} by {r['decided_by']}"
              + (f"\n    {r['reasons'].replace(chr(10), chr(10) + '    ')}" if r["reasons"] else ""))
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Point champion back to previous_champion, and record who did it and why."""
    import getpass

    from flightdeck.core.context import StageContext
    from flightdeck.gates import promotion as gates

    ctx = StageContext(_spec(settings, args.spec), settings, dag_id="flightdeck-cli")
    print(json.dumps(gates.rollback(ctx, args.by or getpass.getuser(), args.reason), indent=2))
    return 0


def cmd_delivery_metrics(args: argparse.Namespace, settings: Settings) -> int:
    """Deployment frequency, lead time, time to restore and change failure rate of a spec's models."""
    from datetime import UTC, datetime

    from flightdeck.monitoring import delivery

    since = datetime.combine(date.fromisoformat(args.since), datetime.min.time(), UTC) if args.since else None
    metrics = delivery.compute_delivery_metrics(*delivery.load_delivery_events(settings, args.spec), start=since)
    print(json.dumps(metrics.to_dict(), indent=2) if args.json else metrics.table())
    return 0


def cmd_lookup(args: argparse.Namespace, settings: Settings) -> int:
    """Precomputed predictions by (part of) the entity key or by partition."""
    from flightdeck.serving import scoring

    rows = scoring.lookup_predictions(settings, args.spec, args.key or [], args.partition, args.limit)
    print(scoring.format_predictions(rows, args.spec))
    return 0 if rows else 1


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    """Score open (or named) partitions with the champion outside Airflow (same code as the scoring DAG)."""
    from flightdeck.serving import scoring

    result = scoring.score_open_partitions(settings, args.spec, args.run_id, args.partition, args.force)
    print(json.dumps({k: result[k] for k in ("model_version", "partitions", "rows", "example")}, indent=2,
                     default=str))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the champion online (FastAPI on uvicorn); a moved champion is swapped in without a restart."""
    from flightdeck.serving import service

    if args.refresh_seconds <= 0:
        raise ValueError(f"--refresh-seconds must be positive, got {args.refresh_seconds}")
    _spec(settings, args.spec)  # an unknown spec fails here, naming it
    return service.serve(settings, args.spec, args.host, args.port, args.refresh_seconds)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Answer the spec's request queue (Redis Streams) with the champion until SIGTERM or Ctrl-C."""
    import logging
    import signal
    import threading
    from pathlib import Path

    from flightdeck.core import warehouse
    from flightdeck.serving import queue
    from flightdeck.serving.online import ChampionSlot

    options = queue.WorkerOptions(batch=args.batch, block_ms=args.block_ms, claim_idle_ms=args.claim_idle_ms,
                                  max_deliveries=args.max_deliveries, result_ttl_seconds=args.result_ttl_seconds,
                                  refresh_seconds=args.refresh_seconds)
    spec = _spec(settings, args.spec)  # an unknown spec fails here, naming it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # finish the batch in hand, acknowledge it, exit 0
        signal.signal(sig, lambda *_: stop.set())
    worker = queue.Worker(queue.connect(settings.redis_url), ChampionSlot(spec, settings),
                          warehouse.connect(settings.warehouse_url), queue.QueueNames(spec.name, settings.queue_prefix),
                          consumer=args.consumer, options=options,
                          heartbeat=Path(args.heartbeat_file) if args.heartbeat_file else None)
    stats = worker.run(stop)
    print(json.dumps({"consumer": worker.consumer, "read": stats.read, "claimed": stats.claimed,
                      "answered": stats.answered, "acked": stats.acked, "dead_lettered": stats.dead_lettered,
                      "rows_logged": stats.rows_logged}))
    return 0


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    """Run the monitoring checks outside Airflow (same code as the monitoring DAG), or show the newest figures."""
    from flightdeck.core import warehouse
    from flightdeck.core.context import StageContext
    from flightdeck.monitoring import monitor as monitoring

    spec = _spec(settings, args.spec)
    if not args.show:
        ctx = StageContext(spec, settings, run_id=args.run_id or f"manual__{warehouse.now():%Y%m%dT%H%M%S}",
                                   dag_id="flightdeck-cli")
        manifest = monitoring.run_monitoring(ctx, as_of=args.as_of, partitions=args.partition or None)
        # outside Airflow nothing can emit the retrain Asset: say what the DAG would decide, record nothing
        decision = monitoring.decide_retraining(ctx, ctx.run_id, manifest["as_of"], manifest["champion"],
                                                record=False)
        print(json.dumps({**{k: manifest[k] for k in ("run_id", "as_of", "champion", "status", "errors")},
                          "the monitoring DAG would decide": decision.to_dict()}, indent=2, default=str))
    rows = monitoring.latest_figures(warehouse.connect(settings.warehouse_url), spec.name, args.partitions)
    print(monitoring.format_figures(rows, subjects=args.subjects))
    return 0


def cmd_year(args: argparse.Namespace, settings: Settings) -> int:
    """The year in replay: the whole continuous-training loop, day by day, with its report."""
    from pathlib import Path

    from flightdeck.apps.year import run_year

    spec = _spec(settings, args.spec)
    start = date.fromisoformat(args.start or (spec.replay.start if spec.replay else "2013-01-01"))
    end = date.fromisoformat(args.end or (spec.replay.end if spec.replay else "2013-12-31"))
    home = Path(args.home) if args.home else settings.home / "year-in-replay"
    summary = run_year(spec.name, home, start, end, bootstrap_days=args.bootstrap_days,
                       quick=not args.full_training)
    print(json.dumps({k: summary[k] for k in ("comparison", "delivery_replay_days", "report", "decay_png",
                                              "drift_png", "retrainings", "promotions", "wall_seconds")},
                     indent=2, default=str))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from flightdeck.apps.demo import run_demo

    return run_demo(args.spec, date.fromisoformat(args.start), date.fromisoformat(args.end))


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    """The production topology on this machine: CeleryExecutor, PostgreSQL, Redis, MLflow server, S3."""
    from flightdeck.apps import cluster

    config = cluster.ClusterConfig(home=settings.home / "cluster", postgres_url=args.postgres, redis_url=args.redis,
                                   suffix=args.suffix, workers=args.workers, worker_concurrency=args.concurrency,
                                   api_port=args.api_port, mlflow_port=args.mlflow_port)
    return cluster.serve(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flightdeck", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("specs", help="validate the dataset specs (exit 1 if one is invalid), naming the field")
    p.add_argument("--check", action="append", metavar="PATH",
                   help="a spec file or a folder of specs to validate instead of the specs folder (repeat it)")
    p.set_defaults(func=cmd_specs)
    p = sub.add_parser("run", help="run a DAG's work (data, training, gate, scoring) outside the scheduler")
    p.add_argument("spec")
    p.add_argument("--stage", required=True, choices=["data", "training", "gate", "scoring"])
    p.add_argument("--run-id", default=None, help="default: cli__<stage>__<now, UTC>; the same run id re-runs that run")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("init", help="create and migrate every store (Airflow DB, warehouse, MLflow) once")
    p.add_argument("--no-airflow", action="store_true", help="leave the Airflow metadata DB alone")
    p.add_argument("--repair", action="store_true",
                   help="drop the tables an interrupted MLflow migration left behind, then migrate again")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("replay", help="cut a source into per-period deliveries (a day, a month...) and drop "
                                      "them into the landing zone")
    p.add_argument("spec")
    p.add_argument("--start", help="first day, YYYY-MM-DD (a month is delivered when it overlaps start..end)")
    p.add_argument("--end", help="last day, YYYY-MM-DD (default: --start)")
    p.add_argument("--pace", type=float, default=0.0, help="seconds to wait between days")
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("bootstrap-suite", help="write the reviewed GX suite from training-window statistics")
    p.add_argument("spec")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.set_defaults(func=cmd_bootstrap_suite)
    p = sub.add_parser("catalog", help="list the batches of a spec")
    p.add_argument("spec")
    p.set_defaults(func=cmd_catalog)
    p = sub.add_parser("quarantine", help="list quarantined rows with their reasons")
    p.add_argument("spec")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_quarantine)
    p = sub.add_parser("train", help="train (and optionally register) a model on the current dataset version")
    p.add_argument("spec")
    p.add_argument("--window-start")
    p.add_argument("--window-end")
    p.add_argument("--force", action="store_true", help="retrain although this data was already trained on")
    p.add_argument("--register", action="store_true", help="register the model and move the challenger alias")
    p.add_argument("--run-id", default=f"cli__{date.today().isoformat()}")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("judge", help="run the ML Test Score checks and promotion gates on a version")
    p.add_argument("spec")
    p.add_argument("--version", help="registered version (default: the challenger)")
    p.add_argument("--decide", action="store_true", help="also act on the verdict (promote or record rejection)")
    p.add_argument("--run-id", default=f"cli__{date.today().isoformat()}")
    p.set_defaults(func=cmd_judge)
    p = sub.add_parser("score-card", help="print the ML Test Score of a model version as a table")
    p.add_argument("spec")
    p.add_argument("--version", help="registered version (default: the champion, else the challenger)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=cmd_score_card)
    p = sub.add_parser("promotions", help="list promotions, rejections and rollbacks")
    p.add_argument("spec")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_promotions)
    p = sub.add_parser("rollback", help="point champion back to previous_champion")
    p.add_argument("spec")
    p.add_argument("--reason", default="", help="why (recorded with the rollback)")
    p.add_argument("--by", help="who decided (default: the current user)")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("delivery-metrics", help="deployment frequency, lead time, time to restore, change failure rate")
    p.add_argument("spec")
    p.add_argument("--since", help="YYYY-MM-DD: count from this day (default: the first event)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=cmd_delivery_metrics)
    p = sub.add_parser("lookup", help="look up precomputed predictions by entity key or partition")
    p.add_argument("spec")
    p.add_argument("--key", action="append", metavar="COLUMN=VALUE",
                   help="an entity-key column (repeat it; part of the key lists every match)")
    p.add_argument("--partition", help="YYYY-MM-DD: the predictions of that partition")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_lookup)
    p = sub.add_parser("score", help="score open (or named) partitions with the champion, outside Airflow")
    p.add_argument("spec")
    p.add_argument("--partition", action="append", help="YYYY-MM-DD to (re)score (repeat it); default: the open ones")
    p.add_argument("--force", action="store_true", help="rescore open partitions this version already published")
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("serve", help="serve the champion online: POST /predict, /invocations (MLflow's protocol), "
                                     "GET /health, /ready, /version")
    p.add_argument("spec")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--refresh-seconds", type=float, default=30.0,
                   help="how often @champion is checked; a moved champion is loaded, then swapped in")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("worker", help="answer the spec's request queue on Redis Streams with the champion "
                                      "(flightdeck:<spec>:requests -> flightdeck:<spec>:result:<id>)")
    p.add_argument("spec")
    p.add_argument("--batch", type=int, default=100, help="requests read at once")
    p.add_argument("--block-ms", type=int, default=1000, help="how long one read waits for requests")
    p.add_argument("--claim-idle-ms", type=int, default=30_000,
                   help="pending requests idle this long (a dead worker's) are claimed by this one")
    p.add_argument("--max-deliveries", type=int, default=5,
                   help="a request delivered more often goes to the dead-letter stream")
    p.add_argument("--result-ttl-seconds", type=int, default=86_400, help="how long answers are kept")
    p.add_argument("--refresh-seconds", type=float, default=30.0,
                   help="how often @champion is checked; a moved champion is loaded, then swapped in")
    p.add_argument("--consumer", default=None, help="this worker's name in the group (default: <hostname>-<pid>)")
    p.add_argument("--heartbeat-file", default=None, help="a file touched before every batch (for a healthcheck)")
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("monitor", help="run the monitoring checks (drift, skew, decay, ...) and print the figures")
    p.add_argument("spec")
    p.add_argument("--as-of", default=None, help="YYYY-MM-DD the run is about; default: the newest partition")
    p.add_argument("--partition", action="append", help="YYYY-MM-DD to re-check (repeat it); default: what changed")
    p.add_argument("--show", action="store_true", help="only print the newest figures")
    p.add_argument("--subjects", action="store_true", help="also print per-feature and per-slice figures")
    p.add_argument("--partitions", type=int, default=3, help="how many recent partitions to print")
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=cmd_monitor)
    p = sub.add_parser("year", help="the year in replay: the continuous-training loop over 2013 with its report")
    p.add_argument("--spec", default="flights")
    p.add_argument("--start", default=None, help="first day (default: the spec's replay start)")
    p.add_argument("--end", default=None, help="last day (default: the spec's replay end)")
    p.add_argument("--bootstrap-days", type=int, default=31, help="days delivered at once to train the first model")
    p.add_argument("--home", default=None, help="a new folder for the replay's own state "
                                                "(default: $FLIGHTDECK_HOME/year-in-replay)")
    p.add_argument("--full-training", action="store_true",
                   help="use the spec's full model search for every retraining (default: a quick search)")
    p.set_defaults(func=cmd_year)
    p = sub.add_parser("demo", help="replay deliveries and run the data and training DAGs through the real scheduler")
    p.add_argument("--spec", default="flights")
    p.add_argument("--start", default="2013-01-01")
    p.add_argument("--end", default="2013-01-31")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("cluster", help="start Airflow on Celery workers, PostgreSQL, Redis, an MLflow server and S3 "
                                       "on this machine; Ctrl-C stops it")
    p.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                   help="the PostgreSQL server (SQLAlchemy URL without a database)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Celery broker")
    p.add_argument("--suffix", default="", help="appended to the database names and the Celery queue")
    p.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    p.add_argument("--concurrency", type=int, default=1, help="task slots per worker")
    p.add_argument("--api-port", type=int, default=8080, help="the Airflow UI and API (0: a free port)")
    p.add_argument("--mlflow-port", type=int, default=5000, help="the MLflow server (0: a free port)")
    p.set_defaults(func=cmd_cluster)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, Settings.from_env()))
    except (SpecError, ValueError, LookupError, RuntimeError, TimeoutError, FlightDeckError) as exc:
        print(f"flightdeck: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
