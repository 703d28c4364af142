"""Export bundles: JSON Lines an outside auditor verifies with only the public key.

Line 1 is the header, then one ``checkpoint`` line per signed note, then one ``record``
line per record in seq order (so a verifier streams the records in one pass)::

    {"format": "meshclaw-audit-bundle", "v": 2, "origin": ..., "start_size": k,
     "start_frontier": [...], "end_size": n, "verifier_key": ...}
    {"type": "checkpoint", "size": n, "note": "..."}
    {"type": "record", "seq": k+1, ..., "body": "present" | "redacted"}
    {"type": "record", "seq": k+2, "body": "withheld", "leaf_hash": "..."}

A record of another org is ``withheld``: only its position and leaf hash, nothing of its
header (time, org, action, outcome) or body. The verifier takes that leaf as given; the
signed roots vouch for it, so changing it still fails the next checkpoint. Version 1
bundles (withheld records with their headers) are still read.

Nothing in the bundle is trusted: ``verifier_key`` is informational (the auditor brings
their own copy), and ``start_frontier`` (the tree before the first record of a partial
export) only makes the next checkpoint's root fail if it is wrong.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from meshclaw.audit.checkpoint import Verifier
from meshclaw.audit.merkle import Frontier, ProofError
from meshclaw.audit.verify import (
    Problem,
    RecordView,
    Report,
    SignedNote,
    verify_log,
    withheld_view,
)
from meshclaw.errors import UserError

FORMAT = "meshclaw-audit-bundle"
VERSION = 2
READABLE = (1, 2)


class BundleError(UserError):
    """A bundle line is not what the format says; carries the line number."""


def write_bundle(
    out: TextIO,
    *,
    origin: str,
    verifier_key: str,
    start: Frontier,
    end_size: int,
    records: Iterable[RecordView],
    notes: Iterable[tuple[int, str]],
) -> tuple[int, int]:
    """Write a bundle; return (records written, of which bodies withheld)."""
    header = {
        "format": FORMAT,
        "v": VERSION,
        "origin": origin,
        "verifier_key": verifier_key,
        "start_size": start.size,
        "start_frontier": start.to_hex(),
        "end_size": end_size,
    }
    out.write(json.dumps(header, ensure_ascii=False) + "\n")
    for size, note in notes:
        out.write(json.dumps({"type": "checkpoint", "size": size, "note": note}) + "\n")
    written = withheld = 0
    for r in records:
        if r.withheld:
            out.write(json.dumps(_withheld_line(r), separators=(",", ":")) + "\n")
            written += 1
            withheld += 1
            continue
        body = "redacted" if r.salt is None else "present"
        line: dict[str, Any] = {
            "type": "record",
            "seq": r.seq,
            "id": r.id,
            "ts": r.ts,
            "org_id": r.org_id,
            "action": r.action,
            "outcome": r.outcome,
            "body": body,
            "body_sha256": r.body_sha256,
            "leaf_hash": r.leaf_hash,
        }
        if body == "present":
            line |= {
                "actor_user_id": r.actor_user_id,
                "actor_agent_id": r.actor_agent_id,
                "resource": r.resource,
                "details": r.details,
                "salt": r.salt,
            }
        out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        written += 1
    return written, withheld


def _withheld_line(r: RecordView) -> dict[str, Any]:
    return {"type": "record", "seq": r.seq, "body": "withheld", "leaf_hash": r.leaf_hash}


@dataclass(frozen=True, kw_only=True)
class BundleHeader:
    origin: str
    start: Frontier
    end_size: int
    verifier_key: str | None


_REQUIRED = ("seq", "id", "ts", "action", "outcome", "body", "body_sha256", "leaf_hash")
_REQUIRED_WITHHELD = ("seq", "body", "leaf_hash")


def _record(obj: dict[str, Any], lineno: int) -> RecordView:
    body = obj.get("body")
    required = _REQUIRED_WITHHELD if body == "withheld" else _REQUIRED
    missing = [k for k in required if k not in obj]
    if missing:
        raise BundleError(f"line {lineno}: record lacks {', '.join(missing)}")
    if body not in ("present", "redacted", "withheld"):
        raise BundleError(f"line {lineno}: body must be present, redacted or withheld")
    if body == "withheld":
        if not isinstance(obj["seq"], int):
            raise BundleError(f"line {lineno}: seq must be an integer")
        return withheld_view(obj["seq"], str(obj["leaf_hash"]))
    present = body == "present"
    if present and not isinstance(obj.get("salt"), str):
        raise BundleError(f"line {lineno}: a present body needs its salt")
    if not isinstance(obj["seq"], int):
        raise BundleError(f"line {lineno}: seq must be an integer")
    details = obj.get("details") if present else None
    if details is not None and not isinstance(details, dict):
        raise BundleError(f"line {lineno}: details must be an object")
    return RecordView(
        seq=obj["seq"],
        id=str(obj["id"]),
        ts=str(obj["ts"]),
        org_id=obj.get("org_id"),
        action=str(obj["action"]),
        outcome=str(obj["outcome"]),
        actor_user_id=obj.get("actor_user_id") if present else None,
        actor_agent_id=obj.get("actor_agent_id") if present else None,
        resource=obj.get("resource") if present else None,
        details=details,
        salt=obj["salt"] if present else None,
        withheld=body == "withheld",
        body_sha256=str(obj["body_sha256"]),
        leaf_hash=str(obj["leaf_hash"]),
    )


class _Reader:
    """Reads the header and the checkpoints up front, then streams the records."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = enumerate(lines, start=1)
        self.notes: list[SignedNote] = []
        self.header = self._header()
        self._first: tuple[int, dict[str, Any]] | None = None
        for lineno, obj in self._objects():
            if obj.get("type") != "checkpoint":
                self._first = (lineno, obj)
                break
            if not isinstance(obj.get("note"), str):
                raise BundleError(f"line {lineno}: checkpoint without a note")
            size = obj.get("size")
            self.notes.append(
                SignedNote(
                    note=obj["note"],
                    row_size=size if isinstance(size, int) else None,
                    label=f"line {lineno}",
                )
            )

    def _objects(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for lineno, raw in self._lines:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise BundleError(f"line {lineno}: not JSON ({exc.msg}): damaged") from None
            if not isinstance(obj, dict):
                raise BundleError(f"line {lineno}: not a JSON object")
            yield lineno, obj

    def _header(self) -> BundleHeader:
        first = next(self._lines, None)
        if first is None:
            raise BundleError("line 1: the bundle is empty")
        try:
            obj = json.loads(first[1])
        except json.JSONDecodeError as exc:
            raise BundleError(f"line 1: not JSON: {exc.msg}") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise BundleError(f"line 1: not a {FORMAT} header")
        if obj.get("v") not in READABLE:
            raise BundleError(f"line 1: bundle version {obj.get('v')!r} is not {VERSION}")
        try:
            start = Frontier.from_hex(int(obj["start_size"]), obj["start_frontier"])
            return BundleHeader(
                origin=str(obj["origin"]),
                start=start,
                end_size=int(obj["end_size"]),
                verifier_key=obj.get("verifier_key"),
            )
        except (KeyError, TypeError, ValueError, ProofError) as exc:
            raise BundleError(f"line 1: bad header: {exc}") from None

    def records(self) -> Iterator[RecordView]:
        pending = [self._first] if self._first is not None else []
        for lineno, obj in itertools.chain(pending, self._objects()):
            kind = obj.get("type")
            if kind == "checkpoint":
                raise BundleError(f"line {lineno}: checkpoint after the records")
            if kind != "record":
                raise BundleError(f"line {lineno}: unknown line type {kind!r}")
            yield _record(obj, lineno)


def verify_bundle(path: Path, verifier: Verifier, held: Sequence[SignedNote] = ()) -> Report:
    """Verify an exported bundle offline, with only the verifier key.

    ``held``: checkpoints kept outside the log (a witness's, syslog's), compared too.
    """
    with path.open(encoding="utf-8") as f:
        reader = _Reader(f)
        report = verify_log(
            reader.records(),
            [*reader.notes, *held],
            verifier,
            origin=reader.header.origin,
            start=reader.header.start,
            expected_size=reader.header.end_size,
        )
    if report.ok and report.checkpoints == 0 and report.records:
        report.ok = False
        report.problem = Problem(
            kind="checkpoint",
            message="the bundle has no signed checkpoint covering its records",
        )
    return report
