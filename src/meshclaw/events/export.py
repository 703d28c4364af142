"""Write one org's store history as event format v1 (``../shared/DESIGN.md``).

``org_events(db, org_id, since=..., until=...)`` yields wire-form events (dicts) for the
runs that *ended* and were created in ``[since, until)``, each run followed by its calls
and outcomes, and after each batch of runs the feedback on those outcomes (recorded
before ``until``). ``export_org`` writes them as JSON Lines. Runs are read in keyset
pages of ``batch`` (created time, id), and each page's steps, usage, outcomes and
feedback in one query each, so memory is one page, never the org.

How the store maps onto the format:

- ``run``: ``ts`` is when it started, ``status`` succeeded/failed/cancelled become
  ok/error/cancelled, ``task`` is the run's input text (no setting keeps texts out of
  the store; the reader turns it into a fingerprint and drops it), ``role`` the owner's
  job function when the directory has one.
- ``llm_call``: one per model step that was metered (its usage record): tokens,
  ``cost_usd`` from nano-dollars, latency, and ``prompt`` when the call carried what the
  person wrote: the system and user messages it added to the conversation (the step
  keeps them in ``request.new_messages``), i.e. the agent version's instructions and the
  run's input, which are the whole prompt of a run's first call. Later calls add only
  tool results to a conversation that already holds the model's own replies; they get no
  ``prompt``: those texts are not the person's writing (judging their density would judge
  the tools and the run's length), they are other people's data, and a call's full
  prompt would repeat the conversation so far. Whitespace runs become single spaces (the
  readers count words between spaces). Outputs are not exported.
- ``tool_call``: ``action`` is the scope the agent version's spec grants the tool,
  ``target`` the tool's connector and a hash of its arguments (the same call on the same
  resource has the same target; argument values never leave the store), ``status`` ok,
  error (also cancelled) or denied; ``recipients`` the people its outcomes address.
- ``outcome``: ``beneficiary`` is the first beneficiary other than the owner (else the
  owner), ``value`` the type's weight times the outcome's value (what a leaderboard
  counts), ``tool_call`` the write step that produced it.
- ``feedback``: ``by`` is a user id, ``external`` or ``system`` (also silence).

``user`` is the person's user id (stable and pseudonymous), ``team`` their team id, or
``NO_TEAM`` for people outside every team.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from meshclaw.clock import as_utc
from meshclaw.events._reader import EventWriter
from meshclaw.outcomes.models import Outcome, OutcomeFeedback
from meshclaw.spec.loader import parse_stored_spec
from meshclaw.store.db import Database
from meshclaw.store.models import AgentVersion, Run, RunStep, UsageRecord, User

NO_TEAM = "no-team"
"""``team`` of a person who is in no team (the format needs one)."""
BATCH = 500
NANO = 1_000_000_000
RUN_STATUS = {"succeeded": "ok", "failed": "error", "cancelled": "cancelled"}
STEP_STATUS = {"ok": "ok", "error": "error", "denied": "denied", "cancelled": "error"}
VERDICTS = frozenset({"accepted", "rejected", "reverted", "reopened", "rolled_back", "cancelled"})


@dataclass(kw_only=True)
class ExportSummary:
    """Events written, by kind."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class _Person:
    team: str
    role: str | None


def export_org(
    db: Database,
    org_id: str,
    dest: str | Path | IO[bytes],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    weights: Mapping[str, float] | None = None,
    batch: int = BATCH,
) -> ExportSummary:
    """Write the org's history in ``[since, until)`` to ``dest`` (JSON Lines)."""
    summary = ExportSummary()
    with EventWriter(dest) as writer:
        for event in org_events(db, org_id, since=since, until=until, weights=weights, batch=batch):
            writer.write(event)
            kind = event["kind"]
            summary.counts[kind] = summary.counts.get(kind, 0) + 1
    return summary


