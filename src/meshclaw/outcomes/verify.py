"""Verification: turn a write's evidence into a verified outcome, or say why not.

A ``Verifier`` per outcome type checks *real evidence*: what the connector returned for
the write (``ToolResult.data["evidence"]``, recorded by the gateway, never the agent's
own words) and, where the state can change, the connector's current answer through a
``Lookup`` (a read tool such as ``tickets.get``). What cannot be verified is recorded
``unverified`` and earns nothing. ``recheck`` is the durability check: still done, or
the verdict that undoes it.

The ``Lookup`` is a seam: reads must go through the gateway (the choke point). When a run
ends, the executor hands the outcome service a reader bound to the run's gateway and
context (``ToolReadLookup``), so a verification read is authorised against the agent's
spec (which must grant the read tool), metered and audited like any call. A durability
re-check reads the same way, in the context of the outcome's (ended) run
(``RunExecutor.reader_for_ended_run``). ``InMemoryLookup`` ships for tests.

A re-check tells three answers apart: the record no longer holds (the undo verdict); it
holds, or the connector has no record (None); the read failed (``ReadFailed`` or any
other exception propagates: the service leaves the outcome due). A read the platform
refused (``errors.PolicyDenied``) propagates too: the service treats it like a failed
read (due again; past the grace it opens a ``recheck_failing`` finding).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshclaw.connectors.base import ToolResult
from meshclaw.outcomes.types import OutcomeType


class ReadFailed(Exception):
    """The read tool answered with an error (denied, not granted, failed)."""


class Lookup(Protocol):
    async def read(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """The connector's structured answer, or None if it has none; ``ReadFailed`` if
        the read itself failed."""
        ...


@dataclass(kw_only=True)
class InMemoryLookup:
    """Answers from a dict keyed by (tool, ref); records every call."""

    answers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def read(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append((tool, arguments))
        ref = next(iter(arguments.values()), "")
        return self.answers.get((tool, str(ref)))


ToolRead = Callable[[str, dict[str, Any]], Awaitable[ToolResult]]
"""Call a read tool through the gateway (``runtime.executor.ToolReader``)."""


class ToolReadLookup:
    """Reads through a ``runtime.executor.ToolReader``: the run's own gateway, so every
    verification read is authorised (the spec must grant the read tool), metered and
    audited like any other tool call."""

    def __init__(self, read: ToolRead) -> None:
        self._read = read

    async def read(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        result = await self._read(tool, arguments)
        if result.is_error:
            raise ReadFailed(result.content)
        structured = (result.data or {}).get("structured")
        if isinstance(structured, dict):
            return structured
        try:
            parsed = json.loads(result.content)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None


@dataclass(frozen=True, kw_only=True)
class Evidence:
    type: OutcomeType
    tool: str
    """The write tool that produced it."""
    owner: str
    """The owner's handle (mail address or login), to tell self-addressed outputs."""
    arguments: dict[str, Any]
    """The write's arguments."""
    data: dict[str, Any]
    """The connector's evidence."""


@dataclass(frozen=True, kw_only=True)
class Verification:
    verified: bool
    ref: str
    """The external id (Message-ID, ticket, deploy)."""
    beneficiaries: list[str] = field(default_factory=list)
    """Handles or addresses of who received it (mapped to user ids by the service)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """What was checked; ``reason`` when unverified."""


@dataclass(frozen=True)
class Undone:
    """A re-check's finding that an outcome no longer holds."""

    verdict: str
    """The feedback verdict that undoes it (the type's ``undo_verdict``)."""
    reason: str
    """What the read showed, e.g. "ticket is 'open', not resolved"."""


class Verifier(Protocol):
    async def verify(self, evidence: Evidence, lookup: Lookup | None) -> Verification: ...

    async def recheck(
        self, kind: OutcomeType, ref: str, owner: str, lookup: Lookup | None
    ) -> Undone | None:
        """Why the outcome no longer holds; None if it holds or cannot be told."""
        ...


def _ref_of(data: Mapping[str, Any], *keys: str) -> str:
    for key in (*keys, "ref", "id"):
        value = data.get(key)
        if isinstance(value, str | int) and str(value):
            return str(value)
    return ""


class MailSentVerifier:
    """A mail counts when the SMTP server accepted it for someone other than the sender.

    Evidence (built-in ``mail`` server): ``message_id`` and the *delivered* ``recipients``.
    A re-send of the same Message-ID (``duplicate``) is not a new outcome.
    """

    async def verify(self, evidence: Evidence, lookup: Lookup | None) -> Verification:
        data = evidence.data
        ref = _ref_of(data, "message_id")
        recipients = [r for r in data.get("recipients") or [] if isinstance(r, str)]
        if not ref:
            return Verification(verified=False, ref="", detail={"reason": "no Message-ID"})
        if data.get("duplicate"):
            return Verification(
                verified=False, ref=ref, detail={"reason": "already sent (same Message-ID)"}
            )
        if not recipients:
            return Verification(verified=False, ref=ref, detail={"reason": "no one received it"})
        return Verification(
            verified=True,
            ref=ref,
            beneficiaries=recipients,
            detail={"checked": "SMTP accepted the message", "delivered": len(recipients)},
        )

    async def recheck(
        self, kind: OutcomeType, ref: str, owner: str, lookup: Lookup | None
    ) -> Undone | None:
        return None  # a delivered mail stays delivered; recipients say "rejected"


