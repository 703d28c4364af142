"""What chat and mail triggers share: their agents, the lease, watermarks, one run per message.

A chat or mail trigger reads a channel or a folder as the platform, on the agent owner's
behalf, with the owner's delegated credential for the named connector — a read the
platform does for itself, not a tool call of an agent, so it goes straight to the app
(IMAP, the Slack Web API) rather than through the gateway, and no run is faked for it.
What a run then does with the message goes through the gateway as always.

The read is still a Cedar decision: before each poll the platform principal
``Platform::"trigger-poller"`` asks to read the channel (``<connector>.read_channel``,
targets ``chat:#name``) or the folder (``<connector>.list_messages``, target
``folder:NAME``) with the same policy sets as every call (``policy.platform``, which says
why not through the gateway: no run, agent or spec to charge). A refused poll reads
nothing; it is the trigger's problem, kept and audited ``trigger.refused`` with the
decision, and the other triggers are polled.

Exactly once per message: every message acted on is a unique row in
``inbound_deliveries`` (agent, trigger, message), inserted in the run's own transaction,
so two schedulers, a poll and a Slack event, or a retried delivery start it once; a
message whose run could not be created is kept there ``pending`` and retried without
holding the trigger's later messages back (``triggers._deliveries``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from meshclaw.audit.sink import AuditRecord
from meshclaw.clock import utcnow
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.errors import ConfigError
from meshclaw.ids import new_id
from meshclaw.platform import Platform
from meshclaw.policy.platform import POLLER, PlatformAuthorizer, PlatformCall, decision_details
from meshclaw.spec import checks
from meshclaw.spec.loader import parse_stored_spec
from meshclaw.spec.models import AgentSpec, ChatTrigger, MailTrigger
from meshclaw.store.models import Agent, AgentVersion, User
from meshclaw.triggers._deliveries import Deliveries, Source, TriggerProblem
from meshclaw.triggers.models import InboundWatermark, SchedulerLease

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)

InboundTrigger = ChatTrigger | MailTrigger


@dataclass(frozen=True, kw_only=True)
class Watcher:
    """One chat or mail trigger of one agent's current spec."""

    agent_id: str
    org_id: str
    owner: User
    spec: AgentSpec
    index: int
    """The trigger's position in ``spec.triggers`` (messages say ``triggers[i]``)."""
    trigger: InboundTrigger

    @property
    def key(self) -> str:
        t = self.trigger
        where = t.folder if isinstance(t, MailTrigger) else t.channel.removeprefix("#")
        return f"{t.type}:{t.connector}:{where}"[:300]

    @property
    def source(self) -> Source:
        return Source(
            agent_id=self.agent_id, org_id=self.org_id, owner_id=self.owner.id,
            trigger_key=self.key, kind=self.trigger.type,
        )  # fmt: skip

    def field(self, name: str) -> str:
        return f"triggers[{self.index}].{name}"


def watchers(platform: Platform, *, org_id: str | None = None) -> list[Watcher]:
    """The chat and mail triggers of every live agent's current spec (of one org)."""
    query = (
        select(Agent.id, Agent.org_id, AgentVersion.spec_yaml, User)
        .join(
            AgentVersion,
            (AgentVersion.agent_id == Agent.id) & (AgentVersion.version == Agent.latest_version),
        )
        .join(User, User.id == Agent.owner_id)
        .where(
            Agent.archived_at.is_(None),
            or_(
                AgentVersion.spec_yaml.contains("type: chat"),
                AgentVersion.spec_yaml.contains("type: mail"),
            ),
        )
    )
    if org_id is not None:
        query = query.where(Agent.org_id == org_id)
    with platform.db.session() as session:
        rows = session.execute(query).all()
    found: list[Watcher] = []
    for agent_id, agent_org, spec_yaml, owner in rows:
        try:
            spec = parse_stored_spec(spec_yaml)
        except Exception:  # a stored spec always parsed once; never stop the others
            log.exception("agent %s: stored spec does not parse", agent_id)
            continue
        for index, trigger in enumerate(spec.triggers):
            if isinstance(trigger, ChatTrigger | MailTrigger):
                found.append(
                    Watcher(
                        agent_id=agent_id,
                        org_id=agent_org,
                        owner=owner,
                        spec=spec,
                        index=index,
                        trigger=trigger,
                    )
                )
    return found


def read_grant_problem(watcher: Watcher) -> str | None:
    """Why the agent may not read what would start it: its spec grants no read tool of
    the connector, or none whose targets cover the channel (chat) or folder (mail).

    Spec validation refuses such a spec already (``spec.checks``); this is the defence in
    depth for versions stored before it did."""
    spec, index, trigger = watcher.spec, watcher.index, watcher.trigger
    problem = checks.read_grant_problem(spec, index, trigger) or checks.target_problem(
        spec, index, trigger
    )
    return None if problem is None else str(problem)


