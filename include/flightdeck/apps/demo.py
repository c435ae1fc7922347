"""The demo: replay a month of flights and run the data, training, gate and scoring DAGs through the
real scheduler.

Starts ``airflow standalone`` (API server, scheduler, DAG processor, triggerer) as its
own process group, triggers the data DAG, waits for the run, prints what landed where,
and stops Airflow by process id. Only subprocesses: no Airflow import here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from flightdeck.apps import init as stores
from flightdeck.core import registry, warehouse
from flightdeck.core.settings import Settings
from flightdeck.core.spec import spec_named
from flightdeck.core.storage import open_store
from flightdeck.data import replay


def airflow(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run([exe, *args], check=check, capture_output=True, text=True)


def start_standalone(log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("airflow"))
    with open(log_path, "ab") as log:
        env = {**os.environ, "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        return subprocess.Popen([exe, "standalone"], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)


def stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """Stop a process group: SIGTERM, then SIGKILL after ``grace`` seconds.

    Members still alive once the leader has gone (a scheduler that ignored SIGTERM was seen
    to outlive ``airflow standalone``) get SIGKILL too: the group is this one's own.
    """
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 5  # a few seconds more for the members to finish on their own
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _group_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5  # until init has reaped them
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def json_lines(output: str) -> list[dict[str, Any]]:
    """The JSON list in a CLI's output; Airflow prints warnings on stdout too."""
    for line in output.splitlines():
        if line.startswith("["):
            return list(json.loads(line))
    return []


def runs_of(dag_id: str) -> dict[str, str]:
    """run_id -> state of a DAG's runs, from the Airflow CLI."""
    out = airflow("dags", "list-runs", dag_id, "-o", "json", check=False).stdout
    return {r["run_id"]: r["state"] for r in json_lines(out)}


def wait_for(predicate: Any, what: str, timeout: float, interval: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_demo(spec_name: str, start: date, end: date, timeout: float = 900.0) -> int:
    settings = Settings.from_env()
    spec = spec_named(settings.specs_dir, spec_name)
    dag_id = f"{spec.name}_data"
    print(f"FlightDeck demo: spec {spec.name} ({spec.fingerprint()}), home {settings.home}")
    print("1/6 initialising every store once, before the scheduler starts (flightdeck init)")
    for line in stores.init_stores(settings).lines:
        print(f"    {line}")
    print(f"2/6 replaying deliveries {start}..{end} into {settings.landing_uri}/{spec.name}/")
    landing = open_store(settings.landing_uri, settings.s3_endpoint_url)
    delivered = replay.replay(spec, landing, start, end)
    print(f"    {len(delivered)} files, {sum(d.rows for d in delivered)} rows")
    # the next day's schedule, whose outcomes are not in yet: the partition the champion scores
    tomorrow = end + timedelta(days=1)
    replay.replay(spec, landing, tomorrow, tomorrow)
    if spec.labels_source is not None:
        landing.delete(f"{spec.name}/{replay.delivery_name(spec.labels_source.pattern, tomorrow)}")
    print(f"    and the schedule of {tomorrow} (to be scored before its flights depart)")
    port = int(os.environ.get("AIRFLOW__API__PORT", "8080"))
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} is already in use (another Airflow still running?); "
                               "stop it or set AIRFLOW__API__PORT")
    log_path = settings.home / "logs" / "standalone.log"
    print(f"3/6 starting airflow standalone (log: {log_path})")
    proc = start_standalone(log_path)
    training_id, gate_id, scoring_id = f"{spec.name}_training", f"{spec.name}_gate", f"{spec.name}_scoring"
    monitoring_id = f"{spec.name}_monitoring"
    try:
        wanted = {dag_id, training_id, gate_id, scoring_id, monitoring_id}
        wait_for(lambda: wanted <= set(airflow("dags", "list", "-o", "plain", check=False).stdout.split()),
                 f"the DAG processor to parse {', '.join(sorted(wanted))}", 300)
        airflow("dags", "unpause", monitoring_id)  # scheduled on the scored and curated Assets (and daily)
        airflow("dags", "unpause", scoring_id)  # scheduled on the champion Asset (and daily)
        airflow("dags", "unpause", gate_id)  # scheduled on the challenger Asset
        airflow("dags", "unpause", training_id)  # scheduled on the data DAG's Asset
        airflow("dags", "unpause", dag_id)
        # Unpausing lets the scheduler create the run of the latest interval; its sensor
        # finds the landed files. Trigger one only if the scheduler has not.
        try:
            run_id = wait_for(lambda: next(iter(runs_of(dag_id)), None), "the scheduled run", 60)
            how = "scheduled"
        except TimeoutError:
            run_id = f"demo__{time.strftime('%Y%m%dT%H%M%S')}"
            airflow("dags", "trigger", dag_id, "--run-id", run_id)
            how = "triggered"
        print(f"4/6 {how} {dag_id} run {run_id}; the scheduler is running it")
        state = wait_for(lambda: finished(dag_id, run_id), f"run {run_id}", timeout, interval=5)
        print(f"    run {run_id}: {state}")
        # scoring runs before the gate (e.g. the curated-data run, with no champion yet); taken before the
        # training wait, since a slow CLI call after it could already see the champion-triggered run
        earlier_scoring = set(runs_of(scoring_id))
        if state == "success":
            print(f"5/6 the split published the training-data Asset; waiting for the asset-triggered "
                  f"{training_id} run")
            state = await_asset_run(training_id, "the asset-triggered training run", timeout)[1]
        if state == "success":
            print(f"    the register task published the challenger Asset; waiting for the asset-triggered "
                  f"{gate_id} run")
            state = await_asset_run(gate_id, "the asset-triggered gate run", timeout)[1]
        if state == "success":
            try:
                print("    waiting for the champion-triggered scoring run (it rescores the open partitions)")
                state = await_asset_run(scoring_id, "the champion-triggered scoring run", timeout,
                                        exclude=earlier_scoring)[1]
            except TimeoutError:
                print("    the gates did not move champion: nothing scored")
        if state == "success" and spec.labels_source is not None:
            state = deliver_outcomes(spec, landing, tomorrow, dag_id, monitoring_id, settings, timeout)
    finally:
        print("    stopping airflow standalone")
        stop(proc)
    print("6/6 what landed where")
    summarise(settings, spec.name)
    return 0 if state == "success" else 1