Check = Callable[[Mapping[str, Any], str], tuple[bool, list[str], str]]
"""(record, owner) -> (holds, beneficiaries, what was checked or why not)."""


def _ticket(record: Mapping[str, Any], owner: str) -> tuple[bool, list[str], str]:
    """Resolved (not closed as "not planned"), and filed by someone the tracker names:
    the reporter is the beneficiary, so resolving one's own ticket earns nothing."""
    if record.get("status") not in ("resolved", "closed", "done"):
        return False, [], f"ticket is {record.get('status')!r}, not resolved"
    if record.get("resolution") == "not_planned":
        return False, [], "closed as not planned, not resolved"
    reporter = str(record.get("reporter") or "")
    if not reporter:
        return False, [], "the tracker does not say who reported the ticket"
    closed_by = record.get("closed_by")
    by = f", closed by {closed_by}" if closed_by else ""
    return True, [reporter], f"resolved in the tracker; reported by {reporter}{by}"


def _deploy(record: Mapping[str, Any], owner: str) -> tuple[bool, list[str], str]:
    """A deploy record (``pipeline``, ``health``, ``requested_by``), or a run of the
    built-in ``deploy`` server's pipeline (``deploy.pipeline_status``: ``id``, ``status``,
    ``commit``, ``reverted_by`` once a later commit reverted it), which reports no health
    check: its run succeeding, and not rolled back, is the check."""
    if "pipeline" not in record and "status" in record:
        run, status = record.get("id"), record.get("status")
        if status != "success":
            return False, [], f"pipeline run {run} is {status!r}"
        if record.get("reverted_by"):
            return False, [], f"pipeline run {run} rolled back by {record['reverted_by']}"
        return True, ["external"], f"pipeline run {run} succeeded for {record.get('commit')}"
    if record.get("pipeline") != "success":
        return False, [], f"pipeline {record.get('pipeline')!r}"
    if record.get("health") not in ("ok", "passing", "healthy"):
        return False, [], f"health check {record.get('health')!r}"
    return (
        True,
        [str(x) for x in record.get("requested_by") or ["external"]],
        "pipeline ok, healthy",
    )


def _pull_request(record: Mapping[str, Any], owner: str) -> tuple[bool, list[str], str]:
    """Merged, not reverted, and written or approved by someone other than the owner:
    the built-in ``tickets.get_pull_request`` (``author``, ``approved_by``,
    ``reverted_by``; who merged it is the agent, so does not count). A third party's
    record without ``author`` (``merged``, ``reverted``, ``merged_by``): whoever merged
    it accepted it. Those people are the beneficiaries."""
    if not record.get("merged"):
        return False, [], "not merged"
    if record.get("reverted") or record.get("reverted_by"):
        return False, [], f"reverted by {record.get('reverted_by') or 'a later change'}"
    approvers = [str(x) for x in record.get("approved_by") or [] if x]
    who = "author" if "author" in record else "merged_by"
    people = [str(record.get(who) or ""), *approvers]
    others = list(dict.fromkeys(p for p in people if p and p.lower() != owner.lower()))
    if not others:
        return False, [], "no one but the owner wrote or approved it"
    said = ["merged"]
    if record.get(who):
        said.append(f"{'authored' if who == 'author' else 'merged'} by {record[who]}")
    if approvers:
        said.append(f"approved by {', '.join(approvers)}")
    return True, others, "; ".join(said)


def _meeting(record: Mapping[str, Any], owner: str) -> tuple[bool, list[str], str]:
    if record.get("status") == "cancelled":
        return False, [], "cancelled"
    attendees = record.get("attendees") or []
    accepted = [
        str(a.get("id") or a.get("email"))
        for a in attendees
        if isinstance(a, Mapping) and a.get("response") == "accepted"
    ]
    if not [a for a in accepted if a != owner]:
        return False, [], "no attendee other than the organiser accepted"
    return True, accepted, f"{len(accepted)} attendee(s) accepted"


def _document(record: Mapping[str, Any], owner: str) -> tuple[bool, list[str], str]:
    """A published record (``published``, ``audience``, ``deleted``), or a document as the
    built-in ``docs`` server reads it (``docs.read_document``: ``path``, ``etag``,
    ``content``): there, publishing is writing, so the document holds while it can be
    read, at the written revision or a later one (an ETag changes at every write). A
    document the share says is not there (``exists: false``) was deleted: the outcome is
    undone. A read that failed is no record at all (the re-check tries again)."""
    if record.get("exists") is False or record.get("deleted"):
        return False, [], f"document {record.get('path') or record.get('id')} was deleted"
    if "published" not in record and "etag" in record and "content" in record:
        return True, ["external"], f"{record.get('path')} is there at revision {record['etag']}"
    if not record.get("published") or record.get("reverted"):
        return False, [], "not published"
    return True, [str(x) for x in record.get("audience") or ["external"]], "published"