class PolicyRefused(TriggerProblem):
    """Cedar refused the platform's read for the trigger; ``decision`` is for the audit."""

    def __init__(self, reason: str, decision: dict[str, Any]) -> None:
        super().__init__(reason)
        self.decision = decision


def poll_call(watcher: Watcher) -> PlatformCall:
    """The read a poll of the trigger makes, as ``Platform::"trigger-poller"`` asks it."""
    trigger = watcher.trigger
    if isinstance(trigger, MailTrigger):
        tool = f"{trigger.connector}.list_messages"
        arguments: dict[str, Any] = {"folder": trigger.folder}
        targets: tuple[str, ...] = (checks.folder_target(trigger.folder),)
    else:
        tool = f"{trigger.connector}.read_channel"
        arguments = {"channel": trigger.channel}
        targets = checks.channel_targets(trigger.channel)
    return PlatformCall(
        org_id=watcher.org_id, principal=POLLER, tool=tool, kind="read",
        arguments=arguments, targets=targets, trigger=trigger.type,
    )  # fmt: skip


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def glob_match(pattern: str, text: str) -> bool:
    """``*`` matches any run of characters (the only wildcard); case-insensitive."""
    compiled = _GLOB_CACHE.get(pattern)
    if compiled is None:
        parts = (re.escape(part) for part in pattern.split("*"))
        compiled = re.compile(".*".join(parts), re.IGNORECASE | re.DOTALL)
        _GLOB_CACHE[pattern] = compiled
    return compiled.fullmatch(text) is not None


def connector_settings(
    platform: Platform, watcher: Watcher, prefix: str, model: type[BaseModel], what: str
) -> tuple[Any, ConnectorConfig]:
    """The built-in server's settings (``model``) as the connector would start it for the
    agent's owner: its ``env`` plus the owner's delegated credential where it goes."""
    name = watcher.trigger.connector
    found = platform.connector_admin.configs(watcher.org_id).get(name)
    if found is None:
        raise TriggerProblem(f"{watcher.field('connector')}: the org has no connector {name!r}")
    config = found[0]
    env = dict(config.env)
    if config.credential_env:
        if config.credentials is None:
            raise TriggerProblem(f"connector {name!r} has credential_env but no credentials")
        try:
            credential = platform.connector_admin.credentials.resolve(
                config.credentials, user_id=watcher.owner.id, org_id=watcher.org_id
            )
            for variable, field in config.credential_env.items():
                env[variable] = credential.field(field)
        except ConfigError as exc:  # names the reference and field, never a value
            raise TriggerProblem(f"connector {name!r}: {exc}") from None
    values = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    try:
        # ``model_validate``: only what the connector says, never this process's own env.
        return model.model_validate(values), config
    except ValidationError as exc:
        missing = ", ".join(
            f"{prefix}{'_'.join(str(p) for p in e['loc']).upper()} ({e['msg'].lower()})"
            for e in exc.errors()
        )
        raise TriggerProblem(
            f"connector {name!r} is not {what}, which a {watcher.trigger.type} trigger "
            f"reads ({missing})"
        ) from None


def hook_secret(
    platform: Platform, org_id: str, config: ConnectorConfig, field: str
) -> bytes | None:
    """A secret a pushing app proves itself with (Slack's ``signing_secret``, a homeserver's
    ``hs_token``): the field of the connector's credential (the org's default entry); None
    when there is none."""
    if config.credentials is None:
        return None
    try:
        credential = platform.connector_admin.credentials.resolve(config.credentials, org_id=org_id)
        return credential.field(field).encode() or None
    except ConfigError:
        return None


def audit_refused_push(
    platform: Platform,
    org_id: str | None,
    connector: str,
    reason: str,
    remote: str | None,
    via: str | None = None,
) -> None:
    """``chat_event.refused``: a push (Slack event, Matrix transaction) was not taken."""
    details = {"reason": reason, "remote": remote, "via": via}
    with platform.db.session() as session:
        platform.audit.append(
            session,
            AuditRecord(
                action="chat_event.refused",
                resource=f"connector:{connector}"[:300],
                outcome="denied",
                org_id=org_id,
                details={k: v for k, v in details.items() if v},
            ),
        )


def chat_watchers(
    platform: Platform, org_id: str, connector: str
) -> list[tuple[Watcher, ChatTrigger]]:
    """The org's chat triggers on ``connector``, with their watchers."""
    return [
        (w, w.trigger)
        for w in watchers(platform, org_id=org_id)
        if isinstance(w.trigger, ChatTrigger) and w.trigger.connector == connector
    ]


