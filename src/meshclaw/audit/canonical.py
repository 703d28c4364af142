"""Canonical bytes of an audit record (RFC 8785), and the hashes built on them.

A record is split in two so that retention can remove personal data without breaking the
tree:

* the **body** (who acted, on what, with which details) is personal data. It is
  committed to by ``body_sha256 = SHA-256(JCS(body + salt))``; the random salt is kept
  with the body and deleted with it, so a redacted body cannot be guessed back from its
  hash.
* the **header** (sequence number, id, time, org, action, outcome, body hash) is what the
  Merkle leaf commits to: ``leaf = SHA-256(0x00 || JCS(header))``.

A redacted record keeps its header and body hash, so its leaf is still recomputed and
checked. ``JCS`` is RFC 8785 JSON canonicalisation: sorted keys, no whitespace, ES6
number formatting, so any implementation reproduces the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785

from meshclaw.audit.merkle import hash_leaf
from meshclaw.errors import RuntimeFailure

FORMAT_VERSION = 1


class CanonicalError(RuntimeFailure):
    """A record cannot be canonicalised (a non-JSON value, an integer beyond 2**53, NaN)."""


_MAX_SAFE_INT = 2**53 - 1
_encode_str = json.encoder.encode_basestring
_fast = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _plain(value: Any) -> bool:
    """True when ``json`` writes ``value`` exactly as RFC 8785 does.

    That holds for strings, booleans, null, integers within 2**53, and objects whose keys
    are ASCII (code-point order equals JCS's UTF-16 order). Floats are left to the
    ``rfc8785`` package (ES6 number formatting); so are large integers, which it refuses.
    Exact type checks on purpose: subclasses (enums, ...) take the slow, strict path.
    """
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT:
                return False
        elif t is dict:
            for k, x in v.items():
                if type(k) is not str or not k.isascii():
                    return False
                stack.append(x)
        elif t is list:
            stack.extend(v)
        else:
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of ``value``; a fast path for values without floats."""
    if _plain(value):
        try:
            return _fast.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 say what is wrong
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalError(f"audit record is not canonical JSON: {exc}") from exc


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds: the precision both stores keep."""
    if ts.tzinfo is None:
        raise CanonicalError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_salt() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, kw_only=True)
class Body:
    """The personal part of a record; ``None`` fields mean redacted when ``salt`` is None."""

    actor_user_id: str | None
    actor_agent_id: str | None
    resource: str
    details: dict[str, Any]
    salt: str


def canonical_details(details: dict[str, Any]) -> str:
    """JCS text of a record's details (or raise ``CanonicalError``).

    The sink stores this text as the JSON column's value and hashes the same text, so a
    record is canonicalised once; reading the column back gives the same object.
    """
    if not isinstance(details, dict):
        raise CanonicalError(f"audit details must be an object, not {type(details).__name__}")
    return canonical_json(details).decode("utf-8")


def _str(value: str | None) -> str:
    """A JSON string (or null) exactly as JCS writes it: the same escapes as ``json``."""
    return "null" if value is None else _encode_str(value)


def body_digest(
    actor_user_id: str | None,
    actor_agent_id: str | None,
    resource: str,
    details: dict[str, Any],
    salt: str,
    *,
    plain: bool = False,
) -> str:
    """Hex SHA-256 of JCS({actor_agent_id, actor_user_id, details, resource, salt}).

    ``plain`` promises ``details`` holds no floats, huge integers or non-ASCII keys (the
    caller checked while parsing), which skips the check here.
    """
    try:
        detail_json = _fast.encode(details) if plain else canonical_json(details).decode()
    except (UnicodeEncodeError, TypeError, AttributeError):
        detail_json = None
    return body_digest_json(actor_user_id, actor_agent_id, resource, detail_json, salt, details)


def body_digest_json(
    actor_user_id: str | None,
    actor_agent_id: str | None,
    resource: str,
    details_json: str | None,
    salt: str,
    details: dict[str, Any] | None = None,
) -> str:
    """``body_digest`` with the details already as JCS text (``canonical_details``).

    The body's other fields are written around that text by hand; a value ``json`` would
    not write as JCS does (a lone surrogate, a non-string) falls back to ``rfc8785`` on
    the whole body, from ``details`` (or the text parsed back) when given.
    """
    try:
        if details_json is None:
            raise TypeError
        text = (
            f'{{"actor_agent_id":{_str(actor_agent_id)},"actor_user_id":{_str(actor_user_id)},'
            f'"details":{details_json},"resource":{_str(resource)},'
            f'"salt":{_str(salt)}}}'
        )
        data = text.encode("utf-8")
    except (UnicodeEncodeError, TypeError, AttributeError):
        if details is None:
            details = json.loads(details_json) if details_json is not None else {}
        data = canonical_json(
            {
                "actor_agent_id": actor_agent_id,
                "actor_user_id": actor_user_id,
                "details": details,
                "resource": resource,
                "salt": salt,
            }
        )
    return hashlib.sha256(data).hexdigest()


def body_hash(body: Body) -> str:
    return body_digest(
        body.actor_user_id, body.actor_agent_id, body.resource, body.details, body.salt
    )


def header_json(
    seq: int,
    id: str,
    ts: str,
    org_id: str | None,
    action: str,
    outcome: str,
    body_sha256: str,
) -> bytes:
    """JCS of the header object (keys in JCS order, written out by hand for speed)."""
    try:
        if type(seq) is not int or not 0 <= seq <= _MAX_SAFE_INT:
            raise TypeError
        return (
            f'{{"action":{_str(action)},"body_sha256":{_str(body_sha256)},"id":{_str(id)},'
            f'"org_id":{_str(org_id)},"outcome":{_str(outcome)},"seq":{seq},"ts":{_str(ts)},'
            f'"v":{FORMAT_VERSION}}}'
        ).encode()
    except (UnicodeEncodeError, TypeError, AttributeError):
        return canonical_json(
            {
                "v": FORMAT_VERSION,
                "seq": seq,
                "id": id,
                "ts": ts,
                "org_id": org_id,
                "action": action,
                "outcome": outcome,
                "body_sha256": body_sha256,
            }
        )


@dataclass(frozen=True, kw_only=True)
class Header:
    """What the Merkle leaf commits to."""

    seq: int
    """1-based position in the log; the leaf index is ``seq - 1``."""
    id: str
    ts: str
    """``format_ts`` of the record time."""
    org_id: str | None
    action: str
    outcome: str
    body_sha256: str

    def canonical(self) -> bytes:
        return header_json(
            self.seq, self.id, self.ts, self.org_id, self.action, self.outcome, self.body_sha256
        )

    def leaf_hash(self) -> bytes:
        return hash_leaf(self.canonical())
