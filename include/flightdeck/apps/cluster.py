"""``flightdeck cluster``: the production topology on this machine, natively, without Docker.

Airflow with the ``CeleryExecutor`` on PostgreSQL (metadata DB) and Redis (broker), Celery
workers with distinct names, the scheduler, the DAG processor, the triggerer and the API
server; an MLflow server on PostgreSQL with its artifacts in S3; an S3-compatible server
(moto) on loopback holding the landing zone, the lake and the MLflow artifacts; the warehouse
on PostgreSQL. The same services as ``docker-compose.yaml``, one process group each.

Every process is started by this module in its own session, its pid recorded; :meth:`Cluster.stop`
stops exactly those process groups (SIGTERM, then SIGKILL). Only subprocesses and HTTP: no
Airflow import here (the workers import :func:`worker_hostname` through ``hostname_callable``).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from flightdeck.core import warehouse
from flightdeck.core.settings import REPO_ROOT

WORKER_NAME_VAR = "FLIGHTDECK_WORKER_NAME"
BUCKETS = ("landing", "lake", "mlflow")
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"


def worker_hostname() -> str:
    """The host name Airflow records for a task: the Celery worker's name when the cluster set one.

    Set as ``[core] hostname_callable`` so that several workers on one machine are told apart
    in ``task_instance.hostname``; elsewhere (one worker per host, compose) it is the FQDN.
    """
    return os.environ.get(WORKER_NAME_VAR) or socket.getfqdn()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bin_path(name: str) -> str:
    """A command installed beside this Python (the project's virtualenv)."""
    return str(Path(sys.executable).with_name(name))


@dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster keeps its state and which services it uses.

    Args:
        home: the FlightDeck home (Airflow home, logs, secrets below it).
        postgres_url: a SQLAlchemy URL of the PostgreSQL server, without a database.
        redis_url: the Celery broker (use a dedicated db number, e.g. ``/5``).
        suffix: appended to the database names (``flightdeck_airflow_<suffix>``) and the queue.
        workers: how many Celery worker processes; ``worker_concurrency`` task slots each.
        api_port, mlflow_port: 0 picks a free port.
        extra_env: more variables for every process (e.g. short heartbeat timeouts in tests).
    """

    home: Path
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432"
    redis_url: str = "redis://127.0.0.1:6379/0"
    suffix: str = ""
    workers: int = 2
    worker_concurrency: int = 1
    api_port: int = 8080
    mlflow_port: int = 5000
    parallelism: int = 4
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def database(self, role: str) -> str:
        """The name of the ``airflow``, ``warehouse`` or ``mlflow`` database."""
        return f"flightdeck_{role}" + (f"_{self.suffix}" if self.suffix else "")

    def database_url(self, role: str) -> str:
        return sa.engine.make_url(self.postgres_url).set(database=self.database(role)).render_as_string(
            hide_password=False)

    @property
    def queue(self) -> str:
        return "flightdeck" + (f"_{self.suffix}" if self.suffix else "")


def create_databases(config: ClusterConfig) -> list[str]:
    """Create the cluster's PostgreSQL databases that do not exist yet; their names."""
    names = [config.database(role) for role in ("airflow", "warehouse", "mlflow")]
    return warehouse.create_databases(config.postgres_url, names)


def drop_databases(config: ClusterConfig) -> None:
    """Drop the cluster's databases (its processes must be stopped)."""
    names = [config.database(role) for role in ("airflow", "warehouse", "mlflow")]
    warehouse.drop_databases(config.postgres_url, names)


@dataclass
class Service:
    """One started process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Cluster:
    """The started processes, their environment and the addresses of the UIs."""

    config: ClusterConfig
    env: dict[str, str]
    api_url: str
    mlflow_url: str
    s3_url: str
    services: dict[str, Service] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)  # killed on purpose (the fault drill): not a failure

    @property
    def airflow_home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    @property
    def worker_names(self) -> list[str]:
        return [n for n in self.services if n.startswith("worker")]

    def start(self, name: str, argv: list[str], extra: Mapping[str, str] | None = None) -> Service:
        """Start ``argv`` in its own session (process group), logging to ``logs/<name>.log``."""
        log = self.config.home / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**self.env, **(extra or {})}, start_new_session=True,
                                    cwd=self.config.home)
        service = Service(name, proc, log)
        self.services[name] = service
        return service

    def run(self, argv: list[str], timeout: float = 600) -> str:
        """Run a one-off command (e.g. ``flightdeck init``) with the cluster's environment; its output."""
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd=self.config.home)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise RuntimeError(f"{' '.join(argv[:3])} failed (exit {done.returncode}):\n{tail}")
        return done.stdout

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one service and everything it started (the fault drill kills a worker so).

        Airflow's task runners live in process groups of their own: the descendants' groups are
        signalled too, so a killed worker takes its running tasks with it, as a dead host would.
        """
        service = self.services[name]
        self.killed.add(name)
        for pgid in _process_groups(service.pid):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGKILL:
            service.proc.wait(30)

    def stop(self, grace: float = 30.0) -> None:
        """Stop exactly the process groups this cluster started (and their tasks' groups), newest first."""
        running = [s for s in reversed(self.services.values()) if s.alive()]
        groups = {s.name: _process_groups(s.pid) for s in running}
        for service in running:
            try:
                os.killpg(service.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for service in running:
            try:
                service.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for service in running:
            for pgid in groups[service.name]:
                try:
                    os.killpg(pgid, signal.SIGKILL)  # what the leader left behind, if anything
                except (ProcessLookupError, PermissionError):
                    pass
            service.proc.wait(30)

    def password(self, user: str = "admin") -> str | None:
        """The simple auth manager's generated password of ``user`` (None until the API server wrote it)."""
        try:
            return str(json.loads((self.airflow_home / PASSWORD_FILE).read_text())[user])
        except (OSError, ValueError, KeyError):
            return None

    def dead(self) -> list[str]:
        """Services that exited, with the end of their logs."""
        return [f"{s.name} exited ({s.proc.returncode}):\n{s.log_tail()}" for s in self.services.values()
                if not s.alive() and s.name not in self.killed]


def _process_groups(pid: int) -> list[int]:
    """The process group of ``pid`` and those of all its descendants (leader first)."""
    import psutil

    groups = [pid]
    try:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                pgid = os.getpgid(child.pid)
            except ProcessLookupError:
                continue
            if pgid not in groups:
                groups.append(pgid)
    except psutil.NoSuchProcess:
        pass
    return groups


def wait_until(check: Callable[[], Any], what: str, timeout: float, cluster: Cluster | None = None,
               interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail early when a service of ``cluster`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if cluster is not None and cluster.dead():
            raise RuntimeError(f"while waiting for {what}: " + "\n".join(cluster.dead()))
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own loopback services)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def cluster_env(config: ClusterConfig, ports: Mapping[str, int], base: Mapping[str, str]) -> dict[str, str]:
    """Every process's environment: the documented ``FLIGHTDECK_*`` and ``AIRFLOW__*`` variables."""
    home = config.home.resolve()
    s3 = f"http://127.0.0.1:{ports['s3']}"
    api = f"http://127.0.0.1:{ports['api']}"
    keep = {k: v for k, v in base.items() if not k.startswith(("AIRFLOW", "FLIGHTDECK_", "MLFLOW_TRACKING"))}
    for name in ("FLIGHTDECK_SPECS_DIR", "FLIGHTDECK_PSEUDONYMISATION_KEY", "FLIGHTDECK_MIN_ML_TEST_SCORE",
                 "FLIGHTDECK_CHUNK_ROWS"):
        if base.get(name):
            keep[name] = base[name]
    celery_db = sa.engine.make_url(config.database_url("airflow")).set(drivername="db+postgresql+psycopg")
    env = {
        **keep,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "FLIGHTDECK_HOME": str(home),
        "FLIGHTDECK_WAREHOUSE_URL": config.database_url("warehouse"),
        "FLIGHTDECK_LANDING_URI": "s3://landing/zone",
        "FLIGHTDECK_LAKE_URI": "s3://lake/data",
        "FLIGHTDECK_S3_ENDPOINT_URL": s3,
        "FLIGHTDECK_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        # the loopback S3 server takes any credentials: without real ones, made-up ones per cluster
        "AWS_ACCESS_KEY_ID": base.get("AWS_ACCESS_KEY_ID") or f"local-{secrets.token_hex(4)}",
        "AWS_SECRET_ACCESS_KEY": base.get("AWS_SECRET_ACCESS_KEY") or secrets.token_hex(16),
        "AWS_DEFAULT_REGION": base.get("AWS_DEFAULT_REGION") or "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(config.parallelism),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": config.database_url("airflow"),
        # psycopg 3 is async too; without this Airflow derives an asyncpg URL (not installed)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": config.database_url("airflow"),
        "AIRFLOW__CELERY__BROKER_URL": config.redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": celery_db.render_as_string(hide_password=False),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": config.queue,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(ports["api"]),
        "AIRFLOW__API__BASE_URL": api,
        # one secret for every process: the API server checks the tokens the scheduler gives the tasks
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_logs"]),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW_CONN_FS_DEFAULT": "fs://",
    }
    env.update(config.extra_env)
    return env


def create_buckets(cluster: Cluster) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=cluster.s3_url, aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=cluster.env["AWS_SECRET_ACCESS_KEY"],
                          region_name=cluster.env["AWS_DEFAULT_REGION"])
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def start_cluster(config: ClusterConfig, base_env: Mapping[str, str] | None = None,
                  say: Callable[[str], None] = lambda _: None, timeout: float = 240) -> Cluster:
    """Create the databases, start every service, initialise the stores, wait until all are healthy.

    On any failure, whatever was started is stopped before the error propagates.
    """
    base = dict(os.environ if base_env is None else base_env)
    ports = {"s3": free_port(), "api": config.api_port or free_port(), "mlflow": config.mlflow_port or free_port(),
             "trigger_logs": free_port(), "worker_logs": free_port()}
    env = cluster_env(config, ports, base)
    cluster = Cluster(config, env, api_url=env["AIRFLOW__API__BASE_URL"],
                      mlflow_url=env["FLIGHTDECK_MLFLOW_TRACKING_URI"], s3_url=env["FLIGHTDECK_S3_ENDPOINT_URL"])
    (config.home / "airflow").mkdir(parents=True, exist_ok=True)
    try:
        created = create_databases(config)
        say(f"PostgreSQL databases {[config.database(r) for r in ('airflow', 'warehouse', 'mlflow')]}"
            + (f" (created {created})" if created else ""))
        cluster.start("s3", [bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(ports["s3"])])
        wait_until(lambda: http_ok(cluster.s3_url + "/moto-api/"), "the S3 server", 60, cluster)
        create_buckets(cluster)
        say(f"S3 (moto) {cluster.s3_url}: buckets {', '.join(BUCKETS)}")
        cluster.start("mlflow", [bin_path("mlflow"), "server", "--host", "127.0.0.1", "--port", str(ports["mlflow"]),
                                 "--workers", "1", "--backend-store-uri", config.database_url("mlflow"),
                                 "--artifacts-destination", "s3://mlflow/artifacts"])
        wait_until(lambda: http_ok(cluster.mlflow_url + "/health"), "the MLflow server", 120, cluster)
        say(f"MLflow server {cluster.mlflow_url} (PostgreSQL backend, artifacts s3://mlflow/artifacts)")
        for line in cluster.run([bin_path("flightdeck"), "init"]).splitlines():
            say(f"flightdeck init: {line}")
        af = bin_path("airflow")
        cluster.start("api-server", [af, "api-server", "--host", "127.0.0.1", "--port", str(ports["api"])])
        cluster.start("scheduler", [af, "scheduler"])
        cluster.start("dag-processor", [af, "dag-processor"])
        cluster.start("triggerer", [af, "triggerer"])
        for i in range(1, config.workers + 1):
            name = f"worker{i}"
            cluster.start(name, [af, "celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", config.queue,
                                 "--concurrency", str(config.worker_concurrency), "--skip-serve-logs",
                                 "--without-gossip", "--without-mingle"],
                          extra={WORKER_NAME_VAR: f"{name}@{socket.gethostname()}"})
        wait_until(lambda: http_ok(cluster.api_url + "/api/v2/monitor/health"), "the Airflow API server", timeout,
                   cluster, interval=1)
        for name in cluster.worker_names:
            wait_until(functools.partial(_worker_ready, cluster.services[name]), f"Celery {name}", timeout, cluster,
                       interval=1)
        wait_until(lambda: scheduler_healthy(cluster), "the scheduler's heartbeat", timeout, cluster, interval=1)
        wait_until(cluster.password, "the generated admin password", 60, cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _worker_ready(service: Service) -> bool:
    """Celery logged that the worker is ready to take tasks."""
    return " ready." in service.log_tail(200)


def scheduler_healthy(cluster: Cluster) -> bool:
    try:
        with urllib.request.urlopen(cluster.api_url + "/api/v2/monitor/health", timeout=5) as response:  # noqa: S310
            health = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))


# ---------------------------------------------------------------- driving DAGs over the REST API
@dataclass
class AirflowApi:
    """A small client of the Airflow 3 REST API (token from the simple auth manager's login)."""

    url: str
    username: str
    password: str
    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            body = self.request("POST", "/auth/token", {"username": self.username, "password": self.password},
                                auth=False)
            self._token = str(body["access_token"])
        return self._token

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {exc.read()[:500]!r}") from None
        return json.loads(raw) if raw else None

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> None:
        self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                     {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})})

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.request("GET", "/api/v2/dags?limit=100")["dags"]}


def api_of(cluster: Cluster) -> AirflowApi:
    password = cluster.password()
    if password is None:
        raise RuntimeError("the API server has not generated the admin password")
    return AirflowApi(cluster.api_url, "admin", password)


# ---------------------------------------------------------------- `flightdeck cluster`
@contextmanager
def running_cluster(config: ClusterConfig, say: Callable[[str], None] = print) -> Iterator[Cluster]:
    """Start the cluster, yield it, and stop exactly what was started, whatever happens."""
    cluster = start_cluster(config, say=say)
    try:
        yield cluster
    finally:
        say("stopping the cluster: " + ", ".join(f"{s.name} (pid {s.pid})" for s in cluster.services.values()))
        cluster.stop()


def serve(config: ClusterConfig) -> int:
    """Start the cluster, print where it is, and wait until Ctrl-C, SIGTERM or a service dies."""
    stop = {"now": False}

    def _stop(signum: int, _frame: Any) -> None:
        stop["now"] = True

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with running_cluster(config) as cluster:
            print(f"Airflow UI: {cluster.api_url}  login: admin / {cluster.password()}")
            print(f"MLflow UI:  {cluster.mlflow_url}")
            print(f"S3:         {cluster.s3_url}  (landing s3://landing/zone, lake s3://lake/data)")
            print(f"Celery:     {', '.join(cluster.worker_names)} on queue {config.queue}, broker {config.redis_url}")
            print(f"logs: {config.home / 'logs'}  (Ctrl-C stops everything)")
            try:
                while not stop["now"] and not cluster.dead():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            for line in cluster.dead():
                print(line, file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