class Inbound:
    """Watermarks, problems and run starts of chat and mail triggers."""

    def __init__(
        self,
        platform: Platform,
        *,
        dispatch: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.platform = platform
        self._db = platform.db
        self.clock = clock
        self.deliveries = Deliveries(platform, dispatch=dispatch, clock=clock)
        """Run starts, pending retries and give-ups; ``dispatch`` sends a new run to the
        workers (None: the in-process worker polls for it)."""
        self._decide = PlatformAuthorizer(platform.policies)
        """The pollers' reads as ``Platform::"trigger-poller"`` (``policy.platform``)."""

    # -- leader lease --------------------------------------------------------------------

    def lead(self, name: str, owner: str) -> bool:
        """Take or renew the lease ``name`` (a ``scheduler_leases`` row); True if ours."""
        now = self.clock()
        with self._db.session() as session:
            renewed = session.execute(
                update(SchedulerLease)
                .where(
                    SchedulerLease.name == name,
                    or_(SchedulerLease.owner == owner, SchedulerLease.expires_at < now),
                )
                .values(owner=owner, expires_at=now + LEASE)
            )
            if renewed.rowcount:  # type: ignore[attr-defined]
                return True
        try:
            with self._db.session() as session:
                session.add(SchedulerLease(name=name, owner=owner, expires_at=now + LEASE))
        except IntegrityError:
            return False  # another replica leads
        return True

    # -- watermarks ----------------------------------------------------------------------

    def watermark(self, watcher: Watcher) -> tuple[str, str] | None:
        """``(epoch, position)`` read so far, or None before the trigger's first poll."""
        with self._db.session() as session:
            row = session.execute(
                select(InboundWatermark.epoch, InboundWatermark.position).where(
                    InboundWatermark.agent_id == watcher.agent_id,
                    InboundWatermark.trigger_key == watcher.key,
                )
            ).one_or_none()
        return None if row is None else (row.epoch, row.position)

    def advance(self, watcher: Watcher, epoch: str, position: str) -> None:
        """Move the watermark (a concurrent first poll's row is updated, not duplicated)."""
        values = {"epoch": epoch, "position": position, "updated_at": self.clock()}
        where = (
            InboundWatermark.agent_id == watcher.agent_id,
            InboundWatermark.trigger_key == watcher.key,
        )
        with self._db.session() as session:
            if session.execute(update(InboundWatermark).where(*where).values(**values)).rowcount:  # type: ignore[attr-defined]
                return
        try:
            with self._db.session() as session:
                session.add(
                    InboundWatermark(
                        id=new_id("iwm"), agent_id=watcher.agent_id, trigger_key=watcher.key,
                        **values,
                    )
                )  # fmt: skip
        except IntegrityError:
            with self._db.session() as session:
                session.execute(update(InboundWatermark).where(*where).values(**values))

    # -- the policy gate of a poll --------------------------------------------------------

    def authorize_poll(self, watcher: Watcher) -> None:
        """Raise ``PolicyRefused`` unless Cedar lets the platform read for the trigger."""
        call = poll_call(watcher)
        decision = self._decide.decide(call).decision
        if not decision.allowed:
            raise PolicyRefused(
                f"refused by policy: {decision.reason}", decision_details(call, decision)
            )

    def problem(
        self, watcher: Watcher, reason: str | None, decision: dict[str, Any] | None = None
    ) -> None:
        """Record why the trigger cannot work now (None: it can); audited when it changes,
        with the policy ``decision`` when Cedar refused the read."""
        with self._db.session() as session:
            row = session.scalar(
                select(InboundWatermark).where(
                    InboundWatermark.agent_id == watcher.agent_id,
                    InboundWatermark.trigger_key == watcher.key,
                )
            )
            before = row.error if row is not None else None
            if before == reason:
                return
            if row is None:
                session.add(
                    InboundWatermark(
                        id=new_id("iwm"), agent_id=watcher.agent_id, trigger_key=watcher.key,
                        epoch="", position="", error=reason and reason[:500],
                    )
                )  # fmt: skip
            else:
                row.error = reason and reason[:500]
            if reason is not None:
                log.warning(
                    "%s trigger of agent %s: %s", watcher.trigger.type, watcher.agent_id, reason
                )
                self.audit(
                    session, "trigger.refused", watcher, "denied",
                    {"trigger": watcher.trigger.type, "reason": reason, "decision": decision},
                )  # fmt: skip

    # -- starting runs -------------------------------------------------------------------

    def start(
        self, watcher: Watcher, message_key: str, text: str, details: dict[str, Any]
    ) -> str | None:
        """Start the run for one message, once (``Deliveries.start``): its id, or None if
        the message was acted on before, was refused, or is kept for a retry."""
        return self.deliveries.start(watcher.source, watcher.owner, message_key, text, details)

    def retry_due(self, watcher: Watcher) -> list[str]:
        """Try the trigger's messages whose runs could not be created before, once due."""
        return self.deliveries.retry_due(watcher.source, watcher.owner)

    def audit(
        self,
        session: Any,
        action: str,
        watcher: Watcher,
        outcome: str,
        details: dict[str, Any],
    ) -> None:
        self.platform.audit.append(
            session,
            AuditRecord(
                action=action,
                resource=f"agent:{watcher.agent_id}",
                outcome=outcome,
                org_id=watcher.org_id,
                actor_user_id=watcher.owner.id,
                actor_agent_id=watcher.agent_id,
                details={k: v for k, v in details.items() if v is not None},
            ),
        )
