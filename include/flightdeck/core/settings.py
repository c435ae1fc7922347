"""Settings: the environment is read once, here, and passed down as a frozen object.

Every setting has the prefix ``FLIGHTDECK_`` and an embedded default, so nothing needs
to be set for the demo. All local state lives below ``FLIGHTDECK_HOME``.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PREFIX = "FLIGHTDECK_"


@dataclass(frozen=True)
class Settings:
    """Where FlightDeck keeps its state and how it reaches its services."""

    home: Path
    warehouse_url: str
    lake_uri: str
    landing_uri: str
    mlflow_tracking_uri: str
    specs_dir: Path
    s3_endpoint_url: str | None
    chunk_rows: int
    min_ml_test_score: float = 0.0
    pseudonymisation_key: str | None = field(default=None, repr=False)
    alert_webhook_url: str | None = field(default=None, repr=False)  # may carry a token
    alert_emails: tuple[str, ...] = ()
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_prefix: str = "flightdeck"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``FLIGHTDECK_*`` variables, falling back to defaults."""
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            value = env.get(PREFIX + name)
            return value if value else default

        home = Path(get("HOME", str(REPO_ROOT / ".flightdeck"))).resolve()
        chunk = get("CHUNK_ROWS", "200000")
        try:
            chunk_rows = int(chunk)
        except ValueError:
            raise ValueError(f"{PREFIX}CHUNK_ROWS must be a whole number, got {chunk!r}") from None
        if chunk_rows < 1:
            raise ValueError(f"{PREFIX}CHUNK_ROWS must be positive, got {chunk_rows}")
        min_score = get("MIN_ML_TEST_SCORE", "0")
        try:
            min_ml_test_score = float(min_score)
        except ValueError:
            raise ValueError(f"{PREFIX}MIN_ML_TEST_SCORE must be a number (0 to 7), got {min_score!r}") from None
        return cls(
            home=home,
            warehouse_url=get("WAREHOUSE_URL", f"sqlite:///{home / 'warehouse.db'}"),
            lake_uri=get("LAKE_URI", str(home / "lake")),
            landing_uri=get("LANDING_URI", str(home / "landing")),
            mlflow_tracking_uri=get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            specs_dir=Path(get("SPECS_DIR", str(REPO_ROOT / "include" / "specs"))),
            s3_endpoint_url=env.get(PREFIX + "S3_ENDPOINT_URL") or None,
            chunk_rows=chunk_rows,
            min_ml_test_score=min_ml_test_score,
            pseudonymisation_key=env.get(PREFIX + "PSEUDONYMISATION_KEY") or None,
            alert_webhook_url=env.get(PREFIX + "ALERT_WEBHOOK_URL") or None,
            alert_emails=tuple(a.strip() for a in env.get(PREFIX + "ALERT_EMAIL", "").split(",") if a.strip()),
            redis_url=get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            queue_prefix=_queue_prefix(get("QUEUE_PREFIX", "flightdeck")),
        )

    def resolve_pseudonymisation_key(self) -> str:
        """Return the keyed-hash secret for PII columns.

        Order: ``FLIGHTDECK_PSEUDONYMISATION_KEY``, else a key file generated once under
        ``FLIGHTDECK_HOME`` (mode 0600, never committed). Operators may pass a key taken
        from an Airflow connection instead.
        """
        if self.pseudonymisation_key:
            return self.pseudonymisation_key
        key_file = self.home / "secrets" / "pseudonymisation.key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=key_file.parent, prefix=".key-")  # private (0600) and unique
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            try:
                os.link(tmp, key_file)  # first writer wins; never overwrite a key in use
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        return key_file.read_text().strip()


def _queue_prefix(value: str) -> str:
    """The first part of the queue worker's Redis key names: no spaces, no braces (``flightdeck`` by default)."""
    if not value or any(ch.isspace() or ch in "{}" for ch in value):
        raise ValueError(f"{PREFIX}QUEUE_PREFIX must be a word without spaces or braces, got {value!r}")
    return value
