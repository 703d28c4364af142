"""Stored agents and their immutable spec versions.

Every change to a spec inserts a new ``AgentVersion``; nothing is updated in place,
and runs record the version they used. Saving an identical spec is a no-op.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import ConflictError, NotFoundError, SpecError, SpecIssue
from meshclaw.ids import new_id
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.cedar import PolicyStore
from meshclaw.spec.diff import diff_specs
from meshclaw.spec.loader import dump_spec, parse_stored_spec
from meshclaw.spec.models import AgentSpec
from meshclaw.store.db import Database
from meshclaw.store.models import Agent, AgentVersion, User


@dataclass(frozen=True, kw_only=True)
class AgentInfo:
    id: str
    name: str
    org_id: str
    team_id: str | None
    owner_id: str
    owner_handle: str
    version: int
    """The latest version."""
    created_at: datetime
    spec: AgentSpec
    archived_at: datetime | None = None
    """Set when archived: no new runs, its triggers stop; its history stays readable."""


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    version: int
    spec_hash: str
    created_by: str
    created_at: datetime
    spec_yaml: str


def agent_resource(agent: Agent | AgentInfo) -> ApiResource:
    """An agent as the subject of an API action."""
    return ApiResource.agent(
        id=agent.id,
        org_id=agent.org_id,
        owner_id=agent.owner_id,
        team_id=agent.team_id,
        name=agent.name,
    )


def _hash(canonical_yaml: str) -> str:
    return hashlib.sha256(canonical_yaml.encode()).hexdigest()


class AgentRegistry:
    def __init__(self, db: Database, audit: AuditSink, access: ApiAuthorizer | None = None) -> None:
        self._db = db
        self._audit = audit
        self._access = access or ApiAuthorizer(PolicyStore())

    @property
    def access(self) -> ApiAuthorizer:
        """The Cedar check for API actions; services that build on agents share it."""
        return self._access

    def save(self, caller: Caller, spec: AgentSpec) -> tuple[AgentInfo, bool]:
        """Create the agent, or add a version if the spec changed. Returns (agent, changed)."""
        canonical = dump_spec(spec)
        digest = _hash(canonical)
        with self._db.session() as session:
            owner = self._owner(session, caller, spec)
            agent = session.scalar(
                select(Agent).where(Agent.org_id == caller.org_id, Agent.name == spec.name)
            )
            if agent is None:
                agent = Agent(
                    id=new_id("agt"),
                    org_id=caller.org_id,
                    team_id=owner.team_id,
                    owner_id=owner.id,
                    name=spec.name,
                    latest_version=1,
                )
                session.add(agent)
                session.flush()
                action = "agent.create"
            else:
                self._check_can_edit(caller, agent)
                if agent.archived_at is not None:
                    raise ConflictError(
                        f"agent {agent.name!r} is archived: restore it first "
                        f"(meshclaw agent restore {agent.name}) to change it"
                    )
                latest = self._version_row(session, agent.id, agent.latest_version)
                if latest.spec_hash == digest:
                    return self._info(session, agent), False
                agent.latest_version += 1
                agent.owner_id = owner.id
                agent.team_id = owner.team_id
                action = "agent.update"
            session.add(
                AgentVersion(
                    id=new_id("agv"),
                    agent_id=agent.id,
                    version=agent.latest_version,
                    spec_yaml=canonical,
                    spec_hash=digest,
                    created_by=caller.user_id,
                )
            )
            self._audit.append(
                session,
                AuditRecord(
                    action=action,
                    resource=f"agent:{agent.id}",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={"name": agent.name, "version": agent.latest_version, "hash": digest},
                ),
            )
            return self._info(session, agent), True

    def get(self, caller: Caller, name_or_id: str) -> AgentInfo:
        with self._db.session() as session:
            return self._info(session, self._readable(session, caller, name_or_id))

    def archive(self, caller: Caller, name_or_id: str) -> AgentInfo:
        """Archive an agent (``agent.update``: its owner or a platform admin): it starts no
        new runs and its triggers stop; nothing is deleted (its runs, outcomes, versions
        and audit records stay). A run already queued or running goes on."""
        return self._set_archived(caller, name_or_id, archived=True)

    def restore(self, caller: Caller, name_or_id: str) -> AgentInfo:
        """Undo ``archive``: the agent runs and its triggers fire again."""
        return self._set_archived(caller, name_or_id, archived=False)

    def _set_archived(self, caller: Caller, name_or_id: str, *, archived: bool) -> AgentInfo:
        with self._db.session() as session:
            agent = self._readable(session, caller, name_or_id)
            self._check_can_edit(caller, agent)
            if (agent.archived_at is not None) == archived:
                state = "archived" if archived else "not archived"
                raise ConflictError(f"agent {agent.name!r} is already {state}")
            agent.archived_at = utcnow() if archived else None
            self._audit.append(
                session,
                AuditRecord(
                    action="agent.archive" if archived else "agent.restore",
                    resource=f"agent:{agent.id}",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={"name": agent.name},
                ),
            )
            return self._info(session, agent)

    def list_agents(
        self,
        caller: Caller,
        *,
        limit: int | None = None,
        offset: int = 0,
        include_archived: bool = False,
    ) -> list[AgentInfo]:
        """The agents ``caller`` may read, by name; ``offset``/``limit`` count readable ones
        (each is authorised, so the page is cut after the policy, not in SQL). Archived
        agents only with ``include_archived``."""
        with self._db.session() as session:
            query = select(Agent).where(Agent.org_id == caller.org_id).order_by(Agent.name)
            if not include_archived:
                query = query.where(Agent.archived_at.is_(None))
            agents = session.scalars(query)
            readable = (
                a
                for a in agents
                if self._access.authorize_api(caller, "agent.read", agent_resource(a)).allowed
            )
            end = None if limit is None else offset + limit
            return [self._info(session, a) for a in itertools.islice(readable, offset, end)]

    def versions(
        self, caller: Caller, name_or_id: str, *, limit: int | None = None, offset: int = 0
    ) -> list[VersionInfo]:
        """The agent's versions, oldest first; ``offset`` skips, ``limit`` caps the page."""
        with self._db.session() as session:
            agent = self._readable(session, caller, name_or_id)
            rows = session.scalars(
                select(AgentVersion)
                .where(AgentVersion.agent_id == agent.id)
                .order_by(AgentVersion.version)
                .offset(offset)
                .limit(limit)
            ).all()
            return [
                VersionInfo(
                    version=r.version,
                    spec_hash=r.spec_hash,
                    created_by=r.created_by,
                    created_at=r.created_at,
                    spec_yaml=r.spec_yaml,
                )
                for r in rows
            ]

    def version(self, caller: Caller, name_or_id: str, version: int) -> tuple[str, AgentVersion]:
        """(agent id, version row) for a specific version."""
        with self._db.session() as session:
            agent = self._readable(session, caller, name_or_id)
            return agent.id, self._version_row(session, agent.id, version)

    def diff(self, caller: Caller, name_or_id: str, old: int, new: int) -> str:
        _, a = self.version(caller, name_or_id, old)
        _, b = self.version(caller, name_or_id, new)
        return diff_specs(a.spec_yaml, b.spec_yaml, f"v{old}", f"v{new}")

    # -- helpers ------------------------------------------------------------------------

    def _owner(self, session: Session, caller: Caller, spec: AgentSpec) -> User:
        owner = session.scalar(
            select(User).where(
                User.org_id == caller.org_id, or_(User.handle == spec.owner, User.id == spec.owner)
            )
        )
        if owner is None:
            raise SpecError(
                [SpecIssue(path="owner", message=f"no user {spec.owner!r} in this org")]
            )
        resource = ApiResource.agent(
            id=f"new:{spec.name}", org_id=caller.org_id, owner_id=owner.id, team_id=owner.team_id
        )
        self._access.require(
            caller, "agent.create", resource, message="you can only create agents that you own"
        )
        return owner

    def _check_can_edit(self, caller: Caller, agent: Agent) -> None:
        self._access.require(
            caller,
            "agent.update",
            agent_resource(agent),
            message=f"agent {agent.name!r} belongs to someone else",
        )

    def _readable(self, session: Session, caller: Caller, name_or_id: str) -> Agent:
        """The agent, if ``caller`` may read it (``agent.read``); else not found, as if
        it did not exist: its specs and versions are the owner's business."""
        agent = self._find(session, caller, name_or_id)
        if not self._access.authorize_api(caller, "agent.read", agent_resource(agent)).allowed:
            raise NotFoundError(f"no agent {name_or_id!r}")
        return agent

    @staticmethod
    def _find(session: Session, caller: Caller, name_or_id: str) -> Agent:
        agent = session.scalar(
            select(Agent).where(
                Agent.org_id == caller.org_id,
                or_(Agent.name == name_or_id, Agent.id == name_or_id),
            )
        )
        if agent is None:
            raise NotFoundError(f"no agent {name_or_id!r}")
        return agent

    @staticmethod
    def _version_row(session: Session, agent_id: str, version: int) -> AgentVersion:
        row = session.scalar(
            select(AgentVersion).where(
                AgentVersion.agent_id == agent_id, AgentVersion.version == version
            )
        )
        if row is None:
            raise NotFoundError(f"agent has no version {version}")
        return row

    def _info(self, session: Session, agent: Agent) -> AgentInfo:
        latest = self._version_row(session, agent.id, agent.latest_version)
        owner = session.get(User, agent.owner_id)
        return AgentInfo(
            id=agent.id,
            name=agent.name,
            org_id=agent.org_id,
            team_id=agent.team_id,
            owner_id=agent.owner_id,
            owner_handle=owner.handle if owner else agent.owner_id,
            version=agent.latest_version,
            created_at=agent.created_at,
            spec=parse_stored_spec(latest.spec_yaml),
            archived_at=agent.archived_at,
        )
