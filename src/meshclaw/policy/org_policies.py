"""Each org's own Cedar policies: stored, versioned, validated on save, audited.

``OrgPolicyRows`` is the ``cedar.OrgPolicySource`` the ``PolicyStore`` reads (the current
text of an org, and the install's policy generation: ``max(id)`` of the versions table,
one index lookup). ``OrgPolicies`` is the service the API, CLI and dashboard call, as the
signed-in person: ``policy.read`` to see the org's policies and their versions,
``policy.manage`` to save a new version. Saving validates the text against the schema
(with the built-ins and the operator's policies) first: an invalid text is rejected with
every problem and its line, and the version in force stays. Every save, and every
rejected one, is audited as ``policy.update``.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.errors import ConflictError, NotFoundError, PolicyError, PolicyIssue
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.models import OrgPolicyVersion
from meshclaw.policy.store import OrgPolicyText, PolicyStore
from meshclaw.store.db import Database
from meshclaw.store.models import User

MAX_POLICY_CHARS = 100_000
"""The longest org policy text accepted."""

MAX_NOTE_CHARS = 1_000


@dataclass(frozen=True, kw_only=True)
class PolicyVersionInfo:
    org_id: str
    version: int
    """0: the org has never saved policies (the text is empty)."""
    text: str
    sha256: str
    created_at: datetime | None
    created_by: str | None
    """The author's handle."""
    note: str


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _empty(org_id: str) -> PolicyVersionInfo:
    return PolicyVersionInfo(
        org_id=org_id,
        version=0,
        text="",
        sha256=_sha256(""),
        created_at=None,
        created_by=None,
        note="",
    )