def deliver_outcomes(spec: Any, landing: Any, day: date, data_dag: str, monitoring_dag: str, settings: Settings,
                     timeout: float) -> str:
    """The outcomes of the scored day arrive: the data DAG curates them, monitoring measures realised quality."""
    from flightdeck.monitoring import monitor as monitoring

    print(f"    the scoring run published the scored Asset: {monitoring_dag} measures drift, skew, stability, ...")
    source = replay.load_replay_source(spec)
    for delivery, payload in replay.cut_deliveries(spec, source, day, day):
        if delivery.source == spec.labels_source_name:
            landing.put_bytes(payload, f"{spec.name}/{delivery.file_name}")
            print(f"    the outcomes of {day} land ({delivery.file_name}, {delivery.rows} rows): late labels")
    run_id = f"demo_labels__{time.strftime('%Y%m%dT%H%M%S')}"
    airflow("dags", "trigger", data_dag, "--run-id", run_id)
    state = wait_for(lambda: finished(data_dag, run_id), f"run {run_id}", timeout, interval=5)
    print(f"    {data_dag} run {run_id}: {state}; the curated Asset schedules {monitoring_dag}")
    engine = warehouse.connect(settings.warehouse_url)

    def decay_measured() -> bool:
        rows = monitoring.latest_figures(engine, spec.name, limit_partitions=5)
        return any(r["check_name"] == "decay" and r["partition_date"] == day.isoformat() for r in rows)

    try:
        wait_for(decay_measured, f"realised quality of {day}", timeout, interval=5)
        wait_for(lambda: all(s in ("success", "failed") for s in runs_of(monitoring_dag).values()),
                 f"the {monitoring_dag} runs to finish", timeout, interval=5)
    except TimeoutError as exc:
        print(f"    {exc}")
        return "failed"
    runs = runs_of(monitoring_dag)
    print(f"    {monitoring_dag}: {len(runs)} runs, " + ", ".join(f"{r}: {s}" for r, s in sorted(runs.items())))
    return "success" if state == "success" and all(s == "success" for s in runs.values()) else "failed"


def await_asset_run(dag_id: str, what: str, timeout: float, exclude: set[str] | frozenset[str] = frozenset(),
                    appear_within: float = 120) -> tuple[str, str]:
    """Wait for an asset-triggered run of ``dag_id`` (not in ``exclude``) to appear and finish: (run_id, state)."""
    run_id = wait_for(lambda: next((r for r in runs_of(dag_id) if r.startswith("asset_triggered")
                                    and r not in exclude), None), what, appear_within)
    state = wait_for(lambda: finished(dag_id, run_id), f"run {run_id}", timeout, interval=5)
    print(f"    run {run_id}: {state}")
    return run_id, state


def finished(dag_id: str, run_id: str) -> str | None:
    state = runs_of(dag_id).get(run_id)
    return state if state in ("success", "failed") else None


