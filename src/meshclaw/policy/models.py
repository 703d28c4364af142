"""Tables of the policy capability: approvals of held tool calls, the credential vault,
each org's own policies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class Approval(Base):
    """One tool call a policy held for a person to approve, bound to that exact call.

    The binding is (run, step, tool, arguments hash): an approval lets exactly that call
    through once, before ``expires_at``; any other call, or the same tool with other
    arguments, needs its own.
    """

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("run_id", "step_seq"),
        Index("ix_approvals_org_status", "org_id", "status"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    """The agent's owner: by default the person who may approve."""
    step_seq: Mapped[int] = mapped_column(Integer)
    tool_call_id: Mapped[str] = mapped_column(String(200))
    tool: Mapped[str] = mapped_column(String(200))
    """``connector.tool``."""
    action: Mapped[str] = mapped_column(String(40))
    """``tool.write`` (or ``tool.read``)."""
    arguments: Mapped[dict[str, Any]] = mapped_column()
    """The exact arguments, shown to the approver."""
    arguments_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    """Why the policy held it (the approval gates that answered)."""
    status: Mapped[str] = mapped_column(String(20), default="pending")
    """pending, approved, denied, used (the approved call went through), expired."""
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    used_at: Mapped[datetime | None]


class VaultEntry(Base):
    """One encrypted credential of one org: a reference for one user, or its default
    (``user_id=""``).

    Only ciphertext is stored: the values under a per-entry data key, and that key
    wrapped by the key-encryption key named by ``kek_id`` (which is never stored).
    """

    __tablename__ = "vault_entries"
    __table_args__ = (UniqueConstraint("org_id", "ref", "user_id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    """The org whose connectors may use it: each org has its own ``mail`` default."""
    ref: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[str] = mapped_column(String(40), default="")
    """The user whose delegated credential this is; ``""`` for the default."""
    aad_version: Mapped[int] = mapped_column(Integer, default=2)
    """What the ciphertexts are bound to (their associated data): 2 = org, reference and
    user; 1 = reference and user only (entries written before vaults were per org, until
    re-encrypted by ``put`` or ``rotate``)."""
    fields: Mapped[list[Any]] = mapped_column()
    """Names of the fields (never their values), for listings."""
    kek_id: Mapped[str] = mapped_column(String(16))
    wrapped_dek: Mapped[str] = mapped_column(Text)
    """base64(nonce || AES-GCM(KEK, data key))."""
    ciphertext: Mapped[str] = mapped_column(Text)
    """base64(nonce || AES-GCM(data key, JSON of the values))."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OrgPolicyVersion(Base):
    """One version of an org's own Cedar policies; the highest version is in force.

    Rows are never changed or deleted: saving a text adds the next version (going back
    to an older text is a new version too). ``id`` increases with every save of any
    org, so ``max(id)`` is the install's policy generation, which each process checks
    cheaply to learn that its cached policy sets are stale.
    """

    __tablename__ = "org_policy_versions"
    __table_args__ = (UniqueConstraint("org_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    version: Mapped[int] = mapped_column(Integer)
    """1, 2, ... per org."""
    text: Mapped[str] = mapped_column(Text)
    """The org's policies (Cedar), validated against the schema when saved."""
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str] = mapped_column(Text, default="")
    """Why it changed, as the author wrote it."""
