"""What every ``meshclaw ingest`` source shares: attribution defaults, the report,
pseudonyms and the format v1 check of a mapped event."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from meshclaw.events import Event

MAX_PROBLEMS = 100


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """Attribution for records that do not carry their own."""

    org: str = "default"
    team: str = "unknown"
    user: str = "unknown"
    agent: str = "unknown"
    pseudonymise: bool = True


@dataclass(kw_only=True)
class IngestReport:
    records: int = 0
    """Source records seen (spans or spend-log rows)."""
    events: int = 0
    """Events written."""
    skipped: int = 0
    """Records that could not be mapped (``problems`` lists the first ones)."""
    ignored: int = 0
    """Spans that are not GenAI operations (HTTP, database, ...)."""
    unattributed: int = 0
    """OTel spans mapped without their trace's ``invoke_agent`` span, which came too far
    after them in the file (``_ingest_otel.WAITING``); 0 for LiteLLM."""
    problems: list[str] = field(default_factory=list)

    def problem(self, where: str, message: str) -> None:
        self.skipped += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {message}")


class _Skip(Exception):
    """This record cannot be mapped; the message says why."""


@functools.lru_cache(maxsize=65536)
def _pseudo_cached(value: str) -> str:
    return "u_" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _pseudo(value: str, defaults: Defaults) -> str:
    if not defaults.pseudonymise or value in ("unknown", "external", "system"):
        return value
    return _pseudo_cached(value)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _validated(data: dict[str, Any]) -> Event:
    try:
        event: Event = msgspec.convert(data, type=Event)
    except msgspec.ValidationError as exc:
        raise _Skip(f"not a valid {data.get('kind')} event: {exc}") from None
    return event
