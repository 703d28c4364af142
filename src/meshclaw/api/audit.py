"""``/v1/audit``: the tamper-evident audit log over HTTP.

Who may do what is Cedar's (``audit.read|verify|redact``, ``meshclaw.policy.roles``);
``AuditLog`` asks and keeps every answer to the caller's org (docs/audit.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from meshclaw.api.deps import Authed, PlatformDep, Timestamp
from meshclaw.audit.bundle import FORMAT
from meshclaw.audit.log import MAX_PAGE
from meshclaw.clock import as_utc

router = APIRouter(prefix="/v1/audit", tags=["audit"])

MAX_SEQ = 2**31 - 1
"""Sequence numbers and tree sizes are 32-bit in the store: anything larger is a 422 here,
not an overflow in the database driver."""
Seq = Annotated[int, Query(ge=1, le=MAX_SEQ)]


class RedactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    before: Timestamp
    """Redact bodies of records older than this."""


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


@router.get("/events")
def events(
    platform: PlatformDep,
    who: Authed,
    actor: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    outcome: str | None = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """Records of the caller's org, oldest first; page forwards with
    ``after=next_after``, or backwards with ``before=next_before`` (a large ``before``
    gives the newest page). ``after`` and ``before`` together are a 400."""
    page = platform.audit_log.query(
        who,
        actor=actor,
        action=action,
        resource=resource,
        outcome=outcome,
        since=_utc(since),
        until=_utc(until),
        after=after,
        before=before,
        limit=limit,
    )
    return {
        "entries": [asdict(e) for e in page.entries],
        "next_after": page.next_after,
        "next_before": page.next_before,
    }


@router.get("/verify")
def verify(platform: PlatformDep, who: Authed) -> dict[str, Any]:
    """Recompute the tree from the store and check every signed checkpoint."""
    report = platform.audit_log.verify(who)
    out = asdict(report)
    if report.problem is not None:
        out["problem"]["text"] = str(report.problem)
    return out


@router.get("/public-key")
def public_key(platform: PlatformDep, who: Authed) -> dict[str, str]:
    return {"verifier_key": platform.audit_log.public_key(), "origin": platform.audit_log.origin}


@router.get("/checkpoints")
def checkpoints(platform: PlatformDep, who: Authed) -> list[dict[str, Any]]:
    return [asdict(c) for c in platform.audit_log.checkpoints(who)]


@router.post("/checkpoints", status_code=201)
def sign_checkpoint(platform: PlatformDep, who: Authed) -> dict[str, Any]:
    return asdict(platform.audit_log.checkpoint(who))


@router.get("/proofs/inclusion")
def inclusion(
    platform: PlatformDep,
    who: Authed,
    seq: Seq,
    size: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> dict[str, Any]:
    """Inclusion proof of a record of the caller's org (404 for any other record)."""
    return platform.audit_log.inclusion_proof(who, seq, size)


@router.get("/proofs/consistency")
def consistency(
    platform: PlatformDep,
    who: Authed,
    old: Annotated[int, Query(ge=0, le=MAX_SEQ)],
    new: Seq,
) -> dict[str, Any]:
    return platform.audit_log.consistency_proof(who, old, new)


@router.get("/export")
def export(
    platform: PlatformDep,
    who: Authed,
    since: Timestamp | None = None,
    since_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> StreamingResponse:
    """A bundle (JSON Lines) that ``meshclaw audit verify --bundle`` checks offline."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", encoding="utf-8")  # noqa: SIM115
    try:
        platform.audit_log.export(who, spool, since=_utc(since), since_seq=since_seq)  # type: ignore[arg-type]
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    def lines() -> Iterator[str]:
        with spool:
            yield from spool

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{FORMAT}.jsonl"'},
    )


@router.post("/redact")
def redact(body: RedactIn, platform: PlatformDep, who: Authed) -> dict[str, Any]:
    """Retention: remove bodies of the org's old records, keep their hashes (platform admins)."""
    before = as_utc(body.before)
    return {"redacted": platform.audit_log.redact(who, before), "before": before}
