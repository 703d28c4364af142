"""What credit a finding concerns, and so what it withholds from the leaderboards.

A finding is about one person (its ``subject``) and concerns only part of their credit:

- ``recheck_failing`` (raised by the platform): the one outcome whose durability re-check
  keeps failing (``evidence["outcome"]``);
- ``deadline_burst``: the person's outcomes in the measurement weeks it names (each week
  from the cut-off before it up to its own cut-off);
- every other scan detector: the person's outcomes in the period the scan saw of them
  (from their first to just after their last event in the scanned history); work done
  after that period is not in question;
- a finding without a recorded scope (a hand-written findings file, a row from before
  scopes were recorded): all of the person's credit (the conservative reading).

The scan writes the scope into each finding's evidence under ``"scope"``, so a reviewer
sees it and the offline JSON carries it::

    "scope": {"periods": [{"from": "2026-01-05T09:00:00Z", "until": "2026-01-26T17:00:00Z"}]}
    "scope": {"outcomes": ["out_123"]}

Periods are half-open (``from <= ts < until``). When a later scan refreshes a pending
finding, the periods are merged, so credit already in question stays in question.

The finding's status decides how the credit is withheld: ``open`` and ``under_review``
(or no status, offline) hold it *pending review* (shown as such on the boards);
``confirmed`` keeps it out of the score without showing it as pending (a reviewer decided);
``dismissed`` restores it. The platform (``FindingsService.withheld``) and the offline
path (``analytics.withheld_from_findings`` / ``withheld_from_scan``) both build their
``Withholding`` values here, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SCOPE = "scope"
"""The evidence key the scope is recorded under."""
RECHECK_FAILING = "recheck_failing"
"""Raised by the platform, not by a scan: an outcome's durability re-check kept failing
past its grace (``outcomes.recheck``), so that outcome's credit waits for a reviewer."""
DEADLINE_BURST = "deadline_burst"
RESTORING = frozenset({"dismissed", "resolved_dismissed"})
"""Statuses that give the credit back (a reviewer dismissed the finding)."""
CONFIRMED = "confirmed"
WEEK = timedelta(days=7)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, order=True)
class Period:
    """``start <= ts < until`` (UTC)."""

    start: datetime
    until: datetime

    def to_json(self) -> dict[str, str]:
        return {"from": _iso(self.start), "until": _iso(self.until)}


@dataclass(frozen=True, kw_only=True)
class Withholding:
    """Credit of ``user`` held back by a finding: their outcomes in ``periods`` (any time
    when None) and among ``outcomes`` (any when None)."""

    user: str
    periods: tuple[Period, ...] | None = None
    outcomes: frozenset[str] | None = None
    confirmed: bool = False
    """A reviewer confirmed the finding: out of the score, not shown as pending review."""

    @classmethod
    def everything(cls, user: str, *, confirmed: bool = False) -> Withholding:
        """All of ``user``'s credit (a finding without a recorded scope)."""
        return cls(user=user, confirmed=confirmed)

    def covers(self, user: str, outcome: str, ts: datetime) -> bool:
        """Whether the outcome ``outcome`` of ``user`` at ``ts`` is held back."""
        if user != self.user:
            return False
        if self.outcomes is not None and outcome not in self.outcomes:
            return False
        return self.periods is None or any(p.start <= ts < p.until for p in self.periods)


def scan_scope(
    detector: str, evidence: Mapping[str, Any], first: datetime, last: datetime
) -> dict[str, Any]:
    """The scope a scan records for one finding about a person seen from ``first`` to
    ``last`` in the scanned history (see the module docstring)."""
    periods: list[Period] = []
    if detector == DEADLINE_BURST:
        for week in evidence.get("weeks") or ():
            cutoff = _parse(week.get("cutoff")) if isinstance(week, Mapping) else None
            if cutoff is not None:
                periods.append(Period(cutoff - WEEK, cutoff))
    if not periods:
        start = first.replace(microsecond=0)
        periods.append(Period(start, last.replace(microsecond=0) + _SECOND))
    return {"periods": [p.to_json() for p in _merged(periods)]}


def merge_scope(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` evidence, its scope widened by ``old``'s (a pending finding refreshed by a
    later scan keeps the credit it already held back)."""
    out = dict(new)
    before, after = (old or {}).get(SCOPE), new.get(SCOPE)
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return out
    merged: dict[str, Any] = dict(after)
    try:
        old_periods, new_periods = _periods(before), _periods(after)
    except ValueError:
        return out
    if old_periods is not None and new_periods is not None:
        merged["periods"] = [p.to_json() for p in _merged([*old_periods, *new_periods])]
    ids_before, ids_after = before.get("outcomes"), after.get("outcomes")
    if isinstance(ids_before, list) and isinstance(ids_after, list):
        merged["outcomes"] = sorted({*map(str, ids_before), *map(str, ids_after)})
    out[SCOPE] = merged
    return out


def withholding_of(
    subject: str, detector: str, evidence: Mapping[str, Any] | None, status: str | None
) -> Withholding | None:
    """What a finding in ``status`` holds back of ``subject``'s credit (None once
    dismissed). ``ValueError`` when a recorded scope is malformed."""
    if status in RESTORING:
        return None
    confirmed = status == CONFIRMED
    evidence = evidence or {}
    scope = evidence.get(SCOPE)
    if scope is None:
        outcome = evidence.get("outcome")
        if detector == RECHECK_FAILING and isinstance(outcome, str):
            return Withholding(user=subject, outcomes=frozenset({outcome}), confirmed=confirmed)
        return Withholding.everything(subject, confirmed=confirmed)
    if not isinstance(scope, Mapping):
        raise ValueError(f'{detector}: "scope" must be an object with "periods" or "outcomes"')
    ids = scope.get("outcomes")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ValueError(f'{detector}: scope "outcomes" must be a list of outcome ids')
    periods = _periods(scope, detector)
    return Withholding(
        user=subject,
        periods=periods,
        outcomes=frozenset(ids) if ids is not None else None,
        confirmed=confirmed,
    )


def lenient_withholding(
    subject: str, detector: str, evidence: Mapping[str, Any] | None, status: str | None
) -> Withholding | None:
    """``withholding_of``, reading a malformed scope as all of the person's credit (the
    platform's own rows: never fail a leaderboard over one finding)."""
    try:
        return withholding_of(subject, detector, evidence, status)
    except ValueError:
        return Withholding.everything(subject, confirmed=status == CONFIRMED)


def _periods(scope: Mapping[str, Any], what: str = "scope") -> tuple[Period, ...] | None:
    raw = scope.get("periods")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValueError(f'{what}: scope "periods" must be a list of {{"from", "until"}}')
    periods = []
    for item in raw:
        start = _parse(item.get("from")) if isinstance(item, Mapping) else None
        until = _parse(item.get("until")) if isinstance(item, Mapping) else None
        if start is None or until is None or until <= start:
            raise ValueError(
                f'{what}: each scope period needs "from" before "until" (ISO 8601 times), '
                f"not {item!r}"
            )
        periods.append(Period(start, until))
    return tuple(_merged(periods))


def _merged(periods: Iterable[Period]) -> list[Period]:
    """Sorted, overlapping or touching periods joined."""
    out: list[Period] = []
    for p in sorted(periods):
        if out and p.start <= out[-1].until:
            out[-1] = Period(out[-1].start, max(out[-1].until, p.until))
        else:
            out.append(p)
    return out


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _iso(value: datetime) -> str:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"