def org_events(
    db: Database,
    org_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    weights: Mapping[str, float] | None = None,
    batch: int = BATCH,
) -> Iterator[dict[str, Any]]:
    """The org's events in ``[since, until)`` (see the module docstring), page by page."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    weights = dict(weights or {})
    scopes: dict[str, dict[str, str]] = {}
    after: tuple[datetime, str] | None = None
    with db.session() as session:
        people = _people(session, org_id)
        while True:
            page = _run_page(session, org_id, since, until, after, batch)
            if not page:
                return
            after = (page[-1].created_at, page[-1].id)
            _load_scopes(session, scopes, {r.agent_version_id for r in page})
            yield from _page_events(session, org_id, page, people, scopes, weights, until)
            session.expunge_all()  # a page's rows are done with: memory stays one page


def _people(session: Session, org_id: str) -> dict[str, _Person]:
    rows = session.execute(
        select(User.id, User.team_id, User.job_function).where(User.org_id == org_id)
    )
    return {uid: _Person(team or NO_TEAM, job or None) for uid, team, job in rows}


def _run_page(
    session: Session,
    org_id: str,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    batch: int,
) -> list[Run]:
    query = select(Run).where(
        Run.org_id == org_id, Run.status.in_(RUN_STATUS), Run.ended_at.is_not(None)
    )
    if since is not None:
        query = query.where(Run.created_at >= since)
    if until is not None:
        query = query.where(Run.created_at < until)
    if after is not None:
        query = query.where(tuple_(Run.created_at, Run.id) > tuple_(*after))
    return list(session.scalars(query.order_by(Run.created_at, Run.id).limit(batch)))


def _load_scopes(session: Session, scopes: dict[str, dict[str, str]], versions: set[str]) -> None:
    """Per agent version: the scope (read/write) its spec grants each tool."""
    missing = sorted(versions - scopes.keys())
    if not missing:
        return
    for vid, text in session.execute(
        select(AgentVersion.id, AgentVersion.spec_yaml).where(AgentVersion.id.in_(missing))
    ):
        spec = parse_stored_spec(text)
        scopes[vid] = {g.name: str(g.scope) for g in spec.tools}


def _page_events(
    session: Session,
    org_id: str,
    runs: list[Run],
    people: Mapping[str, _Person],
    scopes: Mapping[str, Mapping[str, str]],
    weights: Mapping[str, float],
    until: datetime | None,
) -> Iterator[dict[str, Any]]:
    ids = [r.id for r in runs]
    steps: dict[str, list[RunStep]] = {}
    for step in session.scalars(
        select(RunStep).where(RunStep.run_id.in_(ids)).order_by(RunStep.run_id, RunStep.seq)
    ):
        steps.setdefault(step.run_id, []).append(step)
    usage = {
        u.step_id: u
        for u in session.scalars(
            select(UsageRecord).where(UsageRecord.run_id.in_(ids), UsageRecord.kind == "model")
        )
        if u.step_id
    }
    outcomes: dict[str, list[Outcome]] = {}
    for outcome in session.scalars(
        select(Outcome).where(Outcome.run_id.in_(ids)).order_by(Outcome.created_at, Outcome.id)
    ):
        outcomes.setdefault(outcome.run_id, []).append(outcome)
    for run in runs:
        person = people.get(run.user_id, _Person(NO_TEAM, None))
        who = {
            "v": 1, "org": org_id, "team": run.team_id or person.team, "user": run.user_id,
            "agent": run.agent_id, "run": run.id,
        }  # fmt: skip
        yield _run(run, who, person)
        mine = outcomes.get(run.id, [])
        grants = scopes.get(run.agent_version_id, {})
        for step in steps.get(run.id, []):
            if step.kind == "model":
                record = usage.get(step.id)
                if record is not None:
                    yield _llm_call(step, record, who, prompt_of(step.request))
            elif step.status in STEP_STATUS:
                yield _tool_call(step, who, grants, [o for o in mine if o.step_id == step.id])
        for outcome in mine:
            yield _outcome(outcome, who, weights)
    produced = [o for group in outcomes.values() for o in group]
    yield from _feedback(session, org_id, produced, people, until)


def _ts(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def _run(run: Run, who: dict[str, Any], person: _Person) -> dict[str, Any]:
    assert run.ended_at is not None  # selected so
    event = {
        **who, "kind": "run", "id": run.id, "ts": _ts(run.started_at or run.created_at),
        "trigger": run.trigger, "ended_at": _ts(run.ended_at),
        "status": RUN_STATUS[run.status], "task": run.input,
    }  # fmt: skip
    if person.role:
        event["role"] = person.role
    return event


PROMPT_ROLES = frozenset({"system", "user"})
"""The messages a person writes: the agent's instructions and the run's input."""


def prompt_of(request: Mapping[str, Any] | None) -> str | None:
    """The person's text a model step added (see the module docstring), or None."""
    messages = (request or {}).get("new_messages")
    if not isinstance(messages, list):
        return None
    texts = [
        m["content"]
        for m in messages
        if isinstance(m, Mapping) and m.get("role") in PROMPT_ROLES
        and isinstance(m.get("content"), str)
    ]  # fmt: skip
    return " ".join(" ".join(texts).split()) or None


