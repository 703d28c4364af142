"""Tables of the connectors capability: configured MCP servers and approved tool definitions.

Both belong to an org: a connector name is unique within its org (two orgs may each
have a ``mail``), and a tool approved in one org is not approved in another.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class ConnectorRecord(Base):
    """A connector an org's platform admin added at run time (``meshclaw connector add``)."""

    __tablename__ = "connectors"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    """The org whose agents may use it; nobody outside it learns it exists."""
    name: Mapped[str] = mapped_column(String(63))
    config: Mapped[dict[str, Any]] = mapped_column()
    """A ``ConnectorConfig`` as JSON (no secrets: credentials are references)."""
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConnectorTool(Base):
    """One tool a connector's server offered: what it looks like now and what was approved.

    A tool is callable only while ``definition_hash == approved_hash``: a server that
    changes a tool's description or schema after approval (a "rug pull") is blocked
    until an admin approves the new definition.
    """

    __tablename__ = "connector_tools"
    __table_args__ = (UniqueConstraint("org_id", "connector", "tool"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    """The org of the connector; ``""`` for a connector used outside any org (a
    standalone ``McpConnector`` in tests or probes). No foreign key for that reason."""
    connector: Mapped[str] = mapped_column(String(63))
    tool: Mapped[str] = mapped_column(String(200))
    definition: Mapped[dict[str, Any]] = mapped_column()
    """The definition last seen (name, description, schemas, annotations)."""
    definition_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the RFC 8785 canonical JSON of ``definition``."""
    approved_hash: Mapped[str | None] = mapped_column(String(64))
    approved_definition: Mapped[dict[str, Any] | None] = mapped_column()
    approved_by: Mapped[str | None] = mapped_column(String(200))
    """A user id, or ``first-use`` when the connector trusts first sight."""
    approved_at: Mapped[datetime | None] = mapped_column()
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