class OrgPolicyRows:
    """The database as an ``OrgPolicySource``: what the decision path reads."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._generation = select(func.coalesce(func.max(OrgPolicyVersion.id), 0))

    def generation(self) -> int:
        with self._db.engine.connect() as conn:
            return int(conn.execute(self._generation).scalar_one())

    def current(self, org_id: str) -> OrgPolicyText | None:
        query = (
            select(OrgPolicyVersion.version, OrgPolicyVersion.text)
            .where(OrgPolicyVersion.org_id == org_id)
            .order_by(OrgPolicyVersion.version.desc())
            .limit(1)
        )
        with self._db.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return OrgPolicyText(org_id=org_id, version=row.version, text=row.text)


class OrgPolicies:
    """The org policies service: read, save (a new version), versions, diff."""

    def __init__(
        self, db: Database, audit: AuditSink, access: ApiAuthorizer, store: PolicyStore
    ) -> None:
        self._db = db
        self._audit = audit
        self._access = access
        self._store = store

    def current(self, caller: Caller) -> PolicyVersionInfo:
        """The caller's org's policies in force (version 0 if it never saved any)."""
        self._require(caller, "policy.read")
        with self._db.session() as session:
            row = self._latest(session, caller.org_id)
            return self._info(session, row) if row else _empty(caller.org_id)

    def versions(self, caller: Caller) -> list[PolicyVersionInfo]:
        """Every version of the caller's org's policies, newest first."""
        self._require(caller, "policy.read")
        with self._db.session() as session:
            rows = session.scalars(
                select(OrgPolicyVersion)
                .where(OrgPolicyVersion.org_id == caller.org_id)
                .order_by(OrgPolicyVersion.version.desc())
            ).all()
            return [self._info(session, r) for r in rows]

    def version(self, caller: Caller, version: int) -> PolicyVersionInfo:
        self._require(caller, "policy.read")
        if version == 0:
            return _empty(caller.org_id)
        with self._db.session() as session:
            row = session.scalar(
                select(OrgPolicyVersion).where(
                    OrgPolicyVersion.org_id == caller.org_id, OrgPolicyVersion.version == version
                )
            )
            if row is None:
                raise NotFoundError(f"the org's policies have no version {version}")
            return self._info(session, row)

    def diff(self, caller: Caller, old: int, new: int) -> str:
        """A unified diff between two versions (0 is the empty start)."""
        a, b = self.version(caller, old), self.version(caller, new)
        lines = difflib.unified_diff(
            a.text.splitlines(keepends=True),
            b.text.splitlines(keepends=True),
            fromfile=f"v{old}",
            tofile=f"v{new}",
        )
        return "".join(lines)

    def save(
        self,
        caller: Caller,
        text: str,
        *,
        expected_version: int | None = None,
        note: str = "",
    ) -> tuple[PolicyVersionInfo, bool]:
        """Save ``text`` as the org's next version; ``(info, False)`` if unchanged.

        Raises ``PolicyError`` (every problem with its line; nothing is saved, the
        version in force stays) and ``ConflictError`` when ``expected_version`` is not
        the current one (someone saved in between).
        """
        self._require(caller, "policy.manage")
        issues = self._check(text, note)
        if issues:
            self._audit_rejected(caller, issues)
            raise PolicyError(issues, "org policies")
        try:
            with self._db.session() as session:
                latest = self._latest(session, caller.org_id)
                current = latest.version if latest else 0
                if expected_version is not None and expected_version != current:
                    raise ConflictError(
                        f"the org's policies are at version {current}, not {expected_version}: "
                        "someone saved in between; reload them and apply your change again"
                    )
                if (latest.text if latest else "") == text:
                    return (self._info(session, latest) if latest else _empty(caller.org_id)), False
                row = OrgPolicyVersion(
                    org_id=caller.org_id,
                    version=current + 1,
                    text=text,
                    sha256=_sha256(text),
                    created_by=caller.user_id,
                    note=note,
                )
                session.add(row)
                session.flush()
                old_lines, new_lines = (
                    (latest.text if latest else "").splitlines(),
                    text.splitlines(),
                )
                changed = list(difflib.ndiff(old_lines, new_lines))
                self._audit.append(
                    session,
                    AuditRecord(
                        action="policy.update",
                        resource=f"org:{caller.org_id}:policies",
                        outcome="ok",
                        org_id=caller.org_id,
                        actor_user_id=caller.user_id,
                        details={
                            "version": row.version,
                            "previous": current,
                            "sha256": row.sha256,
                            "lines_added": sum(1 for d in changed if d.startswith("+ ")),
                            "lines_removed": sum(1 for d in changed if d.startswith("- ")),
                            "note": note,
                        },
                    ),
                )
                info = self._info(session, row)
        except IntegrityError:
            raise ConflictError(
                "someone saved the org's policies at the same moment; reload and try again"
            ) from None
        # This process applies it at once; others on their next generation check.
        self._store.invalidate(caller.org_id)
        return info, True

    # -- internals ----------------------------------------------------------------------

    def _require(self, caller: Caller, action: str) -> None:
        self._access.require(
            caller,
            action,
            ApiResource.org(caller.org_id),
            message="Not allowed on the org's policies.",
        )

    def _check(self, text: str, note: str) -> list[PolicyIssue]:
        if len(text) > MAX_POLICY_CHARS:
            message = f"at most {MAX_POLICY_CHARS:,} characters ({len(text):,} given)"
            return [PolicyIssue(policy="", message=message)]
        if len(note) > MAX_NOTE_CHARS:
            message = f"the note has at most {MAX_NOTE_CHARS:,} characters ({len(note):,} given)"
            return [PolicyIssue(policy="", message=message)]
        if "\x00" in text:
            return [PolicyIssue(policy="", message="the text contains a NUL character")]
        return self._store.validate(text)

    def _audit_rejected(self, caller: Caller, issues: list[PolicyIssue]) -> None:
        with self._db.session() as session:
            self._audit.append(
                session,
                AuditRecord(
                    action="policy.update",
                    resource=f"org:{caller.org_id}:policies",
                    outcome="invalid",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={"problems": [str(i) for i in issues[:20]]},
                ),
            )

    @staticmethod
    def _latest(session: Session, org_id: str) -> OrgPolicyVersion | None:
        return session.scalar(
            select(OrgPolicyVersion)
            .where(OrgPolicyVersion.org_id == org_id)
            .order_by(OrgPolicyVersion.version.desc())
            .limit(1)
        )

    @staticmethod
    def _info(session: Session, row: OrgPolicyVersion) -> PolicyVersionInfo:
        author = session.get(User, row.created_by)
        return PolicyVersionInfo(
            org_id=row.org_id,
            version=row.version,
            text=row.text,
            sha256=row.sha256,
            created_at=row.created_at,
            created_by=author.handle if author else row.created_by,
            note=row.note,
        )
