"""Reading records for verification and export: fast, and robust to damaged values.

Plain SQL, without SQLAlchemy's type processing: verifying a million records is
dominated by per-row overhead, and a damaged value (JSON that no longer parses, a
timestamp that is no longer a timestamp) must become a reported bad record, not a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from meshclaw.audit.canonical import format_ts
from meshclaw.audit.verify import RecordView, withheld_view
from meshclaw.clock import as_utc

_SQL = (
    "SELECT seq, id, ts, org_id, action, outcome, actor_user_id, actor_agent_id, resource, "
    "CAST(details AS TEXT), salt, body_sha256, leaf_hash FROM audit_events "
    "WHERE seq >= :start AND seq <= :end ORDER BY seq"
)


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        return format_ts(as_utc(value))
    raw = str(value)
    # SQLite keeps "YYYY-MM-DD HH:MM:SS.ffffff" (UTC, no zone); slice it, do not parse.
    if len(raw) == 26 and raw[10] == " " and raw[19] == ".":
        return f"{raw[:10]}T{raw[11:]}Z"
    try:
        return format_ts(as_utc(datetime.fromisoformat(raw)))
    except ValueError:
        return raw  # not a time any more: the leaf check will name this record


_MAX_SAFE_INT = 2**53 - 1


def _details(raw: str | None) -> tuple[dict[str, Any], bool]:
    """Parsed details, and whether ``json`` re-encodes them exactly as JCS would.

    The parser's hooks see every number, so floats and huge integers are noticed while
    parsing instead of by walking the result again (the hot spot of verifying 1 M records).
    """
    plain = raw is None or raw.isascii()  # ASCII keys sort the same in JCS

    def on_float(text: str) -> float:
        nonlocal plain
        plain = False
        return float(text)

    def on_int(text: str) -> int:
        nonlocal plain
        value = int(text)
        if not -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            plain = False
        return value

    try:
        value = json.loads(raw, parse_float=on_float, parse_int=on_int) if raw is not None else {}
    except (json.JSONDecodeError, ValueError):
        value = None
    if not isinstance(value, dict):
        # Anything but an object cannot be what was hashed; keep it so the hash check fails.
        return {"\u0000unreadable": raw}, False
    return value, plain


def record_views(
    session: Session, *, start_seq: int = 1, end_seq: int | None = None, org_id: str | None = None
) -> Iterator[RecordView]:
    """Stream records in seq order; with ``org_id``, other orgs' records are withheld.

    A withheld record is only its place and leaf hash (``withheld_view``), redacted or
    not: its header would tell when another org did what, and whether its redaction was
    authorised is that org's to check (its ``audit.redact`` records are its own).
    """
    conn = session.connection().execution_options(stream_results=True, yield_per=5000)
    result = conn.execute(text(_SQL), {"start": start_seq, "end": end_seq or 2**62})
    for seq, id_, ts, org, action, outcome, user, agent, resource, raw, salt, bh, lh in result:
        if org_id is not None and org is not None and org != org_id:
            yield withheld_view(seq, lh)
            continue
        details, plain = _details(raw)
        yield RecordView(
            seq=seq,
            id=id_,
            ts=_ts(ts),
            org_id=org,
            action=action,
            outcome=outcome,
            actor_user_id=user,
            actor_agent_id=agent,
            resource=resource,
            details=details,
            plain_details=plain,
            salt=salt,
            body_sha256=bh,
            leaf_hash=lh,
        )
