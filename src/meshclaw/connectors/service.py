"""Connector administration: what the CLI and the API call.

Connectors come from ``Settings.connectors`` (read-only here) and from the store
(``add``/``remove``). Platform admins add connectors and approve tool definitions;
anyone signed in may list connectors and their tools (they see what agents can use).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.connectors.approvals import ToolApprovals, ToolState
from meshclaw.connectors.config import CONNECTOR_NAME, ConnectorConfig
from meshclaw.connectors.credentials import CredentialStore
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.models import ConnectorRecord
from meshclaw.errors import (
    ConfigError,
    ConflictError,
    MeshClawError,
    NotFoundError,
    PermissionDenied,
)
from meshclaw.ids import new_id
from meshclaw.store.db import Database

BUILTIN = ("clock", "notes")
ADMIN = "platform_admin"


@dataclass(frozen=True, kw_only=True)
class ConnectorInfo:
    name: str
    source: Literal["settings", "store"]
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
        settings_connectors: dict[str, ConnectorConfig],
        credentials: CredentialStore,
        errlog_dir: Path | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._settings = dict(settings_connectors)
        self.credentials = credentials
        self.approvals = ToolApprovals(db, audit)
        self._errlog_dir = errlog_dir
        for name in self._settings:
            _check_name(name)

    # -- configuration ------------------------------------------------------------------

    def configs(self) -> dict[str, tuple[ConnectorConfig, Literal["settings", "store"]]]:
        found: dict[str, tuple[ConnectorConfig, Literal["settings", "store"]]] = {
            name: (config, "settings") for name, config in self._settings.items()
        }
        with self._db.session() as session:
            for row in session.scalars(select(ConnectorRecord).order_by(ConnectorRecord.name)):
                if row.name not in found:
                    found[row.name] = (ConnectorConfig.model_validate(row.config), "store")
        return dict(sorted(found.items()))

    def config(self, name: str) -> ConnectorConfig:
        found = self.configs().get(name)
        if found is None:
            raise NotFoundError(f"no connector {name!r} (see `meshclaw connector list`)")
        return found[0]

    def add(self, caller: Caller, name: str, config: dict[str, Any]) -> ConnectorInfo:
        _require_admin(caller, "add connectors")
        _check_name(name)
        try:
            parsed = ConnectorConfig.model_validate(config)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"invalid connector {name!r}: {problems}") from None
        if name in BUILTIN or name in self._settings:
            raise ConflictError(f"connector {name!r} already exists (built in or in settings)")
        with self._db.session() as session:
            if session.scalar(select(ConnectorRecord.id).where(ConnectorRecord.name == name)):
                raise ConflictError(f"connector {name!r} already exists")
            session.add(
                ConnectorRecord(
                    id=new_id("con"),
                    name=name,
                    config=parsed.model_dump(mode="json"),
                    created_by=caller.user_id,
                )
            )
            self._audit.append(
                session,
                AuditRecord(
                    action="connector.add",
                    resource=f"connector:{name}",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={"transport": parsed.transport, "target": parsed.target()},
                ),
            )
        return self._info(name, parsed, "store")

    def remove(self, caller: Caller, name: str) -> None:
        _require_admin(caller, "remove connectors")
        with self._db.session() as session:
            row = session.scalar(select(ConnectorRecord).where(ConnectorRecord.name == name))
            if row is None:
                where = " (it is in settings)" if name in self._settings else ""
                raise NotFoundError(f"no stored connector {name!r}{where}")
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

    def list_connectors(self, caller: Caller) -> list[ConnectorInfo]:
        return [self._info(n, c, source) for n, (c, source) in self.configs().items()]

    def _info(
        self, name: str, config: ConnectorConfig, source: Literal["settings", "store"]
    ) -> ConnectorInfo:
        counts = Counter(s.status for s in self.approvals.states(name))
        return ConnectorInfo(
            name=name,
            source=source,
            transport=config.transport,
            target=config.target(),
            approval=config.approval,
            tools=dict(sorted(counts.items())),
        )

    # -- connectors for runs ------------------------------------------------------------

    def build(self, name: str) -> McpConnector:
        return McpConnector(
            name,
            self.config(name),
            approvals=self.approvals,
            credentials=self.credentials,
            errlog=self._errlog(name),
        )

    def build_if_configured(self, name: str) -> McpConnector | None:
        return self.build(name) if name in self.configs() else None

    def build_all(self) -> list[McpConnector]:
        return [self.build(name) for name in self.configs()]

    def _errlog(self, name: str) -> Path | None:
        """Where a stdio server's own stderr goes (its logs), if not to ours."""
        if self._errlog_dir is None:
            return None
        return self._errlog_dir / f"connector-{name}.log"

    # -- tools and approval -------------------------------------------------------------

    async def tools(self, caller: Caller, name: str, *, refresh: bool = True) -> list[ToolState]:
        """The tools recorded for a connector; ``refresh`` lists the server's tools first."""
        self.config(name)
        if refresh:
            connector = self.build(name)
            try:
                await connector.refresh()
            finally:
                await connector.aclose()
        return self.approvals.states(name)

    def approve(
        self,
        caller: Caller,
        name: str,
        tools: list[str] | None = None,
        *,
        expected_hash: str | None = None,
    ) -> list[ToolState]:
        _require_admin(caller, "approve connector tools")
        self.config(name)
        return self.approvals.approve(
            name, tools, by=caller.user_id, expected_hash=expected_hash, org_id=caller.org_id
        )

    async def test(self, caller: Caller, name: str) -> ProbeReport:
        """Connect, list the tools, and report how it went (never raises for a bad server)."""
        self.config(name)
        connector = self.build(name)
        started = time.perf_counter()
        try:
            _, states = await connector.refresh()
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


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _check_name(name: str) -> None:
    if not CONNECTOR_NAME.match(name):
        raise ConfigError(
            f"connector name {name!r} must be lower case letters, digits, '-' or '_' "
            "(it is the first half of every 'connector.tool')"
        )
    if "__" in name:
        raise ConfigError(f"connector name {name!r} may not contain '__'")


def _require_admin(caller: Caller, what: str) -> None:
    if caller.role != ADMIN:
        raise PermissionDenied(f"only a platform admin may {what}")
