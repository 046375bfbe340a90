"""The request event, schema version 1: one JSON object per request served.

This model *is* the contract of docs/definitions.md. Field names are fixed; unknown
fields are ignored and never stored (events carry no prompt or completion text).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "ERROR_TYPES",
    "EXCLUDED_FROM_ERROR_RATE",
    "FUTURE_TOLERANCE",
    "MAX_DURATION_MS",
    "MAX_EVENT_AGE",
    "MAX_TOKENS",
    "SCHEMA_VERSION",
    "ErrorType",
    "RequestEvent",
    "Status",
]

SCHEMA_VERSION = 1
#: An event stamped further than this in the future is invalid (clock skew bound).
FUTURE_TOLERANCE = timedelta(minutes=5)
#: An event stamped further than this in the past is invalid: the raw store keeps
#: events this long (``TELEMETRY_REQUESTS_TTL_DAYS`` may not be lower), so an
#: accepted event is always a stored one, and a batch spans at most 31 days.
MAX_EVENT_AGE = timedelta(days=30)
#: Bounds that keep every sum and every derived figure finite and in range:
#: a request lasts at most a day, and carries at most 10^8 tokens each way, so
#: a 7-day sum stays far inside UInt64 at any traffic a router can carry.
MAX_DURATION_MS = 86_400_000
MAX_TOKENS = 100_000_000

Status = Literal["ok", "error"]
ErrorType = Literal[
    "provider_error", "timeout", "rate_limited", "client_error", "gateway_error", "cancelled"
]
ERROR_TYPES: tuple[str, ...] = (
    "provider_error",
    "timeout",
    "rate_limited",
    "client_error",
    "gateway_error",
    "cancelled",
)
#: Failures that are the caller's doing: they count as requests but neither as
#: serving errors nor in the error rate's denominator.
EXCLUDED_FROM_ERROR_RATE: frozenset[str] = frozenset({"client_error", "cancelled"})

TokenCount = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]


def _to_microsecond(ms: float) -> float:
    """Durations are kept to the microsecond (3 decimals of ms).

    Besides agreeing on every path (like ``ts`` truncated to ms), it means two
    different durations differ by at least 0.001 ms, so a generation time
    ``latency_ms - ttft_ms`` is either 0 or large enough for a finite speed.
    """
    return round(ms, 3)


# Strict floats still accept JSON integers; bools are rejected.
DurationMs = Annotated[
    float,
    Field(ge=0, le=MAX_DURATION_MS, allow_inf_nan=False, strict=True),
    AfterValidator(_to_microsecond),
]
# RFC 3339 date-time: full date, T (or t or space, per its note), full time, Z or +hh:mm.
# ``datetime.fromisoformat`` alone also takes ISO 8601 forms that are not RFC 3339.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


class RequestEvent(BaseModel):
    """One request as the gateway saw it.

    Validation context may carry ``now`` (a UTC datetime) so that the
    future-timestamp rule is testable and consistent across a batch.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)

    event_id: UUID
    schema_version: Literal[1]
    ts: datetime
    gateway_id: Annotated[str, Field(min_length=1, max_length=128, strict=True)]
    region: Annotated[str, Field(strict=True, max_length=128)] | None
    model: Annotated[str, Field(min_length=1, max_length=200, strict=True)]
    provider: Annotated[str, Field(min_length=1, max_length=100, strict=True)]
    stream: StrictBool
    status: Status
    error_type: ErrorType | None
    http_status: Annotated[StrictInt, Field(ge=100, le=599)]
    ttft_ms: DurationMs | None
    latency_ms: DurationMs
    input_tokens: TokenCount
    output_tokens: TokenCount
    cached_input_tokens: TokenCount

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id_is_text(cls, v: Any) -> Any:
        if not isinstance(v, str | UUID):
            raise ValueError("must be a UUID string")
        return v

    @field_validator("schema_version", mode="before")
    @classmethod
    def _schema_version_is_int(cls, v: Any) -> Any:
        # Literal[1] alone takes True and 1.0 (lax mode: True == 1 == 1.0).
        if type(v) is not int:
            raise ValueError("must be the integer 1")
        return v

    @field_validator("ts", mode="before")
    @classmethod
    def _ts_is_rfc3339(cls, v: Any, info: ValidationInfo) -> Any:
        """RFC 3339 only, normalised to UTC with ms, at most 5 minutes ahead, 30 days back.

        One Python call per event on the hot path (the before-validator), with
        the conversions skipped when the input is already UTC with ms.
        """
        if isinstance(v, datetime):
            parsed = v
        elif isinstance(v, str):
            if not _RFC3339.fullmatch(v):
                raise ValueError("must be an RFC 3339 timestamp, e.g. 2026-01-01T00:00:00.000Z")
            try:
                parsed = datetime.fromisoformat(v.replace("z", "Z").replace("t", "T"))
            except ValueError:
                raise ValueError("must be an RFC 3339 timestamp") from None
        else:
            raise ValueError("must be an RFC 3339 timestamp string")
        tz = parsed.tzinfo
        if tz is None:
            raise ValueError("must carry a UTC offset (RFC 3339), e.g. 2026-01-01T00:00:00Z")
        if tz is not UTC:
            parsed = parsed.astimezone(UTC)
        # Stored with millisecond precision: truncate here so every path agrees.
        extra = parsed.microsecond % 1000
        if extra:
            parsed = parsed.replace(microsecond=parsed.microsecond - extra)
        now = (info.context or {}).get("now") or datetime.now(UTC)
        if parsed - now > FUTURE_TOLERANCE:
            raise ValueError("must not lie more than 5 minutes in the future")
        if now - parsed > MAX_EVENT_AGE:
            raise ValueError("must not lie more than 30 days in the past (events are kept 30 days)")
        return parsed

    @model_validator(mode="after")
    def _consistent(self) -> RequestEvent:
        if self.status == "ok" and self.error_type is not None:
            raise _FieldRule("error_type", "must be null when status is ok")
        if self.status == "error" and self.error_type is None:
            raise _FieldRule("error_type", "is required when status is error")
        if self.ttft_ms is not None and self.ttft_ms > self.latency_ms:
            raise _FieldRule("ttft_ms", "must be <= latency_ms")
        if self.cached_input_tokens > self.input_tokens:
            raise _FieldRule("cached_input_tokens", "must be <= input_tokens")
        return self


class _FieldRule(ValueError):
    """Raised from the model validator to name a field other than the model itself."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")