def summarise(settings: Settings, spec_name: str) -> None:
    engine = warehouse.connect(settings.warehouse_url)
    for row in warehouse.queries.batch_summary(engine, spec_name):
        print(f"    catalog  {row['source']:<9} {row['status']:<9} batches={row['batches']:<4} "
              f"rows_in={row['rows_in']} accepted={row['rows_accepted']} quarantined={row['rows_quarantined']}")
    for reason, n in warehouse.queries.quarantine_by_reason(engine, spec_name).items():
        print(f"    quarantine {reason}: {n}")
    latest = warehouse.queries.latest_dataset_version(engine, spec_name)
    if latest:
        print(f"    dataset version {latest['version_id']}: train={latest['train_rows']} "
              f"validation={latest['validation_rows']} test={latest['test_rows']} (test = frozen holdout)")
        print(f"    manifest {latest['manifest_uri']}")
    print_registry(settings, spec_name)
    print_gate(settings, spec_name)
    from flightdeck.serving import scoring

    for line in scoring.demo_lines(settings, spec_name):
        print("    " + line)
    print_monitoring(settings, spec_name)
    from flightdeck.monitoring import delivery

    metrics = delivery.compute_delivery_metrics(*delivery.load_delivery_events(settings, spec_name))
    print("    delivery metrics ('flightdeck delivery-metrics flights'):")
    print("\n".join("      " + line for line in metrics.table().splitlines()[:6]))
    safe_url = sa.engine.make_url(settings.warehouse_url).render_as_string(hide_password=True)
    print(f"    lake {settings.lake_uri}  warehouse {safe_url}")
    print("    UI: 'make up' then http://localhost:8080 (login in the output of make up)")


def print_registry(settings: Settings, spec_name: str) -> None:
    """The challenger in the MLflow registry, with its lineage tags."""
    client = registry.mlflow_client(settings.mlflow_tracking_uri)
    name = f"flightdeck-{spec_name}"
    found = registry.alias_version(client, name, registry.CHALLENGER)
    if found is None:
        print(f"    registry: no challenger of {name} yet")
        return
    version = client.get_model_version(name, found)
    tags = version.tags
    all_aliases = client.get_registered_model(name).aliases
    aliases = " ".join(f"@{a}" for a, v in sorted(all_aliases.items()) if str(v) == str(version.version))
    print(f"    registry: {name} version {version.version} {aliases} ({tags.get('flightdeck.chosen')}), "
          f"validation ROC AUC {float(tags.get('validation.roc_auc', 'nan')):.3f}, "
          f"test ROC AUC {float(tags.get('test.roc_auc', 'nan')):.3f}")
    print(f"    MLflow UI: 'make up' then http://127.0.0.1:5000 (experiment flightdeck/{spec_name})")


def print_gate(settings: Settings, spec_name: str) -> None:
    """The ML Test Score of the judged version and the gate's decision."""
    from flightdeck.core.context import StageContext
    from flightdeck.gates import promotion as gates

    ctx = StageContext(spec_named(settings.specs_dir, spec_name), settings)
    history = warehouse.queries.promotion_history(warehouse.connect(settings.warehouse_url), spec_name, limit=1)
    last = history[0] if history else None
    if last is None:
        print("    gates: no decision yet")
        return
    card = gates.score_version(ctx, last["model_version"])
    print("\n".join("    " + line for line in card.table().splitlines()))
    print(f"    gate decision for version {last['model_version']}: {last['action'].upper()} by {last['decided_by']}"
          + ("".join(f"\n      {r}" for r in last["reasons"].splitlines()) if last["reasons"]
             else " (every hard gate passed)"))
    print(f"    report: {last['report_uri']}")


def print_monitoring(settings: Settings, spec_name: str) -> None:
    """The newest monitoring figures: one line per check and metric, then the features that drift most."""
    from flightdeck.monitoring import monitor as monitoring

    rows = monitoring.latest_figures(warehouse.connect(settings.warehouse_url), spec_name, limit_partitions=2)
    if not rows:
        print("    monitoring: no figures yet")
        return
    print("    monitoring (fd_monitoring_metrics; 'flightdeck monitor flights --show --subjects' for every figure):")
    print("\n".join("      " + line for line in monitoring.format_figures(rows).splitlines()))
    drift = sorted((r for r in rows if r["check_name"] == "drift" and r["metric"] == "psi" and r["value"] is not None),
                   key=lambda r: -r["value"])[:5]
    if drift:
        print("    most drifting features: " + ", ".join(f"{r['subject']} PSI {r['value']:.3f} ({r['status']})"
                                                       for r in drift))
