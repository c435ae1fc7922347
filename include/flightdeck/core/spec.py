"""Dataset specs: one YAML file declares a whole use case.

A spec is parsed into frozen pydantic models. Any mistake raises :class:`SpecError`
naming the file and the dotted path of the field, e.g.
``flights.yaml: sources.schedule.columns.year.type: Input should be 'int', ...``.
Names that later become SQL identifiers or paths are validated here, once.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flightdeck.core.errors import Rejected

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
ColumnType = Literal["int", "float", "category", "string", "timestamp", "bool"]
NUMERIC_TYPES = ("int", "float")
BatchGrain = Literal["day", "week", "month", "none"]
GRAIN_GROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "day": (("date",),),
    "week": (("date",), ("year", "week")),
    "month": (("date",), ("year", "month")),
}


class SpecError(Rejected, ValueError):
    """A spec file is missing, unreadable or breaks the spec schema."""


def check_identifier(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe lower-case SQL/path identifier, else raise."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ValueError(
            f"{what} {value!r} must match {IDENTIFIER.pattern} "
            "(lower case letter, then letters, digits or underscores)"
        )
    return value


def parse_duration(value: str) -> timedelta:
    """Parse a small ISO-8601 duration such as ``P1D``, ``PT6H`` or ``P1DT12H``."""
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", value or "")
    if not match or value in ("P", "PT"):
        raise ValueError(f"{value!r} is not an ISO-8601 duration like P1D or PT6H")
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnSpec(_Frozen):
    """One delivered column: its type and the row rules that quarantine bad values."""

    type: ColumnType
    header: str | None = Field(default=None, description="the column's name in the delivered file, if not the name")
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    on_unseen: Literal["keep", "quarantine"] = "keep"
    pii: Literal["pseudonymise", "drop"] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _rules_fit_type(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and self.type not in NUMERIC_TYPES:
            raise ValueError(f"min/max only apply to int or float columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.allowed is not None and self.type not in ("category", "string"):
            raise ValueError(f"allowed values only apply to category/string, not {self.type}")
        if self.on_unseen == "quarantine" and self.allowed is None:
            raise ValueError("on_unseen: quarantine needs an 'allowed' list")
        return self


class SourceSpec(_Frozen):
    """A kind of delivery that lands in the landing zone."""

    role: Literal["features", "labels"]
    pattern: str = Field(description="glob of file names in the landing zone, one '*'")
    format: Literal["csv", "parquet"] = "csv"
    delimiter: str = ","
    encoding: str = "utf-8"
    na_values: tuple[str, ...] = ("", "NA")
    batch_date: str | None = Field(
        default=None, description="regex read from the file name: a (?P<date>YYYY-MM-DD) group, or "
                                  "(?P<year>) with (?P<month>) (month grain) or (?P<week>) (ISO week grain)"
    )
    batch_grain: BatchGrain = Field(
        default="day", description="the period one delivery covers; none: undated, each file its own batch")
    extra_columns: Literal["reject", "ignore"] = "reject"
    columns: dict[str, ColumnSpec]

    def header_of(self, name: str) -> str:
        """The name of column ``name`` in the delivered file."""
        return self.columns[name].header or name

    @property
    def headers(self) -> dict[str, str]:
        """Delivered header -> column name, in declaration order."""
        return {self.header_of(n): n for n in self.columns}

    def columns_of_type(self, *types: str) -> list[str]:
        """Names of the declared columns of the given types, in declaration order."""
        return [name for name, col in self.columns.items() if col.type in types]

    @field_validator("pattern")
    @classmethod
    def _one_star(cls, value: str) -> str:
        if value.count("*") != 1 or "/" in value:
            raise ValueError(f"pattern {value!r} must be a file name with exactly one '*'")
        return value

    @field_validator("batch_date")
    @classmethod
    def _date_group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compiled = re.compile(value)
            except re.error as exc:
                raise ValueError(f"batch_date is not a valid regex: {exc}") from None
            groups = set(compiled.groupindex)
            if "date" not in groups and not ({"year", "month"} <= groups or {"year", "week"} <= groups):
                raise ValueError("batch_date needs a named group (?P<date>...), or (?P<year>...) with "
                                 "(?P<month>...) or (?P<week>...)")
        return value

    @model_validator(mode="after")
    def _grain_fits_batch_date(self) -> SourceSpec:
        headers = [self.header_of(n) for n in self.columns]
        dupes = sorted({h for h in headers if headers.count(h) > 1})
        if dupes:
            raise ValueError(f"columns: headers {dupes} are used by more than one column")
        if self.batch_grain == "none":
            if self.batch_date is not None:
                raise ValueError("batch_grain none takes no batch_date regex (each file is its own batch)")
            return self
        if self.batch_date is None:
            return self  # undated deliveries of a dated grain: one undated partition (kept for old specs)
        groups = set(re.compile(self.batch_date).groupindex)
        if not any(set(option) <= groups for option in GRAIN_GROUPS[self.batch_grain]):
            wanted = " or ".join("+".join(f"(?P<{g}>)" for g in option)
                                 for option in GRAIN_GROUPS[self.batch_grain])
            raise ValueError(f"batch_date {self.batch_date!r} cannot give a {self.batch_grain} batch date: "
                             f"for batch_grain {self.batch_grain} it needs {wanted}")
        return self

    @field_validator("columns")
    @classmethod
    def _column_names(cls, value: dict[str, ColumnSpec]) -> dict[str, ColumnSpec]:
        if not value:
            raise ValueError("a source needs at least one column")
        for name in value:
            check_identifier(name, "column")
        return value


class TargetSpec(_Frozen):
    """How the binary label is derived from the target column.

    Either a comparison (``op`` and ``value``: a number, or a string with ``op: eq``), or the
    values that mean positive (``positive``) and, optionally, negative (``negative``); with
    ``negative`` declared, any other delivered value is quarantined as ``unknown_target``.
    """

    name: str
    column: str
    op: Literal["gt", "ge", "lt", "le", "eq"] | None = None
    value: float | str | None = None
    positive: tuple[str, ...] | None = None
    negative: tuple[str, ...] | None = None
    when_missing: Literal["drop", "negative", "positive"] = "drop"

    _name = field_validator("name")(lambda v: check_identifier(v, "target name"))

    @model_validator(mode="before")
    @classmethod
    def _numeric_text(cls, data: Any) -> Any:
        # value: "15" with a numeric op stays the number it always was
        if isinstance(data, dict) and data.get("op") in ("gt", "ge", "lt", "le") and isinstance(data.get("value"), str):
            try:
                return {**data, "value": float(data["value"])}
            except ValueError:
                return data
        return data

    @model_validator(mode="after")
    def _one_rule(self) -> TargetSpec:
        if (self.op is None) == (self.positive is None):
            raise ValueError("declare either op and value, or positive (and optionally negative)")
        if self.op is not None:
            if self.value is None:
                raise ValueError(f"op {self.op} needs a value")
            if isinstance(self.value, str) and self.op != "eq":
                raise ValueError(f"op {self.op} compares numbers; value {self.value!r} is a string "
                                 "(use op: eq, or positive: [...])")
            if self.negative is not None:
                raise ValueError("negative only goes with positive")
        else:
            if self.value is not None:
                raise ValueError("value goes with op, not with positive")
            if not self.positive:
                raise ValueError("positive needs at least one value")
            both = sorted(set(self.positive) & set(self.negative or ()))
            if both:
                raise ValueError(f"values {both} are both positive and negative")
        return self

    @property
    def is_categorical(self) -> bool:
        """Whether the label comes from string values (``positive`` or ``op: eq`` with a string)."""
        return self.positive is not None or isinstance(self.value, str)

    @property
    def known_values(self) -> tuple[str, ...] | None:
        """Every value the target column may carry, when declared (``positive`` + ``negative``)."""
        if self.positive is None or self.negative is None:
            return None
        return (*self.positive, *self.negative)


class DeriveSpec(_Frozen):
    """A derived column from a fixed vocabulary of operations."""

    name: str
    op: Literal["weekday", "month", "day_of_year", "local_hour", "local_date", "hhmm_hour", "hhmm_minute",
                "us_holiday_distance"]
    column: str

    _name = field_validator("name")(lambda v: check_identifier(v, "derived column"))


class FillSpec(_Frozen):
    """A missing-value fill whose value is learned on the training split only."""

    strategy: Literal["median", "mean", "mode", "constant"]
    value: Any = None

    @model_validator(mode="after")
    def _constant_has_value(self) -> FillSpec:
        if self.strategy == "constant" and self.value is None:
            raise ValueError("strategy constant needs a value")
        return self


class CapSpec(_Frozen):
    """Outlier capping at quantiles learned on the training split only."""

    lower_quantile: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    upper_quantile: Annotated[float, Field(ge=0.5, le=1)] = 1.0


class WrangleSpec(_Frozen):
    derive: tuple[DeriveSpec, ...] = ()
    fill: dict[str, FillSpec] = {}
    cap: dict[str, CapSpec] = {}
    drop: tuple[str, ...] = ()


class SplitSpec(_Frozen):
    train: Annotated[float, Field(gt=0, lt=1)] = 0.8
    validation: Annotated[float, Field(gt=0, lt=1)] = 0.1
    test: Annotated[float, Field(gt=0, lt=1)] = 0.1

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitSpec:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1, got {total:g}")
        return self


class QualitySpec(_Frozen):
    max_quarantine_share: Annotated[float, Field(ge=0, le=1)] = 0.05
    max_event_lead: str = "P366D"

    _lead = field_validator("max_event_lead")(lambda v: (parse_duration(v), v)[1])


class JoinSpec(_Frozen):
    """Reference data joined onto the features, e.g. weather at the origin for the scheduled hour."""

    name: str
    package: str
    file: str
    keys: tuple[str, ...] = Field(description="join keys, columns of both sides ('on' is a YAML boolean)")
    columns: dict[str, str] = Field(description="reference column -> feature name")
    pseudonymise: tuple[str, ...] = Field(default=(), description="join keys hashed like the deliveries' PII")

    _name = field_validator("name")(lambda v: check_identifier(v, "join name"))

    @field_validator("columns")
    @classmethod
    def _feature_names(cls, value: dict[str, str]) -> dict[str, str]:
        for target in value.values():
            check_identifier(target, "joined column")
        return value


class HistorySpec(_Frozen):
    """A leakage-safe historical rate of the target per group, from outcomes known before the event."""

    name: str
    by: tuple[str, ...]
    smoothing: Annotated[float, Field(ge=0)] = 50.0

    _name = field_validator("name")(lambda v: check_identifier(v, "history feature"))


class TrainingSpec(_Frozen):
    """How candidate models are built, compared, tuned and chosen."""

    metric: Literal["roc_auc", "log_loss"] = "roc_auc"
    candidates: tuple[Literal["dummy", "logistic", "random_forest", "lightgbm"], ...] = (
        "dummy", "logistic", "random_forest", "lightgbm")
    cv_folds: Annotated[int, Field(ge=2, le=10)] = 3
    tune_top: Annotated[int, Field(ge=0, le=3)] = 2
    tuning_budget: Annotated[int, Field(ge=1, le=50)] = 6
    seed: int = 42
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    slices: tuple[str, ...] = ()
    transforms: dict[str, Literal["log1p"]] = {}
    history: tuple[HistorySpec, ...] = ()
    joins: tuple[JoinSpec, ...] = ()
    min_train_rows: Annotated[int, Field(ge=1)] = 200


class FeaturePolicySpec(_Frozen):
    """Meta-level rules every model feature must follow (ML Test Score, Data 4)."""

    deny: tuple[str, ...] = ()
    sources: tuple[Literal["delivered", "derived", "joined", "history"], ...] = (
        "delivered", "derived", "joined", "history")


class InclusionSpec(_Frozen):
    """Group metrics on a declared attribute (ML Test Score, Model 7)."""

    attribute: str
    max_gap: Annotated[float, Field(gt=0, le=1)] = 0.1
    min_rows: Annotated[int, Field(ge=1)] = 200


class GateSpec(_Frozen):
    """Thresholds of the promotion gate; safe by default (TFX's Evaluator does not bless without them)."""

    min_roc_auc: Annotated[float, Field(ge=0, le=1)] = 0.55
    max_log_loss: Annotated[float, Field(gt=0)] = 0.693
    max_calibration_error: Annotated[float, Field(gt=0, le=1)] = 0.05
    regression_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.01
    bootstrap_samples: Annotated[int, Field(ge=20, le=5000)] = 200
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    baseline: Literal["logistic", "dummy"] = "logistic"
    baseline_margin: Annotated[float, Field(ge=0, le=1)] = 0.01
    slice_min_rows: Annotated[int, Field(ge=1)] = 200
    slice_min_roc_auc: Annotated[float, Field(ge=0, le=1)] = 0.5
    slice_max_drop: Annotated[float, Field(ge=0, le=1)] = 0.05
    max_plausible_roc_auc: Annotated[float, Field(gt=0.5, le=1)] = 0.97
    max_single_feature_roc_auc: Annotated[float, Field(gt=0.5, le=1)] = 0.9
    feature_policy: FeaturePolicySpec = FeaturePolicySpec()
    inclusion: InclusionSpec | None = None
    sample_rows: Annotated[int, Field(ge=100)] = 20000
    max_feature_ms_per_1k_rows: Annotated[float, Field(gt=0)] = 1000.0
    canary_rows: Annotated[int, Field(ge=10)] = 2000
    canary_max_ms_per_1k_rows: Annotated[float, Field(gt=0)] = 2000.0
    canary_max_psi: Annotated[float, Field(gt=0)] = 0.25
    onnx_max_abs_diff: Annotated[float, Field(gt=0, le=1)] = 1e-5
    freshness: str = "P30D"
    max_model_age: str = "P30D"

    _freshness = field_validator("freshness", "max_model_age")(lambda v: (parse_duration(v), v)[1])


class ServingSpec(_Frozen):
    """Precomputed batch scoring: where predictions go and how far ahead they are made."""

    table: str | None = None
    horizon: str = "P1D"
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = None

    _table = field_validator("table")(lambda v: v if v is None else check_identifier(v, "serving.table"))
    _horizon = field_validator("horizon")(lambda v: (parse_duration(v), v)[1])


class DriftSpec(_Frozen):
    """Feature and score drift between the version's training reference and each serving batch."""

    psi_warn: Annotated[float, Field(gt=0)] = 0.1
    psi_alert: Annotated[float, Field(gt=0)] = 0.25
    p_value: Annotated[float, Field(gt=0, lt=1)] = 0.01   # KS / chi-squared significance, reported beside PSI
    min_rows: Annotated[int, Field(ge=1)] = 500           # smaller batches report "insufficient", never alert
    bins: Annotated[int, Field(ge=2, le=100)] = 10
    features: tuple[str, ...] = ()                       # empty: every model feature
    alert_features: Annotated[int, Field(ge=1)] = 3      # features in alert that make a drift alert

    @model_validator(mode="after")
    def _ordered(self) -> DriftSpec:
        if self.psi_warn >= self.psi_alert:
            raise ValueError(f"psi_warn ({self.psi_warn}) must be below psi_alert ({self.psi_alert})")
        return self


class DecaySpec(_Frozen):
    """Realised quality once labels arrive, against what the version promised on its frozen test split."""

    metric: Literal["roc_auc", "log_loss", "f1", "precision", "recall"] = "roc_auc"
    window: str = "P14D"                                  # rolling window of labelled partitions
    min_labelled: Annotated[int, Field(ge=1)] = 1000      # fewer labelled rows in the window: no verdict
    max_drop: Annotated[float, Field(ge=0)] = 0.05        # allowed loss against the version's test metric
    min_value: float | None = None                        # an absolute floor as well (optional)

    _window = field_validator("window")(lambda v: (parse_duration(v), v)[1])


class MonitoringSpec(_Frozen):
    """What the monitoring DAG watches, its thresholds and when it asks for retraining."""

    drift: DriftSpec = DriftSpec()
    decay: DecaySpec = DecaySpec()
    score_psi_alert: Annotated[float, Field(gt=0)] = 0.25
    extreme_score: Annotated[float, Field(gt=0, lt=0.5)] = 0.01   # scores below it or above 1 - it
    max_extreme_share: Annotated[float, Field(ge=0, le=1)] = 0.05
    skew_sample_rows: Annotated[int, Field(ge=1)] = 1000
    max_skew_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    max_input_age: str = "P2D"
    online_window: str = "P7D"                            # request-log rows the online checks read, up to now
    max_online_skew: Annotated[float, Field(ge=0)] = 1e-9  # |online - precomputed| for the same input and version
    max_invalid_share: Annotated[float, Field(ge=0, le=1)] = 0.05  # share of online requests refused as invalid
    performance_window: Annotated[int, Field(ge=2)] = 14      # scoring runs in the rolling median
    max_slowdown: Annotated[float, Field(gt=1)] = 2.0         # throughput below median / this alerts
    retrain_on: tuple[Literal["decay", "drift", "staleness"], ...] = ("decay",)
    cooldown: str = "P14D"
    retrain_window: str | None = None                     # train on the last ... of data; empty: all
    retrain_on_new_data: bool = False                     # also retrain on every new dataset version

    _durations = field_validator("max_input_age", "online_window", "cooldown", "retrain_window")(
        lambda v: v if v is None else (parse_duration(v), v)[1])


class ReplaySpec(_Frozen):
    """Where the replay command reads the full source and how it cuts it into deliveries."""

    package: str
    file: str
    start: str
    end: str


class DatasetSpec(_Frozen):
    """A whole use case: sources, key, event time, target, features and rules."""

    name: str
    version: int = 1
    title: str
    description: str = ""
    owner: str = "flightdeck"
    timezone: str = "UTC"
    schedule: str = "@daily"
    entity_key: tuple[str, ...]
    event_time: str
    start_date: str | None = Field(default=None, description="first logical date of the DAGs, YYYY-MM-DD")
    sources: dict[str, SourceSpec]
    label_delay: str | None = Field(default=None, description="ISO duration after which outcomes arrive; "
                                    "none when the label arrives with the features")
    target: TargetSpec
    features: tuple[str, ...]
    leakage_columns: tuple[str, ...] = ()
    wrangle: WrangleSpec = WrangleSpec()
    split: SplitSpec = SplitSpec()
    quality: QualitySpec = QualitySpec()
    replay: ReplaySpec | None = None
    training: TrainingSpec = TrainingSpec()
    gates: GateSpec = GateSpec()
    serving: ServingSpec = ServingSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    path: Path | None = Field(default=None, exclude=True)

    _name = field_validator("name")(lambda v: check_identifier(v, "spec name"))
    _delay = field_validator("label_delay")(lambda v: v if v is None else (parse_duration(v), v)[1])

    @field_validator("start_date")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                date.fromisoformat(str(value))
            except ValueError:
                raise ValueError(f"start_date {value!r} is not a YYYY-MM-DD date") from None
            return str(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_label_delay(cls, data: Any) -> Any:
        # a labels source without a declared delay keeps the historical default of one day
        if isinstance(data, dict) and "label_delay" not in data and isinstance(data.get("sources"), dict):
            roles = [s.get("role") for s in data["sources"].values() if isinstance(s, dict)]
            if "labels" in roles:
                data = {**data, "label_delay": "P1D"}
        return data

    @property
    def label_delay_timedelta(self) -> timedelta:
        """How long after the event its outcome is known (zero when labels arrive with the features)."""
        return parse_duration(self.label_delay) if self.label_delay else timedelta(0)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, SourceSpec]) -> dict[str, SourceSpec]:
        for name in value:
            check_identifier(name, "source")
        if sum(s.role == "features" for s in value.values()) != 1:
            raise ValueError("exactly one source must have role: features")
        if sum(s.role == "labels" for s in value.values()) > 1:
            raise ValueError("at most one source may have role: labels")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> DatasetSpec:
        feats = self.features_source.columns
        for key in self.entity_key:
            if key not in feats:
                raise ValueError(f"entity_key column {key!r} is not a column of the features source")
        if self.event_time not in feats or feats[self.event_time].type != "timestamp":
            raise ValueError(f"event_time {self.event_time!r} must be a timestamp column of the features source")
        labels = self.labels_source
        if labels is not None:
            missing = [k for k in self.entity_key if k not in labels.columns]
            if missing:
                raise ValueError(f"the labels source lacks entity_key columns {missing}")
            if self.target.column not in labels.columns:
                raise ValueError(f"target.column {self.target.column!r} is not a column of the labels source")
        elif self.target.column not in feats:
            raise ValueError(f"target.column {self.target.column!r} is not a column of the features source")
        self._check_target_type((labels or self.features_source).columns[self.target.column].type)
        derived = {d.name for d in self.wrangle.derive}
        for d in self.wrangle.derive:
            if d.column not in feats:
                raise ValueError(f"wrangle.derive {d.name!r} reads unknown column {d.column!r}")
        known = set(feats) | derived
        joined = {c for j in self.training.joins for c in j.columns.values()}
        history = {h.name for h in self.training.history}
        for h in self.training.history:
            unknown = [c for c in h.by if c not in known]
            if unknown:
                raise ValueError(f"training.history {h.name!r} groups by unknown columns {unknown}")
        for j in self.training.joins:
            unknown = [c for c in j.keys if c not in known]
            if unknown:
                raise ValueError(f"training.joins {j.name!r} joins on unknown columns {unknown}")
        unknown_slices = [c for c in self.training.slices if c not in known]
        if unknown_slices:
            raise ValueError(f"training.slices names unknown columns {unknown_slices}")
        unwatched = [c for c in self.monitoring.drift.features if c not in self.features]
        if unwatched:
            raise ValueError(f"monitoring.drift.features names columns that are not model features: {unwatched}")
        unknown_features = [n for n in self.features if n not in known | joined | history]
        if unknown_features:
            raise ValueError(f"features names unknown columns {unknown_features}")
        for section, names in (("wrangle.fill", self.wrangle.fill),
                               ("wrangle.cap", self.wrangle.cap), ("wrangle.drop", self.wrangle.drop)):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{section} names unknown columns {unknown}")
        forbidden = set(self.leakage_columns) | {self.target.column, self.target.name}
        leaking = sorted(forbidden & set(self.features))
        if leaking:
            raise ValueError(f"features include target or leakage columns {leaking}")
        readers = ([(f"wrangle.derive {d.name!r}", [d.column]) for d in self.wrangle.derive]
                   + [(f"training.history {h.name!r}", list(h.by)) for h in self.training.history]
                   + [(f"training.joins {j.name!r}", list(j.keys)) for j in self.training.joins])
        for what, columns in readers:
            leaking = sorted(forbidden & set(columns))
            if leaking:
                raise ValueError(f"{what} reads target or leakage columns {leaking}")
        attribute = self.gates.inclusion.attribute if self.gates.inclusion else None
        if attribute is not None and attribute not in known:
            raise ValueError(f"gates.inclusion.attribute names unknown column {attribute!r}")
        dropped = sorted(set(self.wrangle.drop) & set(self.features))
        if dropped:
            raise ValueError(f"features include dropped columns {dropped}")
        for name, col in feats.items():
            if col.pii is not None and name in self.entity_key:
                raise ValueError(f"PII column {name!r} cannot be part of the entity key")
        return self

    def _check_target_type(self, column_type: str) -> None:
        target = self.target
        numeric = column_type in NUMERIC_TYPES
        if target.op in ("gt", "ge", "lt", "le") and not numeric:
            raise ValueError(f"target.op: {target.op} needs a numeric target column, but target.column "
                             f"{target.column!r} is {column_type} (use positive: [...] or op: eq)")
        if target.op == "eq" and isinstance(target.value, str) and numeric:
            raise ValueError(f"target.value: {target.value!r} is a string, but target.column "
                             f"{target.column!r} is {column_type}")
        if target.positive is not None and numeric:
            raise ValueError(f"target.positive: lists values of a string column, but target.column "
                             f"{target.column!r} is {column_type} (use op and value)")
        if target.is_categorical and column_type not in ("category", "string"):
            raise ValueError(f"target.column: {target.column!r} is {column_type}; string target values "
                             "need a category or string column")

    @property
    def predictions_table(self) -> str:
        """The spec's predictions table in the warehouse (``serving.table`` or ``<name>_predictions``)."""
        return self.serving.table or f"{self.name}_predictions"

    def feature_origin(self, name: str) -> str:
        """Where a feature comes from: ``delivered``, ``derived``, ``joined`` or ``history``."""
        if name in {h.name for h in self.training.history}:
            return "history"
        if name in {c for j in self.training.joins for c in j.columns.values()}:
            return "joined"
        if name in {d.name for d in self.wrangle.derive}:
            return "derived"
        return "delivered"

    @property
    def registered_model_name(self) -> str:
        """The spec's registered model in MLflow."""
        return f"flightdeck-{self.name}"

    def column_type(self, name: str) -> str | None:
        """Declared type of a delivered or derived column (``None`` for joined/history ones)."""
        for source in self.sources.values():
            if name in source.columns:
                return source.columns[name].type
        derived = {d.name: d.op for d in self.wrangle.derive}
        if name in derived:
            return "category" if derived[name] == "local_date" else "int"
        return None

    @property
    def features_source_name(self) -> str:
        return next(n for n, s in self.sources.items() if s.role == "features")

    @property
    def features_source(self) -> SourceSpec:
        return self.sources[self.features_source_name]

    @property
    def labels_source_name(self) -> str | None:
        return next((n for n, s in self.sources.items() if s.role == "labels"), None)

    @property
    def labels_source(self) -> SourceSpec | None:
        name = self.labels_source_name
        return self.sources[name] if name else None

    @property
    def suite_dir(self) -> Path | None:
        """Folder of the reviewed Great Expectations suites committed next to the spec."""
        return self.path.parent / self.name / "expectations" if self.path else None

    def fingerprint(self) -> str:
        """Short content hash of the spec, recorded as its version in the catalog.

        Fields added later are left out while they hold their defaults, so a spec that does
        not use them keeps the version it had.
        """
        exclude: dict[str, Any] = {"path": True}
        if self.start_date is None:
            exclude["start_date"] = True
        sources: dict[str, Any] = {}
        for name, source in self.sources.items():
            excluded: dict[str, Any] = {}
            if source.batch_grain == "day":
                excluded["batch_grain"] = True
            plain = {c: {"header": True} for c, col in source.columns.items() if col.header is None}
            if plain:
                excluded["columns"] = plain
            if excluded:
                sources[name] = excluded
        if sources:
            exclude["sources"] = sources
        target = {k: True for k in ("positive", "negative") if getattr(self.target, k) is None}
        if target:
            exclude["target"] = target
        payload = self.model_dump_json(exclude=exclude).encode()
        return f"v{self.version}-{hashlib.sha256(payload).hexdigest()[:12]}"


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and " " in str(err["loc"][-1]):
            msg += " (an unquoted comma inside {...} splits a value: quote it)"
        if not err["loc"] and re.match(r"^[a-z_]+(\.[a-z0-9_]+)+: ", msg):
            lines.append(f"{path.name}: {msg}")  # a cross-field rule names its field itself
            continue
        lines.append(f"{path.name}: {loc}: {msg}")
    return "\n".join(lines)


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate one spec file, raising :class:`SpecError` with the field named."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path.name}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path.name}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        spec = DatasetSpec.model_validate({**raw, "path": path})
    except ValidationError as exc:
        raise SpecError(_format_errors(path, exc)) from None
    if spec.name != path.stem:
        raise SpecError(f"{path.name}: name: {spec.name!r} must equal the file name stem {path.stem!r}")
    return spec


def spec_named(specs_dir: str | Path, name: str) -> DatasetSpec:
    """The spec ``<specs_dir>/<name>.yaml``; when there is none, the error names the folder and its specs."""
    path = Path(specs_dir) / f"{name}.yaml"
    if Path(name).name != name or not path.is_file():
        known = ", ".join(list_spec_names(specs_dir)) or "none"
        raise SpecError(f"no spec named {name!r} in {specs_dir} (specs there: {known})")
    return load_spec(path)


def discover_specs(specs_dir: str | Path) -> list[DatasetSpec]:
    """Load every ``*.yaml`` spec in ``specs_dir``, sorted by name."""
    return [load_spec(p) for p in sorted(Path(specs_dir).glob("*.yaml"))]


def list_spec_names(specs_dir: str | Path) -> list[str]:
    """Spec names from file names only: cheap enough for DAG parse time."""
    return [p.stem for p in sorted(Path(specs_dir).glob("*.yaml"))]
