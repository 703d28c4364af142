"""Approved tool definitions: the rug-pull defence.

Every time a connector lists its server's tools, each definition is hashed (SHA-256
over RFC 8785 canonical JSON) and recorded. A tool may be offered and called only while
its current hash equals the hash an admin approved; a server that later changes a
tool's description, schema or annotations is blocked until someone re-approves.

Approvals belong to an org: ``ToolApprovals`` is one org's view (``org_id``), so an
approval given by one org's admin never makes a tool callable in another org.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import rfc8785
from sqlalchemy import ColumnElement, and_, delete, select
from sqlalchemy.exc import IntegrityError

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.connectors.models import ConnectorTool
from meshclaw.errors import ConflictError, NotFoundError
from meshclaw.ids import new_id
from meshclaw.store.db import Database

ToolStatus = Literal["approved", "pending", "changed"]
FIRST_USE = "first-use"
UNSCOPED = ""
"""The org of approvals recorded by a connector used outside any org (tests, probes)."""


def definition_hash(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(dict(definition))).hexdigest()


@dataclass(frozen=True, kw_only=True)
class ToolState:
    connector: str
    tool: str
    status: ToolStatus
    """``approved``: callable. ``pending``: never approved. ``changed``: blocked."""
    definition: dict[str, Any]
    definition_hash: str
    approved_hash: str | None
    approved_by: str | None
    approved_at: datetime | None
    last_seen_at: datetime


def _state(row: ConnectorTool) -> ToolState:
    status: ToolStatus
    if row.approved_hash is None:
        status = "pending"
    elif row.approved_hash == row.definition_hash:
        status = "approved"
    else:
        status = "changed"
    return ToolState(
        connector=row.connector,
        tool=row.tool,
        status=status,
        definition=row.definition,
        definition_hash=row.definition_hash,
        approved_hash=row.approved_hash,
        approved_by=row.approved_by,
        approved_at=row.approved_at,
        last_seen_at=row.last_seen_at,
    )


class ToolApprovals:
    """The recorded tools and approvals of one org's connectors."""

    def __init__(
        self, db: Database, audit: AuditSink | None = None, *, org_id: str = UNSCOPED
    ) -> None:
        self._db = db
        self._audit = audit
        self.org_id = org_id

    def _of(self, connector: str) -> ColumnElement[bool]:
        """The rows of one connector of this org."""
        return and_(ConnectorTool.org_id == self.org_id, ConnectorTool.connector == connector)

    def observe(
        self, connector: str, definitions: Mapping[str, Mapping[str, Any]], *, first_use: bool
    ) -> dict[str, ToolState]:
        """Record the definitions a server offers now; return each tool's state."""
        try:
            return self._observe(connector, definitions, first_use)
        except IntegrityError:
            # Another run recorded the same new tool at the same moment: read it back.
            return self._observe(connector, definitions, first_use)

    def _observe(
        self, connector: str, definitions: Mapping[str, Mapping[str, Any]], first_use: bool
    ) -> dict[str, ToolState]:
        now = utcnow()
        states: dict[str, ToolState] = {}
        with self._db.session() as session:
            rows = {
                r.tool: r for r in session.scalars(select(ConnectorTool).where(self._of(connector)))
            }
            for name, definition in definitions.items():
                digest = definition_hash(definition)
                row = rows.get(name)
                if row is None:
                    row = ConnectorTool(
                        id=new_id("ctl"),
                        org_id=self.org_id,
                        connector=connector,
                        tool=name,
                        definition=dict(definition),
                        definition_hash=digest,
                        first_seen_at=now,
                        last_seen_at=now,
                    )
                    if first_use:
                        row.approved_hash = digest
                        row.approved_definition = dict(definition)
                        row.approved_by = FIRST_USE
                        row.approved_at = now
                    session.add(row)
                else:
                    if row.definition_hash != digest:
                        row.definition = dict(definition)
                        row.definition_hash = digest
                    row.last_seen_at = now
                states[name] = _state(row)
        return states

    def states(self, connector: str) -> list[ToolState]:
        with self._db.session() as session:
            rows = session.scalars(
                select(ConnectorTool).where(self._of(connector)).order_by(ConnectorTool.tool)
            ).all()
            return [_state(r) for r in rows]

    def approve(
        self,
        connector: str,
        tools: list[str] | None,
        *,
        by: str,
        expected_hash: str | None = None,
    ) -> list[ToolState]:
        """Approve the definitions last seen (all of the connector's tools if ``tools`` is None).

        ``expected_hash`` pins what the admin reviewed: if the server changed the tool
        again since, nothing is approved.
        """
        now = utcnow()
        with self._db.session() as session:
            query = select(ConnectorTool).where(self._of(connector))
            if tools is not None:
                query = query.where(ConnectorTool.tool.in_(tools))
            rows = list(session.scalars(query.order_by(ConnectorTool.tool)))
            missing = sorted(set(tools or []) - {r.tool for r in rows})
            if missing:
                raise NotFoundError(
                    f"connector {connector!r} has no recorded tool(s) {', '.join(missing)}; "
                    f"run `meshclaw connector tools {connector}` first"
                )
            if tools is None and not rows:
                raise NotFoundError(f"connector {connector!r} has no recorded tools yet")
            for row in rows:
                if expected_hash is not None and row.definition_hash != expected_hash:
                    raise ConflictError(
                        f"{connector}.{row.tool} is at {row.definition_hash[:12]}, "
                        f"not {expected_hash[:12]}: review it again"
                    )
                row.approved_hash = row.definition_hash
                row.approved_definition = row.definition
                row.approved_by = by
                row.approved_at = now
                if self._audit is not None:
                    self._audit.append(
                        session,
                        AuditRecord(
                            action="connector.tool.approve",
                            resource=f"tool:{connector}.{row.tool}",
                            outcome="ok",
                            org_id=self.org_id or None,
                            actor_user_id=by,
                            details={"definition_hash": row.definition_hash},
                        ),
                    )
            return [_state(r) for r in rows]

    def forget(self, connector: str) -> int:
        """Drop what was recorded for a removed connector (a new one starts unapproved)."""
        with self._db.session() as session:
            result = session.execute(delete(ConnectorTool).where(self._of(connector)))
        return int(getattr(result, "rowcount", 0) or 0)
