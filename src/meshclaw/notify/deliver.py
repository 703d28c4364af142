"""Sending the outbox through the org's chosen connector tool, with retries.

An org says how it wants to be told in its settings (``notifications``)::

    notifications:
      tool: chat.post_message            # any connector tool: mail.send, chat.post_message
      arguments: {channel: "#budgets", text: "{subject}\n\n{body}"}
      sender: ops-bot                    # whose delegated credential sends (a handle)

Argument values are templates over ``subject``, ``body``, ``text`` (both), ``kind``,
``resource`` and ``recipients`` (``@handle`` list); a value that is exactly
``"{recipient_emails}"`` becomes the recipients' addresses as a list (for ``mail.send``'s
``to``). A notification with a ``link`` for its one recipient (an outcome's feedback
request) is mailed to that recipient's own address with ``mail.send`` instead, as the
channel's sender (``personal_mail``). Sending happens outside any request or run (the
scheduler calls ``deliver_due``), so a slow or broken chat server never slows a model
call. Several schedulers may run: each notification is claimed with a conditional
update first.

Every send passes two Cedar decisions first, and a refusal by either marks the
notification ``failed`` at once (never retried: the same policy would refuse it again)
with the reason in ``last_error``, audited ``notification.denied`` with the decision:

1. the call itself, by the platform principal ``Platform::"notifier"``
   (``policy.platform``): a messaging tool only, each argument value checked, mail
   addresses (``to``, ``cc``, ``bcc``) only inside the org or the message's own
   recipient;
2. ``notify.send`` on the sender's behalf (whose delegated credential sends it), with
   the message's ``kind``: an org policy may refuse a kind of message, and the built-in
   ``platform.notify.inside-org`` refuses outside addresses again.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select, update

from meshclaw.accounts.service import caller_of
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.connectors.base import ToolContext
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.metering.usage import builtin_access
from meshclaw.notify.models import Notification
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.arguments import summarize_arguments
from meshclaw.policy.authorizer import Decision
from meshclaw.policy.platform import (
    ADDRESS_ARGUMENTS,
    NOTIFIER,
    NOTIFIER_TOOLS,
    PlatformAuthorizer,
    PlatformCall,
    decision_details,
)
from meshclaw.store.db import Database
from meshclaw.store.models import Org, User

MESSAGING_TOOLS = NOTIFIER_TOOLS
"""The tools a channel may use: the built-in chat and mail servers' senders, under the
connector names they are registered with by default. Notifications are the platform's
own messages, sent outside any run, so not through the gateway (no agent, no spec, no
run to meter, budget or pause: ``policy.platform`` says why): only a tool that delivers
a message qualifies, never one that changes a system, and each send is decided by Cedar
first, as ``Platform::"notifier"`` and as ``notify.send`` (above)."""
NOTIFY = "notify.send"
_ADDRESS_ARGUMENTS = ADDRESS_ARGUMENTS
MAX_ATTEMPTS = 8
CLAIM = timedelta(minutes=5)
"""How long a claimed notification is left to its sender before another may retry it."""
_LIST_PLACEHOLDER = "{recipient_emails}"
PERSONAL_TOOL = "mail.send"
"""How a message with a link for its one recipient is sent, whatever the channel's tool:
to that recipient's own address (a chat channel is read by others)."""


class NotificationChannel(BaseModel):
    """An org's ``notifications`` setting."""

    model_config = ConfigDict(extra="forbid")
    tool: str = Field(pattern=r"^[a-z][a-z0-9_-]*\.[A-Za-z0-9_.-]+$")
    """``connector.tool``, one of ``MESSAGING_TOOLS``."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    sender: str | None = None
    """Handle whose delegated credential the connector uses; default: a platform admin."""

    @field_validator("tool")
    @classmethod
    def _a_messaging_tool(cls, tool: str) -> str:
        if tool not in MESSAGING_TOOLS:
            raise ValueError(f"must be one of {', '.join(sorted(MESSAGING_TOOLS))}")
        return tool


@dataclass(frozen=True, kw_only=True)
class DeliverySummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    unsent: int = 0
    """No usable channel configured: kept, with the reason, for the dashboard."""


class NotUsable(Exception):
    """The org's channel cannot send this (bad setting, unknown connector): not retried."""


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2 ** (attempts - 1), 3600))


