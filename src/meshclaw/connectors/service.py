"""Connector administration: what the CLI, the API and the dashboard call.

Every connector belongs to one org, and everything here is scoped by the caller's org:
another org's connector answers as if it did not exist (``NotFoundError``, a 404), never
"forbidden", so nobody learns which connectors another org has. Connectors come from
``Settings.connectors`` (read-only here; their org is ``ConnectorConfig.org``, else the
oldest org) and from the store (``add``/``remove``). Cedar decides who manages them
(``connector.manage`` on the org: platform admins); anyone signed in may list their
org's connectors and tools (they see what agents can use).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.connectors.approvals import ToolApprovals, ToolState
from meshclaw.connectors.config import CONNECTOR_NAME, ConnectorConfig
from meshclaw.connectors.credentials import CredentialStore
from meshclaw.connectors.models import ConnectorRecord
from meshclaw.errors import ConfigError, ConflictError, MeshClawError, NotFoundError
from meshclaw.ids import new_id
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import Org

if TYPE_CHECKING:  # the MCP SDK loads when a connector is first built, not at import
    from meshclaw.connectors.mcp import McpConnector

BUILTIN = ("clock", "notes")
MANAGE = "connector.manage"
READ = "connector.read"
PROBE = "connector.test"
"""Probing a server (``test``, refreshing tools) connects with the caller's credential."""
Source = Literal["settings", "store"]


@dataclass(frozen=True, kw_only=True)
class ConnectorInfo:
    name: str
    source: Source
    transport: str
    target: str
    approval: str
    tools: dict[str, int] = field(default_factory=dict)
    """Recorded tools by status: approved, pending, changed."""


@dataclass(frozen=True, kw_only=True)
class ProbeReport:
    name: str
    ok: bool
    latency_ms: int
    tools: int = 0
    approved: int = 0
    error: str | None = None
    server: dict[str, str | None] = field(default_factory=dict)
    """The server's name and version, and the MCP protocol version agreed."""


