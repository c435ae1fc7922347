"""docker-compose.yaml and the Dockerfile, checked without a Docker daemon.

The file parses; the services are the production topology; every image is pinned; every
variable it sets is a ``FLIGHTDECK_*`` setting that ``core/settings.py`` reads, a real Airflow
config option, or a named third-party variable; secrets come only from ``.env`` (never
committed; ``.env.example`` names every interpolated variable); bind mounts, the build and the
commands point at things that exist; long-running services have healthchecks; ``depends_on``
uses conditions. ``docker-compose config`` validates it too, where the binary is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
AIRFLOW_IMAGE = "apache/airflow:3.3.2-python3.11"
SERVICES = {"postgres", "redis", "s3", "s3-init", "mlflow", "airflow-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "flower", "serving", "worker"}
ONE_SHOT = {"s3-init", "airflow-init"}  # run to completion: no healthcheck
# variables of the images and libraries themselves, not FlightDeck's or Airflow's config
THIRD_PARTY = {
    "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",          # the postgres image (and MLflow's backend URL)
    "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",                     # the MinIO image
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",  # boto3, s3fs, MLflow's S3 client
    "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_DISABLE_TELEMETRY",         # MLflow
    "GX_ANALYTICS_ENABLED",                                       # Great Expectations
    "AIRFLOW_CONN_FS_DEFAULT",                                    # an Airflow connection (FileSensor's fs_default)
    "DUMB_INIT_SETSID",                                           # the Airflow image's entrypoint
}
SECRET_WORDS = ("PASSWORD", "SECRET", "FERNET", "JWT", "PSEUDONYMISATION")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the x-airflow-common anchors and << merges


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def settings_variables() -> set[str]:
    """The ``FLIGHTDECK_*`` names that core/settings.py reads."""
    source = (REPO / "include" / "flightdeck" / "core" / "settings.py").read_text()
    names = set(re.findall(r'get\("([A-Z0-9_]+)"', source)) | set(re.findall(r'PREFIX \+ "([A-Z0-9_]+)"', source))
    return {f"FLIGHTDECK_{n}" for n in names}


def test_the_services_are_the_production_topology(services):
    assert set(services) == SERVICES
    assert services["airflow-worker"]["command"] == "celery worker"
    assert "replicas" not in services["airflow-worker"].get("deploy", {}), "scaled with --scale, not pinned"
    assert "container_name" not in services["airflow-worker"], "a fixed name cannot be scaled"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker"):
        assert _environment(services[name])["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert services["flower"]["profiles"] == ["flower"], "flower is optional"


def test_every_image_is_pinned(services):
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and not tag.startswith("latest"), f"{name}: {image}"
    dockerfile = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert froms == [AIRFLOW_IMAGE]
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert AIRFLOW_IMAGE.split(":")[1].startswith(pins["apache-airflow"] + "-python3.11")
    built = {n for n, s in services.items() if "build" in s}
    assert built and all(services[n]["image"] == "flightdeck-airflow:3.3.2-python3.11" for n in built)


def airflow_reads(section: str, key: str) -> bool:
    """An option of Airflow's config description (core and the installed providers, e.g. ``[celery]``)."""
    from airflow.configuration import conf

    return key in conf.configuration_description.get(section, {}).get("options", {})


def test_every_variable_is_a_setting_an_airflow_option_or_named(services):
    known = settings_variables()
    assert {"FLIGHTDECK_WAREHOUSE_URL", "FLIGHTDECK_LAKE_URI", "FLIGHTDECK_PSEUDONYMISATION_KEY"} <= known
    for name, service in services.items():
        for var in _environment(service):
            if var.startswith("FLIGHTDECK_"):
                assert var in known, f"{name}: {var} is not read by core/settings.py"
            elif var.startswith("AIRFLOW__"):
                section, _, key = var.removeprefix("AIRFLOW__").partition("__")
                assert airflow_reads(section.lower(), key.lower()), f"{name}: {var} is no Airflow option"
            else:
                assert var in THIRD_PARTY, f"{name}: {var} is neither a setting, an Airflow option nor named"


def test_secrets_come_only_from_the_env_file(services):
    example = (REPO / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    assert used, "the compose file interpolates its settings"
    assert used <= defined, f".env.example lacks {sorted(used - defined)}"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    for name, service in services.items():
        for var, value in _environment(service).items():
            if any(word in var for word in SECRET_WORDS):
                assert value.startswith("${"), f"{name}: {var} is set literally"
            if "://" in value and "@" in value:  # a URL with credentials: its password is interpolated
                assert re.search(r":\$\{[A-Z_]+[:?-][^}]*\}@", value), f"{name}: {var} has a literal password"


def test_mounts_builds_and_commands_point_at_what_exists(compose, services):
    from flightdeck.apps.cli import build_parser

    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        if "build" in service:
            assert (REPO / service["build"] / "Dockerfile").is_file()
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s", (REPO / "Dockerfile").read_text(), flags=re.M):
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    init = services["airflow-init"]["command"]
    assert init[-1] == "exec flightdeck init"
    assert build_parser().parse_args(["init"]).command == "init"
    serve = services["serving"]["command"]
    assert serve[-1] == "exec flightdeck serve flights --host 0.0.0.0 --port 8000"
    parsed = build_parser().parse_args(serve[-1].split()[2:])
    assert (parsed.command, parsed.spec, parsed.host, parsed.port) == ("serve", "flights", "0.0.0.0", 8000)
    assert services["serving"]["healthcheck"]["test"][-1] == "http://localhost:8000/health"
    work = services["worker"]["command"][-1]
    parsed = build_parser().parse_args(work.split()[2:])
    assert (parsed.command, parsed.spec) == ("worker", "flights")
    assert parsed.heartbeat_file in services["worker"]["healthcheck"]["test"][-1], "the healthcheck reads its heartbeat"
    assert _environment(services["worker"])["FLIGHTDECK_REDIS_URL"] == "redis://redis:6379/0"
    assert "container_name" not in services["worker"], "a fixed name cannot be scaled"
    assert 'flightdeck = "flightdeck.apps.cli:main"' in (REPO / "pyproject.toml").read_text()
    assert "--artifacts-destination s3://mlflow/artifacts" in services["mlflow"]["command"][-1]
    assert "mlflow/artifacts" in " ".join(services["s3-init"]["command"]) or "flightdeck/mlflow" in \
        " ".join(services["s3-init"]["command"])


def test_airflow_commands_are_airflow_3_3_cli_commands(services):
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    for name, service in services.items():
        command = service.get("command")
        if service.get("image", "").startswith("flightdeck-airflow") and isinstance(command, str):
            args = parser.parse_args(command.split())
            assert callable(args.func), f"{name}: {command}"


def test_healthchecks_and_conditional_dependencies(services):
    conditions = {"service_healthy", "service_completed_successfully", "service_started"}
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for other, spec in depends.items():
            assert other in services, f"{name} depends on unknown {other}"
            assert spec.get("condition") in conditions, f"{name} -> {other}: {spec}"
            if other in ONE_SHOT:
                assert spec["condition"] == "service_completed_successfully"
            elif other != "s3-init":
                assert spec["condition"] == "service_healthy", f"{name} -> {other}"


def test_docker_compose_config_accepts_it(tmp_path: Path):
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`make test-deps` installs the Debian package): "
                    "only this check is skipped")
    env_file = tmp_path / ".env"
    shutil.copy(REPO / ".env.example", env_file)
    done = subprocess.run([binary, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    services = subprocess.run([binary, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--services"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert set(services.stdout.split()) == SERVICES, services.stdout