class RecordVerifier:
    """Verify by reading the outcome's record from the connector and checking its fields."""

    def __init__(self, check: Check, *ref_keys: str) -> None:
        self._check = check
        self._ref_keys = ref_keys

    async def verify(self, evidence: Evidence, lookup: Lookup | None) -> Verification:
        ref = _ref_of(evidence.data, *self._ref_keys) or _ref_of(
            evidence.arguments, *self._ref_keys
        )
        if not ref:
            return Verification(verified=False, ref="", detail={"reason": "no id in the evidence"})
        record, reason = await self._read(evidence.type, ref, lookup)
        if record is None:
            return Verification(verified=False, ref=ref, detail={"reason": reason})
        mismatch = self._mismatch(evidence, record)
        if mismatch is not None:
            return Verification(verified=False, ref=ref, detail={"reason": mismatch})
        holds, beneficiaries, checked = self._check(record, evidence.owner)
        if not holds:
            return Verification(verified=False, ref=ref, detail={"reason": checked})
        return Verification(
            verified=True, ref=ref, beneficiaries=beneficiaries, detail={"checked": checked}
        )

    async def recheck(
        self, kind: OutcomeType, ref: str, owner: str, lookup: Lookup | None
    ) -> Undone | None:
        if kind.verify_tool is None or lookup is None:
            return None  # nothing to read it with: keep it
        # A failed read raises (the service leaves the outcome due); it never "holds".
        argument = self._argument(kind, ref)
        record = await lookup.read(kind.verify_tool, {kind.verify_argument: argument})
        if record is None:
            return None  # the connector has no record: cannot tell, the next feedback decides
        holds, _, why = self._check(record, owner)
        return None if holds else Undone(kind.undo_verdict, why)

    def _argument(self, kind: OutcomeType, ref: str) -> Any:
        """The read tool's argument for ``ref`` (the ref itself unless overridden)."""
        return ref

    def _mismatch(self, evidence: Evidence, record: Mapping[str, Any]) -> str | None:
        """Why the record is not the one this write made (None: it is)."""
        return None

    async def _read(
        self, kind: OutcomeType, ref: str, lookup: Lookup | None
    ) -> tuple[dict[str, Any] | None, str]:
        if kind.verify_tool is None:
            return None, f"no verification read configured for {kind.name}"
        if lookup is None:
            return None, "no connector lookup available"
        try:
            argument = self._argument(kind, ref)
            record = await lookup.read(kind.verify_tool, {kind.verify_argument: argument})
        except ReadFailed as exc:
            return None, f"{kind.verify_tool}: {exc}"
        if record is None:
            return None, f"{kind.verify_tool} has no record of {ref}"
        return record, ""


class TicketVerifier(RecordVerifier):
    """A resolved ticket, read back from the tracker by number (``tickets.get_ticket``).

    The ref is the ticket's key (``owner/repo#12``, ``ops#12``, Jira's ``OPS-12``); a read
    tool whose argument is ``number`` gets the number after the last ``#`` or ``-`` (a
    third-party tracker's read, configured per agent with another argument, gets the
    key). ``PullRequestVerifier`` reads a merged pull request back the same way."""

    def __init__(self, check: Check = _ticket, *ref_keys: str) -> None:
        super().__init__(check, *(ref_keys or ("key", "ticket")))

    def _argument(self, kind: OutcomeType, ref: str) -> Any:
        if kind.verify_argument != "number":
            return ref
        number = re.split(r"[#-]", ref)[-1]
        if not number.isdigit():
            raise ReadFailed(f"no number in {ref!r}")
        return int(number)


class PullRequestVerifier(TicketVerifier):
    """A merged pull request (``tickets.merge_pull_request``), read back by number with
    ``tickets.get_pull_request``: the merge commit in the write's evidence must be the one
    the tracker reports, so a merge is credited to the write that made it."""

    def __init__(self) -> None:
        super().__init__(_pull_request, "key", "pull_request", "pr", "number")

    def _mismatch(self, evidence: Evidence, record: Mapping[str, Any]) -> str | None:
        sha, now = evidence.data.get("merge_commit_sha"), record.get("merge_commit_sha")
        return f"merged as {now}, not {sha}" if sha and now and sha != now else None


VERIFIERS: dict[str, Verifier] = {
    "mail_sent": MailSentVerifier(),
    "ticket_resolved": TicketVerifier(),
    "deploy": RecordVerifier(_deploy, "deploy_id", "deployment", "pipeline_id"),
    "pr_merged": PullRequestVerifier(),
    "meeting_scheduled": RecordVerifier(_meeting, "event_id", "event"),
    "doc_published": RecordVerifier(_document, "document", "doc", "path"),
}
"""Built-in verifiers by outcome type. A custom type without one is ``unverified``."""