class ConnectorService:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditSink,
        access: ApiAuthorizer,
        settings_connectors: dict[str, ConnectorConfig],
        credentials: CredentialStore,
        errlog_dir: Path | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._access = access
        self._settings = dict(settings_connectors)
        self.credentials = credentials
        self._errlog_dir = errlog_dir
        for name in self._settings:
            _check_name(name)

    def approvals(self, org_id: str) -> ToolApprovals:
        """The recorded tools and approvals of ``org_id``'s connectors."""
        return ToolApprovals(self._db, self._audit, org_id=org_id)

    # -- configuration ------------------------------------------------------------------

    def configs(self, org_id: str) -> dict[str, tuple[ConnectorConfig, Source]]:
        """The org's connectors by name: declared in settings, then added in the store."""
        found: dict[str, tuple[ConnectorConfig, Source]] = {
            name: (config, "settings") for name, config in self._declared(org_id).items()
        }
        with self._db.session() as session:
            rows = session.scalars(
                select(ConnectorRecord)
                .where(ConnectorRecord.org_id == org_id)
                .order_by(ConnectorRecord.name)
            )
            for row in rows:
                if row.name not in found:
                    found[row.name] = (ConnectorConfig.model_validate(row.config), "store")
        return dict(sorted(found.items()))

    def _declared(self, org_id: str) -> dict[str, ConnectorConfig]:
        """Settings connectors of ``org_id``: those naming its org, or none (the oldest)."""
        if not self._settings:
            return {}
        with self._db.session() as session:
            orgs = session.execute(select(Org.id, Org.name).order_by(Org.created_at, Org.id)).all()
        names = {org: name for org, name in orgs}
        if org_id not in names:
            return {}
        oldest = orgs[0][0]
        return {
            name: config
            for name, config in self._settings.items()
            if config.org == names[org_id] or (config.org is None and org_id == oldest)
        }

    def unplaced(self) -> dict[str, str]:
        """Settings connectors whose ``org`` names no org: connector name -> that name.

        No run can use them; ``serve`` and ``connector list`` say so rather than drop
        them silently (the org may simply not exist yet).
        """
        wanted = {n: c.org for n, c in self._settings.items() if c.org is not None}
        if not wanted:
            return {}
        with self._db.session() as session:
            known = set(session.scalars(select(Org.name)))
        return {name: org for name, org in sorted(wanted.items()) if org not in known}

    def config(self, caller: Caller, name: str) -> ConnectorConfig:
        """The caller's org's connector ``name``; 404 if that org has none of that name."""
        return self._config(caller.org_id, name)

    def _config(self, org_id: str, name: str) -> ConnectorConfig:
        found = self.configs(org_id).get(name)
        if found is None:
            raise NotFoundError(f"no connector {name!r} (see `meshclaw connector list`)")
        return found[0]

    def add(self, caller: Caller, name: str, config: dict[str, Any]) -> ConnectorInfo:
        """Register a connector in the caller's org (``connector.manage``)."""
        self._require_manage(caller, "only a platform admin may add connectors")
        _check_name(name)
        parsed = _parse(name, config)
        if parsed.org is not None:
            raise ConfigError(
                f"invalid connector {name!r}: config.org is only for connectors declared in "
                "settings; one you add belongs to your org"
            )
        if name in BUILTIN or name in self._declared(caller.org_id):
            raise ConflictError(f"connector {name!r} already exists (built in or in settings)")
        try:
            with self._db.session() as session:
                self._insert(session, caller, name, parsed)
        except IntegrityError:  # added by someone else at the same moment
            raise ConflictError(f"connector {name!r} already exists") from None
        return self._info(caller.org_id, name, parsed, "store")

    def _insert(self, session: Session, caller: Caller, name: str, config: ConnectorConfig) -> None:
        taken = select(ConnectorRecord.id).where(
            ConnectorRecord.org_id == caller.org_id, ConnectorRecord.name == name
        )
        if session.scalar(taken):
            raise ConflictError(f"connector {name!r} already exists")
        session.add(
            ConnectorRecord(
                id=new_id("con"),
                org_id=caller.org_id,
                name=name,
                config=config.model_dump(mode="json", exclude={"org"}),
                created_by=caller.user_id,
            )
        )
        session.flush()
        self._audit.append(
            session,
            AuditRecord(
                action="connector.add",
                resource=f"connector:{name}",
                outcome="ok",
                org_id=caller.org_id,
                actor_user_id=caller.user_id,
                details={"transport": config.transport, "target": config.target()},
            ),
        )

    def remove(self, caller: Caller, name: str) -> None:
        """Remove a stored connector of the caller's org, and forget its recorded tools."""
        self._require_manage(caller, "only a platform admin may remove connectors")
        with self._db.session() as session:
            row = session.scalar(
                select(ConnectorRecord).where(
                    ConnectorRecord.org_id == caller.org_id, ConnectorRecord.name == name
                )
            )
            if row is None:
                declared = name in self._declared(caller.org_id)
                raise NotFoundError(
                    f"no stored connector {name!r}{' (it is in settings)' if declared else ''}"
                )
            session.delete(row)
            self._audit.append(
                session,
                AuditRecord(
                    action="connector.remove",
                    resource=f"connector:{name}",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                ),
            )
        self.approvals(caller.org_id).forget(name)

    def list_connectors(self, caller: Caller) -> list[ConnectorInfo]:
        """The caller's org's connectors (never another org's; ``connector.read``)."""
        self._access.require(caller, READ, ApiResource.org(caller.org_id), message="connectors:")
        org_id = caller.org_id
        return [self._info(org_id, n, c, src) for n, (c, src) in self.configs(org_id).items()]

    def _info(
        self, org_id: str, name: str, config: ConnectorConfig, source: Source
    ) -> ConnectorInfo:
        counts = Counter(s.status for s in self.approvals(org_id).states(name))
        return ConnectorInfo(
            name=name,
            source=source,
            transport=config.transport,
            target=config.target(),
            approval=config.approval,
            tools=dict(sorted(counts.items())),
        )

    # -- connectors for runs ------------------------------------------------------------

    def build(self, org_id: str, name: str) -> McpConnector:
        """``org_id``'s connector ``name``, ready to connect (NotFoundError if none)."""
        return self._build(org_id, name, self._config(org_id, name))

    def resolve(self, org_id: str, name: str) -> McpConnector | None:
        """For the run-time registry: the org's connector, or None."""
        found = self.configs(org_id).get(name)
        return None if found is None else self._build(org_id, name, found[0])

    def _build(self, org_id: str, name: str, config: ConnectorConfig) -> McpConnector:
        from meshclaw.connectors.mcp import McpConnector

        return McpConnector(
            name,
            config,
            approvals=self.approvals(org_id),
            credentials=self.credentials,
            org_id=org_id,
            errlog=self._errlog(org_id, name),
        )

    def _errlog(self, org_id: str, name: str) -> Path | None:
        """Where a stdio server's own stderr goes (its logs), if not to ours."""
        if self._errlog_dir is None:
            return None
        return self._errlog_dir / f"connector-{org_id}-{name}.log"

    # -- tools and approval -------------------------------------------------------------

    async def tools(self, caller: Caller, name: str, *, refresh: bool = True) -> list[ToolState]:
        """The tools recorded for a connector; ``refresh`` lists the server's tools first.

        The server is asked with the caller's delegated credential (else the default):
        ``connector.test``; reading what is recorded is ``connector.read``.
        """
        action = PROBE if refresh else READ
        self._access.require(caller, action, ApiResource.org(caller.org_id), message="tools:")
        connector = self.build(caller.org_id, name)
        if refresh:
            try:
                await connector.refresh(caller.user_id)
            finally:
                await connector.aclose()
        return self.approvals(caller.org_id).states(name)

    def approve(
        self,
        caller: Caller,
        name: str,
        tools: list[str] | None = None,
        *,
        expected_hash: str | None = None,
    ) -> list[ToolState]:
        """Approve the definitions last seen (``connector.manage``)."""
        self._require_manage(caller, "only a platform admin may approve connector tools")
        self.config(caller, name)
        return self.approvals(caller.org_id).approve(
            name, tools, by=caller.user_id, expected_hash=expected_hash
        )

    async def test(self, caller: Caller, name: str) -> ProbeReport:
        """Connect, list the tools, and report how it went (never raises for a bad server;
        ``connector.test``: the probe uses the caller's delegated credential)."""
        self._access.require(caller, PROBE, ApiResource.org(caller.org_id), message="probe:")
        connector = self.build(caller.org_id, name)
        started = time.perf_counter()
        try:
            _, states = await connector.refresh(caller.user_id)
        except MeshClawError as exc:
            return ProbeReport(name=name, ok=False, latency_ms=_ms(started), error=str(exc))
        finally:
            await connector.aclose()
        approved = sum(1 for s in states.values() if s.status == "approved")
        return ProbeReport(
            name=name,
            ok=True,
            latency_ms=_ms(started),
            tools=len(states),
            approved=approved,
            server=connector.server,
        )

    def _require_manage(self, caller: Caller, message: str) -> None:
        self._access.require(caller, MANAGE, ApiResource.org(caller.org_id), message=message)


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _parse(name: str, config: dict[str, Any]) -> ConnectorConfig:
    try:
        return ConnectorConfig.model_validate(config)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid connector {name!r}: {problems}") from None


def _check_name(name: str) -> None:
    if not CONNECTOR_NAME.match(name):
        raise ConfigError(
            f"connector name {name!r} must be lower case letters, digits, '-' or '_' "
            "(it is the first half of every 'connector.tool')"
        )
    if "__" in name:
        raise ConfigError(f"connector name {name!r} may not contain '__'")