def _llm_call(
    step: RunStep, usage: UsageRecord, who: dict[str, Any], prompt: str | None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        **who, "kind": "llm_call", "id": step.id, "ts": _ts(step.started_at),
        "provider": usage.provider or "unknown", "model": usage.model or step.name,
        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
        "cost_usd": usage.cost_nano_usd / NANO, "latency_ms": usage.latency_ms,
    }  # fmt: skip
    if usage.cached_tokens:
        event["cache_read_tokens"] = usage.cached_tokens
    if usage.reasoning_tokens:
        event["reasoning_tokens"] = usage.reasoning_tokens
    if prompt is not None:
        event["prompt"] = prompt
    return event


def _scope(grants: Mapping[str, str], tool: str, produced: bool) -> str:
    scope = grants.get(tool) or grants.get(f"{tool.split('.', 1)[0]}.*")
    if scope in ("read", "write"):
        return scope
    return "write" if produced else "read"


def target_of(tool: str, arguments: Any) -> str:
    """``connector:<hash of the arguments>``: equal for the same call, values not shown."""
    text = json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)
    return f"{tool.split('.', 1)[0]}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _tool_call(
    step: RunStep, who: dict[str, Any], grants: Mapping[str, str], produced: list[Outcome]
) -> dict[str, Any]:
    event: dict[str, Any] = {
        **who, "kind": "tool_call", "id": step.id, "ts": _ts(step.started_at),
        "tool": step.name, "action": _scope(grants, step.name, bool(produced)),
        "target": target_of(step.name, (step.request or {}).get("arguments")),
        "status": STEP_STATUS[step.status],
    }  # fmt: skip
    recipients = sorted(
        {str(b) for o in produced for b in o.beneficiaries or [] if b and b != "external"}
    )
    if recipients:
        event["recipients"] = recipients
    return event


def beneficiary(owner: str, beneficiaries: Iterable[Any] | None) -> str:
    """The format has one beneficiary: anyone other than the owner, else the owner."""
    others = [str(b) for b in beneficiaries or [] if b != owner]
    return others[0] if others else owner


def _outcome(outcome: Outcome, who: dict[str, Any], weights: Mapping[str, float]) -> dict[str, Any]:
    event: dict[str, Any] = {
        **who, "kind": "outcome", "id": outcome.id, "ts": _ts(outcome.created_at),
        "type": outcome.type, "ref": outcome.ref,
        "beneficiary": beneficiary(outcome.user_id, outcome.beneficiaries),
        "verified": bool(outcome.verified),
        "value": max(0.0, weights.get(outcome.type, 1.0) * outcome.value),
    }  # fmt: skip
    if outcome.step_id:
        event["tool_call"] = outcome.step_id
    return event


def _by(by: str) -> str:
    if by.startswith("external"):
        return "external"
    return "system" if by in ("system", "silence") else by


def _feedback(
    session: Session,
    org_id: str,
    outcomes: list[Outcome],
    people: Mapping[str, _Person],
    until: datetime | None,
) -> Iterator[dict[str, Any]]:
    """Feedback on ``outcomes``; its ``user`` and ``team`` are the outcome owner's."""
    if not outcomes:
        return
    by_id = {o.id: o for o in outcomes}
    query = select(OutcomeFeedback).where(
        OutcomeFeedback.org_id == org_id, OutcomeFeedback.outcome_id.in_(list(by_id))
    )
    if until is not None:
        query = query.where(OutcomeFeedback.created_at < until)
    for row in session.scalars(query.order_by(OutcomeFeedback.created_at, OutcomeFeedback.id)):
        if row.verdict not in VERDICTS:
            continue
        outcome = by_id[row.outcome_id]
        yield {
            "v": 1, "kind": "feedback", "id": row.id, "ts": _ts(row.created_at), "org": org_id,
            "team": outcome.team_id or people.get(outcome.user_id, _Person(NO_TEAM, None)).team,
            "user": outcome.user_id,
            "agent": outcome.agent_id, "run": outcome.run_id, "outcome": outcome.id,
            "by": _by(row.by), "verdict": row.verdict,
        }  # fmt: skip
