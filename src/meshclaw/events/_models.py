"""Typed models of event format v1 (``../shared/DESIGN.md``, "Event format v1").

One ``msgspec.Struct`` per ``kind``; together they form the tagged union ``Event``
(the tag is the ``kind`` field). Decoding validates types, enums and bounds in C, which
is what lets the reader keep up with millions of lines. Fields the format does not name
are ignored by the decoder; the reader can keep them in ``extra`` on request.

Texts (``task``, ``prompt``, ``output``) are replaced on read by a ``TextPrint`` (a
similarity fingerprint) and dropped unless the caller asks to retain them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]

Trigger = Literal["manual", "cron", "webhook", "chat", "mail", "api"]
RunStatus = Literal["ok", "error", "cancelled"]
ToolAction = Literal["read", "write"]
ToolStatus = Literal["ok", "error", "denied"]
Verdict = Literal["accepted", "rejected", "reverted", "reopened", "rolled_back", "cancelled"]

KINDS = ("run", "llm_call", "tool_call", "outcome", "feedback")
UNDOING_VERDICTS = frozenset({"reverted", "reopened", "rolled_back", "cancelled"})
"""Verdicts that take an outcome's credit away after the fact (durability failures)."""


class TextPrint(msgspec.Struct, frozen=True, array_like=True):
    """Similarity fingerprint of one text: what the integrity engine keeps instead of it."""

    words: int
    """Number of content words (lower-cased, stop words left out)."""
    unique: int
    """Number of distinct content words; ``unique / words`` is the information density."""
    minhash: tuple[int, ...]
    """MinHash signature over the text's word set (see ``events.fingerprint``)."""


class _Base(msgspec.Struct, kw_only=True, tag_field="kind", omit_defaults=True):
    v: Literal[1]
    """Format version."""
    id: NonEmpty
    """Unique within the file."""
    ts: UtcTime
    org: NonEmpty
    team: NonEmpty
    user: NonEmpty
    """Stable pseudonymous id of the person the event is attributed to."""
    extra: dict[str, Any] | None = None
    """Fields the format does not name, when the reader was asked to keep them."""


class Run(_Base, tag="run"):
    agent: NonEmpty
    run: NonEmpty
    trigger: Trigger
    ended_at: UtcTime
    status: RunStatus
    task: str | None = None
    """The instruction text; ``None`` after reading unless texts are retained."""
    role: str | None = None
    """The person's job function as the company directory shows it."""
    task_print: TextPrint | None = None


class LlmCall(_Base, tag="llm_call"):
    agent: NonEmpty
    run: NonEmpty
    provider: str
    model: str
    input_tokens: Count
    output_tokens: Count
    cache_read_tokens: Count | None = None
    reasoning_tokens: Count | None = None
    cost_usd: NonNegative | None = None
    latency_ms: NonNegative | None = None
    prompt: str | None = None
    output: str | None = None
    prompt_print: TextPrint | None = None
    output_print: TextPrint | None = None


class ToolCall(_Base, tag="tool_call"):
    agent: NonEmpty
    run: NonEmpty
    tool: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")]
    """``connector.tool``, e.g. ``mail.send``."""
    action: ToolAction
    target: str
    """The resource, e.g. ``ticket:OPS-12``."""
    status: ToolStatus
    recipients: list[str] | None = None
    """User ids that received the output."""


class Outcome(_Base, tag="outcome"):
    agent: NonEmpty
    run: NonEmpty
    type: str
    ref: str
    """The external id, e.g. the ticket or the commit."""
    beneficiary: str
    """A user id, or ``external``."""
    verified: bool
    """The connector produced evidence for it (not just the agent's claim)."""
    value: NonNegative | None = None
    """Relative weight; 1.0 when absent."""
    tool_call: str | None = None
    """Id of the ``tool_call`` whose write produced this outcome."""


class Feedback(_Base, tag="feedback"):
    outcome: str
    """The ``id`` of the outcome this is about."""
    by: str
    """The reviewer: a user id, ``external`` or ``system`` (durability check)."""
    verdict: Verdict
    agent: str | None = None
    run: str | None = None


Event = Run | LlmCall | ToolCall | Outcome | Feedback
"""One event of format v1; ``isinstance`` or ``match`` on the class to tell kinds apart."""