class NotificationDelivery:
    def __init__(
        self,
        db: Database,
        connectors: ConnectorRegistry,
        audit: AuditSink,
        access: ApiAuthorizer | None = None,
    ) -> None:
        self._db = db
        self._connectors = connectors
        self._audit = audit
        self._access = access or builtin_access()
        self._platform = PlatformAuthorizer(self._access.store)
        """The notifier's own decisions, on the same policy store as ``access``."""

    async def deliver_due(
        self, *, now: datetime | None = None, limit: int = 100
    ) -> DeliverySummary:
        """Send every pending notification that is due; retry failures with back-off."""
        now = now or utcnow()
        counts = {"sent": 0, "retried": 0, "failed": 0, "unsent": 0}
        for notification_id in self._claim(now, limit):
            counts[await self._deliver(notification_id, now)] += 1
        return DeliverySummary(**counts)

    def _claim(self, now: datetime, limit: int) -> list[str]:
        with self._db.session() as session:
            due = session.execute(
                select(Notification.id, Notification.due_at)
                .where(Notification.status == "pending", Notification.due_at <= now)
                .order_by(Notification.due_at)
                .limit(limit)
            ).all()
            claimed = []
            for notification_id, due_at in due:
                taken = session.execute(
                    update(Notification)
                    .where(Notification.id == notification_id, Notification.due_at == due_at)
                    .values(due_at=now + CLAIM)
                )
                if taken.rowcount:  # type: ignore[attr-defined]
                    claimed.append(notification_id)
            return claimed

    async def _deliver(self, notification_id: str, now: datetime) -> str:
        with self._db.session() as session:
            row = session.get(Notification, notification_id)
            assert row is not None
            try:
                tool, arguments, context = self._prepare(session, row)
            except NotUsable as exc:
                row.status, row.last_error = "unsent", str(exc)
                self._record(session, row, "notification.unsent", str(exc))
                return "unsent"
            arguments = normalize_addresses(arguments)
            refusal = self._refusal(session, row, tool, arguments, context.user_id)
            if refusal is not None:
                reason, decision = refusal
                row.status, row.last_error = "failed", reason
                self._record(session, row, "notification.denied", reason, decision)
                return "failed"
        try:
            await self._send(tool, arguments, context)
            error = None
        except Exception as exc:  # a connector's failure is data here, kept and retried
            error = f"{type(exc).__name__}: {exc}"[:2000]
        with self._db.session() as session:
            row = session.get(Notification, notification_id)
            assert row is not None
            row.attempts += 1
            if error is None:
                row.status, row.sent_at, row.last_error = "sent", utcnow(), None
                self._record(session, row, "notification.sent", None)
                return "sent"
            row.last_error = error
            if row.attempts >= MAX_ATTEMPTS:
                row.status = "failed"
                self._record(session, row, "notification.failed", error)
                return "failed"
            row.due_at = now + backoff(row.attempts)
            return "retried"

    def _prepare(self, session: Any, row: Notification) -> tuple[str, dict[str, Any], ToolContext]:
        org = session.get(Org, row.org_id)
        setting = (org.settings or {}).get("notifications") if org is not None else None
        if not setting:
            raise NotUsable("the org has no notifications channel (settings.notifications)")
        try:
            channel = NotificationChannel.model_validate(setting)
        except ValidationError as exc:
            problems = "; ".join(
                f"notifications.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
            raise NotUsable(problems) from None
        people = list(
            session.scalars(
                select(User).where(User.org_id == row.org_id, User.id.in_(row.recipients))
            )
        )
        sender = self._sender(session, row.org_id, channel.sender)
        if row.link is None:
            tool, arguments = channel.tool, render(channel.arguments, row, people)
        else:
            tool, arguments = PERSONAL_TOOL, personal_mail(session, row, people, sender)
        context = ToolContext(
            org_id=row.org_id, user_id=sender, agent_id="", run_id=row.id, step_id=row.id,
            idempotency_key=f"notification:{row.id}",
        )  # fmt: skip
        return tool, arguments, context

    def _refusal(
        self, session: Any, row: Notification, tool: str, arguments: dict[str, Any], sender: str
    ) -> tuple[str, dict[str, Any]] | None:
        """Why policy refuses this send and the decision for the audit record, or None if
        it may go: first the call as ``Platform::"notifier"``, then ``notify.send``."""
        domains = org_domains(session, row.org_id)  # read once: the call and the reason
        call = PlatformCall(
            org_id=row.org_id, principal=NOTIFIER, tool=tool, kind="write",
            arguments=arguments, trigger="notification",
            org_domains=tuple(sorted(domains)),
            own_recipients=tuple(sorted(own_recipients(row))),
        )  # fmt: skip
        platform = self._platform.decide(call).decision
        outside = outside_addresses(session, row, arguments, domains)
        where = f" ({len(outside)} address(es) outside the org)" if outside else ""
        if not platform.allowed:
            reason = f"refused by policy{where}: {platform.reason}"
            return reason, decision_details(call, platform)
        person = session.get(User, sender)
        assert person is not None  # ``_sender`` found them in this session
        decision = self._access.authorize_api(
            caller_of(person),
            NOTIFY,
            ApiResource.tool(qualified=tool, org_id=row.org_id),
            context={
                "kind": row.kind,
                "outside_org": bool(outside),
                "arguments_summary": summarize_arguments(arguments),
            },
        )
        if decision.allowed:
            return None
        return f"refused by policy{where}: {decision.reason}", _send_details(sender, tool, decision)

    @staticmethod
    def _sender(session: Any, org_id: str, handle: str | None) -> str:
        query = select(User.id).where(User.org_id == org_id)
        if handle:
            query = query.where(User.handle == handle)
        else:
            query = query.where(User.role == "platform_admin").order_by(User.created_at)
        sender = session.scalars(query.limit(1)).first()
        if sender is None:
            raise NotUsable(
                f"notifications.sender: no user {handle!r} in the org"
                if handle
                else "no platform admin to send notifications as"
            )
        return str(sender)

    async def _send(self, tool: str, arguments: dict[str, Any], context: ToolContext) -> None:
        connector_name, tool_name = tool.split(".", 1)
        connector = self._connectors.get(connector_name, org_id=context.org_id)
        if connector is None:
            raise LookupError(f"no connector {connector_name!r} for the notifications channel")
        result = await connector.call_tool(tool_name, arguments, context)
        if result.is_error:
            raise RuntimeError(result.content[:500])

    def _record(
        self,
        session: Any,
        row: Notification,
        action: str,
        error: str | None,
        decision: dict[str, Any] | None = None,
    ) -> None:
        details: dict[str, Any] = {
            "kind": row.kind,
            "about": row.resource,
            "attempts": row.attempts,
        }
        if error:
            details["error"] = error
        if decision is not None:
            details["decision"] = decision
        self._audit.append(
            session,
            AuditRecord(
                action=action, resource=f"notification:{row.id}",
                outcome="ok" if action == "notification.sent" else "error",
                org_id=row.org_id, details=details,
            ),
        )  # fmt: skip


def personal_mail(
    session: Any, row: Notification, people: list[User], sender: str
) -> dict[str, Any]:
    """``mail.send`` arguments for a notification whose link answers for its recipient.

    Mailed to that recipient's own address, never through the channel's template: a chat
    channel or a fixed list of addresses is read by others, and whoever holds the link
    answers in the recipient's name. The sender's mailbox keeps a copy of what it sends,
    so the owner of the outcome asked about must not be the sender."""
    (recipient,) = row.recipients
    if recipient.startswith("external:"):
        address = recipient.removeprefix("external:")
    else:
        person = next((p for p in people if p.id == recipient), None)
        address = _address_of(person)
        if address is None:
            who = f"@{person.handle}" if person is not None else recipient
            raise NotUsable(
                f"{who} has no mail address (set their email): this message carries a link "
                "for them alone, so it is only mailed to them"
            )
    if sender == _owner_of(session, row.resource):
        raise NotUsable(
            "notifications.sender is the owner of the outcome this link is about, whose "
            "mailbox would keep a copy of it: set notifications.sender to a service account"
        )
    return {"to": [address], "subject": row.subject, "body": f"{row.body}\n\n{row.link}\n"}


def _send_details(sender: str, tool: str, decision: Decision) -> dict[str, Any]:
    """The ``notify.send`` decision as the audit record keeps it."""
    return {
        "principal": f'User::"{sender}"', "action": NOTIFY, "tool": tool,
        "decision": "allow" if decision.allowed else "deny",
        "reason": decision.reason[:1000], "policies": list(decision.policies),
    }  # fmt: skip


def org_domains(session: Any, org_id: str) -> set[str]:
    """The mail domains the org's people have addresses at (lower case)."""
    return {
        email.rsplit("@", 1)[1].lower()
        for email in session.scalars(
            select(User.email).where(User.org_id == org_id, User.email.is_not(None))
        )
        if email and "@" in email
    }


def own_recipients(row: Notification) -> set[str]:
    """The outside addresses the message itself is for (``external:`` recipients), as
    ``normalize_addresses`` writes them."""
    return {
        _normal_address(r.removeprefix("external:"))
        for r in row.recipients
        if r.startswith("external:")
    }


def _normal_address(address: str) -> str:
    """``local@domain`` with the domain in lower case (domains are case-insensitive)."""
    local, at, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if at else address


def normalize_addresses(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments with every mail address of ``to``, ``cc`` and ``bcc`` written with a
    lower-case domain: what the policy checks (``*@acme.example``) is what is sent."""

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return _normal_address(value) if "@" in value else value
        if isinstance(value, list | tuple):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    return {k: fix(v) if k in _ADDRESS_ARGUMENTS else v for k, v in arguments.items()}


def outside_addresses(
    session: Any,
    row: Notification,
    arguments: dict[str, Any],
    domains: set[str] | None = None,
) -> list[str]:
    """Mail addresses in the arguments (``to``, ``cc``, ``bcc``) outside the org: a domain
    no person of the org has an address at, and not the message's own outside recipient
    (an outcome's beneficiary outside the org is asked for feedback at their address).
    ``domains``: the org's, when the caller has read them already (``org_domains``)."""
    if domains is None:
        domains = org_domains(session, row.org_id)
    own = own_recipients(row)  # compared as the policy compares them: domain case only
    found = []
    for key in _ADDRESS_ARGUMENTS:
        for address in _strings(arguments.get(key)):
            normal = _normal_address(address)
            if "@" in normal and normal not in own and normal.rsplit("@", 1)[1] not in domains:
                found.append(address)
    return found


def _strings(value: Any) -> Iterator[str]:
    """Every string in a value, however nested (a template may put a list in a list)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _address_of(person: User | None) -> str | None:
    if person is None:
        return None
    if person.email:
        return person.email
    return person.handle if "@" in person.handle else None


def _owner_of(session: Any, resource: str) -> str | None:
    """The owner of ``outcome:<id>``, the one resource personal links are about today."""
    from meshclaw.outcomes.models import Outcome  # notify is below outcomes: import late

    kind, _, resource_id = resource.partition(":")
    if kind != "outcome":
        return None
    owner: str | None = session.scalar(select(Outcome.user_id).where(Outcome.id == resource_id))
    return owner


def render(template: dict[str, Any], row: Notification, people: list[User]) -> dict[str, Any]:
    """The tool's arguments: the channel's templates filled in for this notification."""
    fields = {
        "subject": row.subject, "body": row.body, "text": f"{row.subject}\n\n{row.body}",
        "kind": row.kind, "resource": row.resource,
        "recipients": ", ".join(f"@{p.handle}" for p in people),
    }  # fmt: skip

    def fill(path: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(f"{path}.{k}", v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(f"{path}.{i}", v) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        if value == _LIST_PLACEHOLDER:
            emails = [e for e in (getattr(p, "email", None) for p in people) if e]
            if not emails:
                raise NotUsable(f"{path}: no recipient has an email address")
            return emails
        for _, name, _, _ in string.Formatter().parse(value):
            if name is not None and name not in fields:
                raise NotUsable(f"{path}: unknown placeholder {{{name}}}")
        return value.format_map(fields)

    return {k: fill(f"notifications.arguments.{k}", v) for k, v in template.items()}
