"""Outcome records: from a run's write evidence to verified, accepted, durable credit.

``OutcomeService`` is the outcomes package's one entry point (API, CLI, platform):

1. ``record_run(run_id)``: for every successful write step of the run whose tool an
   outcome claim of the agent's spec covers, the type's ``Verifier`` checks the
   connector's evidence (and, where configured, the connector's current record) and an
   ``Outcome`` is stored: ``verified`` or not, with what was checked. Idempotent per step.
   A verified one asks each beneficiary but the owner for feedback, in the same
   transaction: a notification with their own signed link (``outcomes.asking``).
2. ``feedback``: a beneficiary accepts or rejects (API, CLI, or a signed one-click link);
   the owner's own acceptance is kept as evidence but never counts.
3. ``recheck_due``: the durability re-checks and silence-acceptance the scheduler runs
   (``outcomes.recheck``: claiming, back-off, the grace finding, reads through the
   gateway); their verdicts are recorded through the same feedback path as people's.
4. ``weights`` / ``set_weight`` (``outcomes.weights``) and ``cost_per_outcome``
   (``outcomes.cost``): what a credited outcome counts, and what it cost.

Every change is audited and recomputes ``Outcome.state`` (``outcomes._rules``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.connectors.base import ToolResult
from meshclaw.errors import ConflictError, NotFoundError, PermissionDenied, UserError
from meshclaw.ids import new_id
from meshclaw.integrity.findings import FindingsService
from meshclaw.outcomes._rules import STATES, UNDOING, outcome_state
from meshclaw.outcomes.asking import ask_beneficiaries, reviewers
from meshclaw.outcomes.cost import CostBy as CostBy
from meshclaw.outcomes.cost import CostRow as CostRow
from meshclaw.outcomes.cost import cost_per_outcome
from meshclaw.outcomes.links import DEFAULT_TTL, sign_link, verify_link
from meshclaw.outcomes.models import Outcome, OutcomeFeedback
from meshclaw.outcomes.recheck import CLAIM as CLAIM
from meshclaw.outcomes.recheck import RECHECK_GRACE as RECHECK_GRACE
from meshclaw.outcomes.recheck import RETRY_FIRST as RETRY_FIRST
from meshclaw.outcomes.recheck import Rechecker
from meshclaw.outcomes.recheck import RecheckSummary as RecheckSummary
from meshclaw.outcomes.recheck import RunReader as RunReader
from meshclaw.outcomes.types import OutcomeType, resolve_type
from meshclaw.outcomes.verify import (
    VERIFIERS,
    Evidence,
    Lookup,
    ToolReadLookup,
    Verification,
    Verifier,
)
from meshclaw.outcomes.weights import OutcomeWeights
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.spec.loader import parse_stored_spec
from meshclaw.store.db import Database
from meshclaw.store.models import AgentVersion, Run, RunStep, User

# ``CLAIM``, ``RECHECK_GRACE``, ``RETRY_FIRST``, ``RecheckSummary``, ``RunReader``,
# ``CostBy`` and ``CostRow`` live in ``outcomes.recheck`` and ``outcomes.cost`` and are
# re-exported here (``X as X``) for code that imported them from this module.

VERDICTS = ("accepted", *UNDOING)
RECHECK = "outcome.recheck"
"""Cedar action: run the org's due durability re-checks by hand (on the ``Org``)."""
READ = "outcome.read"
"""Cedar action: read one outcome, its evidence and its feedback (on the ``Outcome``)."""
JUDGE = "outcome.feedback"
"""Cedar action: give a verdict on one outcome (on the ``Outcome``)."""


@dataclass(frozen=True, kw_only=True)
class FeedbackInfo:
    by: str
    verdict: str
    via: str
    note: str | None
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class OutcomeInfo:
    id: str
    type: str
    ref: str
    state: str
    """credited, unverified, self, unaccepted or undone."""
    verified: bool
    verification: dict[str, Any]
    value: float
    owner: str
    team_id: str | None
    agent_id: str
    run_id: str
    tool: str
    beneficiaries: list[str]
    created_at: datetime
    durability_due_at: datetime | None
    feedback: list[FeedbackInfo] = field(default_factory=list)


def _info(o: Outcome, feedback: Sequence[OutcomeFeedback] = ()) -> OutcomeInfo:
    return OutcomeInfo(
        id=o.id, type=o.type, ref=o.ref, state=o.state, verified=o.verified,
        verification=dict(o.verification or {}), value=o.value, owner=o.user_id,
        team_id=o.team_id, agent_id=o.agent_id, run_id=o.run_id, tool=o.tool,
        beneficiaries=list(o.beneficiaries or []), created_at=o.created_at,
        durability_due_at=o.durability_due_at,
        feedback=[
            FeedbackInfo(by=f.by, verdict=f.verdict, via=f.via, note=f.note,
                         created_at=f.created_at)
            for f in feedback
        ],
    )  # fmt: skip


def _plain_address(name: str) -> str:
    """``Name <a@b>`` -> ``a@b``; anything else trimmed; lower-case."""
    _, address = parseaddr(name)
    return (address if "@" in address else name).strip().lower()


def _reviewer_id(by: str) -> str:
    """``external:<address>`` reviews count as ``external`` (someone outside the org)."""
    return "external" if by.startswith("external:") else by


class OutcomeService:
    def __init__(
        self,
        db: Database,
        audit: AuditSink,
        *,
        access: ApiAuthorizer,
        findings: FindingsService,
        link_key: bytes | Callable[[], bytes],
        lookup: Lookup | None = None,
        verifiers: Mapping[str, Verifier] | None = None,
        clock: Callable[[], datetime] = utcnow,
        claim_for: timedelta = CLAIM,
        recheck_grace: timedelta = RECHECK_GRACE,
        public_url: str | None = None,
    ) -> None:
        self._db = db
        self.public_url = public_url
        """The base of the links mailed to beneficiaries (``links.public_base``); None:
        they carry only their path (the platform does not know its public address)."""
        self._audit = audit
        self._access = access
        self._link_key_source = link_key
        self._link_key_cache: bytes | None = None
        self.lookup = lookup
        """Answers verifiers' reads instead of the gateway (tests); None in production."""
        self._verifiers = dict(VERIFIERS if verifiers is None else verifiers)
        self._clock = clock
        self._weights = OutcomeWeights(db, audit, access, clock=clock)
        self._rechecker = Rechecker(
            db,
            audit,
            findings=findings,  # where a re-check that keeps failing opens its finding
            verifiers=self._verifiers,
            lookup=lambda: self.lookup,
            add_feedback=self._add_feedback,
            clock=clock,
            claim_for=claim_for,
            recheck_grace=recheck_grace,
        )

    @property
    def _link_key(self) -> bytes:
        """Loaded on first use (creating the key file is a side effect to defer)."""
        if self._link_key_cache is None:
            source = self._link_key_source
            self._link_key_cache = source if isinstance(source, bytes) else source()
        return self._link_key_cache

    # ---- recording ---------------------------------------------------------------------

    async def record_run(
        self,
        run_id: str,
        read: Callable[[str, dict[str, Any]], Awaitable[ToolResult]] | None = None,
    ) -> list[OutcomeInfo]:
        """Record the outcomes of a finished run's writes (idempotent).

        ``read`` calls a tool in the run's context (the executor passes one): verifiers
        read the connector's real state through it, unless ``lookup`` is set.
        """
        with self._db.session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise NotFoundError(f"no run {run_id}")
            version = session.get(AgentVersion, run.agent_version_id)
            owner = session.get(User, run.user_id)
            assert version is not None and owner is not None
            steps = session.scalars(
                select(RunStep)
                .where(RunStep.run_id == run_id, RunStep.kind == "tool", RunStep.status == "ok")
                .order_by(RunStep.seq)
            ).all()
            done = set(
                session.execute(
                    select(Outcome.step_id, Outcome.type).where(Outcome.run_id == run_id)
                ).all()
            )
            run_info = (run.org_id, run.team_id, run.user_id, run.agent_id, run.id)
            owner_handle = owner.handle
            pending = [
                (s.id, s.name, dict(s.request or {}), dict((s.response or {}).get("data") or {}))
                for s in steps
            ]
        pending = [p for p in pending if isinstance(p[3].get("evidence"), dict)]
        if not pending:
            return []  # most runs write nothing: no need to parse the spec
        kinds = [resolve_type(claim) for claim in parse_stored_spec(version.spec_yaml).outcomes]
        lookup = self.lookup or (ToolReadLookup(read) if read is not None else None)
        recorded = []
        for step_id, tool, request, data in pending:
            evidence = data.get("evidence")
            if not isinstance(evidence, dict):
                continue
            for kind in kinds:
                if tool not in kind.tools or (step_id, kind.name) in done:
                    continue
                arguments = request.get("arguments") if isinstance(request, dict) else None
                ev = Evidence(
                    type=kind, tool=tool, owner=owner_handle,
                    arguments=arguments if isinstance(arguments, dict) else {}, data=evidence,
                )  # fmt: skip
                verification = await self._verify(ev, lookup)
                recorded.append(self._store(run_info, step_id, tool, kind, ev, verification))
        return recorded

    async def _verify(self, evidence: Evidence, lookup: Lookup | None) -> Verification:
        verifier = self._verifiers.get(evidence.type.name)
        if verifier is None:
            return Verification(
                verified=False,
                ref=str(evidence.data.get("ref") or evidence.data.get("id") or ""),
                detail={"reason": f"no verifier for outcome type {evidence.type.name!r}"},
            )
        try:
            return await verifier.verify(evidence, lookup)
        except Exception as exc:  # a verifier failure is an unverified outcome, not a crash
            return Verification(verified=False, ref="", detail={"reason": f"verifier: {exc}"})

    def _store(
        self,
        run_info: tuple[str, str | None, str, str, str],
        step_id: str,
        tool: str,
        kind: OutcomeType,
        evidence: Evidence,
        verification: Verification,
    ) -> OutcomeInfo:
        org_id, team_id, user_id, agent_id, run_id = run_info
        now = self._clock()
        with self._db.session() as session:
            resolved = self._directory(session, org_id, verification.beneficiaries)
            beneficiaries = _user_ids(resolved)
            outcome = Outcome(
                id=new_id("out"), org_id=org_id, team_id=team_id, user_id=user_id,
                agent_id=agent_id, run_id=run_id,
                step_id=step_id, tool=tool, type=kind.name,
                ref=verification.ref[:500] or f"step:{step_id}",
                beneficiaries=beneficiaries, verified=verification.verified,
                verification=verification.detail, evidence=evidence.data,
                value=1.0, created_at=now,
                durability_due_at=now + kind.durability
                if kind.durability and verification.verified else None,
                silence_accepts_at=now + kind.silence_accepts
                if kind.silence_accepts is not None and verification.verified else None,
            )  # fmt: skip
            outcome.state = outcome_state(
                verified=outcome.verified, owner=user_id, beneficiaries=beneficiaries, feedback=()
            )
            session.add(outcome)
            asked = reviewers(resolved, user_id) if outcome.verified else []
            ask_beneficiaries(
                session, outcome, asked, base_url=self.public_url,
                sign=lambda reviewer: self.link_for(outcome.id, reviewer),
            )  # fmt: skip
            self._audit.append(
                session,
                AuditRecord(
                    action="outcome.record", resource=f"outcome:{outcome.id}",
                    outcome="verified" if outcome.verified else "unverified", org_id=org_id,
                    actor_user_id=user_id, actor_agent_id=agent_id,
                    details={"type": kind.name, "ref": outcome.ref, "step": step_id,
                             "check": verification.detail, "asked": len(asked)},
                ),
            )  # fmt: skip
            session.flush()
            return _info(outcome)

    @classmethod
    def _directory_ids(cls, session: Session, org_id: str, names: Iterable[str]) -> list[str]:
        """Handles, mail addresses or user ids -> user ids in the org, once each; others
        are ``external``."""
        return _user_ids(cls._directory(session, org_id, names))

    @staticmethod
    def _directory(session: Session, org_id: str, names: Iterable[str]) -> list[tuple[str, str]]:
        """Each name, plain and lower-case, with its user id in the org or ``external``.
        Addresses match a person's ``email`` (or a handle that is one),
        case-insensitively; ``Name <addr>`` is read as ``addr``."""
        wanted = [_plain_address(n) for n in names if n and n.strip()]
        if not wanted:
            return []
        rows = session.execute(
            select(User.id, User.handle, User.email).where(
                User.org_id == org_id,
                func.lower(User.handle).in_(wanted) | User.email.in_(wanted) | User.id.in_(wanted),
            )
        ).all()
        by_name: dict[str, str] = {}
        for user_id, handle, address in rows:
            by_name |= {handle.lower(): user_id, user_id.lower(): user_id}
            if address:
                by_name[address] = user_id
        return [(name, by_name.get(name, "external")) for name in wanted]

    # ---- feedback ----------------------------------------------------------------------

    def feedback(
        self,
        caller: Caller,
        outcome_id: str,
        verdict: str,
        *,
        note: str | None = None,
        via: str = "api",
    ) -> OutcomeInfo:
        """A beneficiary's (or the owner's) verdict; only others' acceptance counts.

        Cedar decides (``outcome.feedback``: by default whoever received it, and the owner);
        who may not even read it gets "not found"."""
        with self._db.session() as session:
            outcome = self._readable(session, caller, outcome_id)
            self._access.require(
                caller, JUDGE, _resource(outcome),
                message="only someone who received this outcome can judge it",
            )  # fmt: skip
            return self._add_feedback(session, outcome, caller.user_id, verdict, via, note)

    def link_for_self(self, caller: Caller, outcome_id: str) -> str:
        """A one-click link for the caller's own verdict on an outcome they received.

        A link answers for its reviewer to whoever holds it, so it is only ever handed to
        that reviewer: an owner who could mint one for a colleague could click it herself
        and credit her own outcome. Links to other people are sent by the platform with
        the message it delivers (``outcomes.asking``), never returned to a person.
        """
        outcome = self.get(caller, outcome_id)
        if caller.user_id not in outcome.beneficiaries or caller.user_id == outcome.owner:
            raise PermissionDenied(
                "a feedback link is only given to the person it is for, and only someone "
                "who received this outcome can judge it"
            )
        return self.link_for(outcome_id, caller.user_id)

    def link_for(self, outcome_id: str, reviewer: str, *, ttl: Any = DEFAULT_TTL) -> str:
        """A signed one-click link token for ``reviewer`` (a user id or ``external:<addr>``)."""
        return sign_link(self._link_key, outcome_id, reviewer, ttl=ttl)

    def check_link(self, token: str) -> OutcomeInfo:
        """The outcome a valid link is about (for the page that offers the verdicts)."""
        claim = verify_link(self._link_key, token, now=self._clock())
        with self._db.session() as session:
            outcome = self._outcome(session, claim.outcome_id, None)
            return _info(outcome)

    def feedback_by_link(self, token: str, verdict: str, *, note: str | None = None) -> OutcomeInfo:
        """A verdict through a signed link. A link sent to an address that belongs to
        someone in the outcome's org answers for that person (so the owner's own address
        is the owner, whose acceptance never counts), not for an outsider."""
        claim = verify_link(self._link_key, token, now=self._clock())
        with self._db.session() as session:
            outcome = self._outcome(session, claim.outcome_id, None)
            by = claim.reviewer
            if by.startswith("external:"):
                (member,) = self._directory_ids(session, outcome.org_id, [by[len("external:") :]])
                by = by if member == "external" else member
            return self._add_feedback(session, outcome, by, verdict, "link", note)

    def _add_feedback(
        self,
        session: Session,
        outcome: Outcome,
        by: str,
        verdict: str,
        via: str,
        note: str | None,
    ) -> OutcomeInfo:
        if verdict not in VERDICTS:
            raise ConflictError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        session.add(
            OutcomeFeedback(
                id=new_id("fbk"), org_id=outcome.org_id, outcome_id=outcome.id, by=by,
                verdict=verdict, via=via, note=note, created_at=self._clock(),
            )
        )  # fmt: skip
        session.flush()
        feedback = self._feedback_rows(session, outcome.id)
        before = outcome.state
        outcome.state = self._state(outcome, feedback)
        if verdict == "accepted" or feedback:
            outcome.silence_accepts_at = None  # someone spoke: silence no longer applies
        self._audit.append(
            session,
            AuditRecord(
                action="outcome.feedback", resource=f"outcome:{outcome.id}", outcome=verdict,
                org_id=outcome.org_id,
                actor_user_id=by if by.startswith("usr_") else None,
                details={"by": by, "via": via, "state": outcome.state, "was": before,
                         "self": by == outcome.user_id},
            ),
        )  # fmt: skip
        return _info(outcome, feedback)

    @staticmethod
    def _feedback_rows(session: Session, outcome_id: str) -> list[OutcomeFeedback]:
        return list(
            session.scalars(
                select(OutcomeFeedback)
                .where(OutcomeFeedback.outcome_id == outcome_id)
                .order_by(OutcomeFeedback.created_at, OutcomeFeedback.id)
            )
        )

    @staticmethod
    def _state(outcome: Outcome, feedback: Sequence[OutcomeFeedback]) -> str:
        return outcome_state(
            verified=outcome.verified,
            owner=outcome.user_id,
            beneficiaries=list(outcome.beneficiaries or []),
            feedback=[(f.created_at, _reviewer_id(f.by), f.verdict) for f in feedback],
        )

    def _readable(self, session: Session, caller: Caller, outcome_id: str) -> Outcome:
        """The outcome if Cedar lets ``caller`` read it (``outcome.read``); else, as for
        one that does not exist, ``NotFoundError``: a refusal never says it exists."""
        outcome = self._outcome(session, outcome_id, None)
        if not self._access.authorize_api(caller, READ, _resource(outcome)).allowed:
            raise NotFoundError(f"no outcome {outcome_id}")
        return outcome

    @staticmethod
    def _outcome(session: Session, outcome_id: str, org_id: str | None) -> Outcome:
        outcome = session.get(Outcome, outcome_id)
        if outcome is None or (org_id is not None and outcome.org_id != org_id):
            raise NotFoundError(f"no outcome {outcome_id}")
        return outcome

    # ---- durability --------------------------------------------------------------------

    def authorize_recheck(self, caller: Caller) -> str:
        """The org whose due re-checks ``caller`` may run by hand (``outcome.recheck``)."""
        self._access.require(
            caller,
            RECHECK,
            ApiResource.org(caller.org_id),
            message="only platform admins run durability re-checks by hand",
        )
        return caller.org_id

    async def recheck_due(
        self,
        *,
        org_id: str | None = None,
        now: datetime | None = None,
        limit: int = 500,
        reader: RunReader | None = None,
    ) -> RecheckSummary:
        """Durability re-checks and silence-acceptance that are due.

        ``org_id`` limits the work to one org (what an admin may start by hand); None is
        the whole install (the scheduler's job). ``reader`` reads a connector in the
        context of the outcome's run, through the gateway (``Platform.recheck_outcomes``
        passes one); ``lookup``, when set, answers instead (tests). Safe to run
        concurrently: each outcome is claimed before it is judged (``outcomes._durability``).

        A re-check that needs a read stays due while there is nothing to read with, and
        so does one whose read failed or was refused by the platform (the tool is no
        longer offered, the spec does not grant it, the policy denies it or holds it for
        an approval nobody can give once the run has ended): a refusal is no evidence
        either way, so it is retried, and past ``recheck_grace`` it opens the same
        finding as a failing read (``outcomes.recheck``).
        """
        return await self._rechecker.run(org_id=org_id, now=now, limit=limit, reader=reader)

    # ---- reading -----------------------------------------------------------------------

    def get(self, caller: Caller, outcome_id: str) -> OutcomeInfo:
        """One outcome with its feedback, if Cedar lets ``caller`` read it (``outcome.read``:
        by default its owner, the people who received it, and the org's platform admins and
        auditors); else "not found", also across orgs."""
        with self._db.session() as session:
            outcome = self._readable(session, caller, outcome_id)
            return _info(outcome, self._feedback_rows(session, outcome_id))

    def list_outcomes(
        self,
        caller: Caller,
        *,
        to_review: bool = False,
        state: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[OutcomeInfo]:
        """The caller's own outcomes, or (``to_review``) those addressed to them; newest
        first (ties by id, so pages never skip or repeat one), ``offset`` skips."""
        if state is not None and state not in STATES:
            raise UserError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        with self._db.session() as session:
            query = select(Outcome).where(Outcome.org_id == caller.org_id)
            if not to_review:
                query = query.where(Outcome.user_id == caller.user_id)
            else:
                # ``beneficiaries`` is a JSON list of user ids and "external": the quoted id
                # in its text matches exactly one element, and the filter and the limit
                # stay in SQL instead of loading every outcome of the org.
                query = query.where(
                    Outcome.user_id != caller.user_id,
                    cast(Outcome.beneficiaries, Text).contains(
                        json.dumps(caller.user_id), autoescape=True
                    ),
                )
            if state is not None:
                query = query.where(Outcome.state == state)
            query = query.order_by(Outcome.created_at.desc(), Outcome.id.desc())
            query = query.offset(offset).limit(limit)
            return [_info(r) for r in session.scalars(query)]

    # ---- weights and cost --------------------------------------------------------------

    def weights(self, org_id: str) -> dict[str, float]:
        """Every known type's weight in the org: admin-set, else the shipped default."""
        return self._weights.of_org(org_id)

    def set_weight(self, caller: Caller, type_name: str, weight: float) -> dict[str, float]:
        """Set one type's weight in the caller's org if Cedar allows (``outcome.weight``)."""
        return self._weights.set(caller, type_name, weight)

    def cost_per_outcome(
        self, org_id: str, *, by: CostBy = "agent", only: Mapping[str, str] | None = None
    ) -> list[CostRow]:
        """Model and tool spend over accepted, durable outcomes, per agent, user or team.

        ``only`` restricts to a column value (``{"user_id": ...}``); callers apply the
        privacy tier (``analytics.privacy``) before showing rows.
        """
        return cost_per_outcome(self._db, org_id, by=by, only=only)


def _resource(outcome: Outcome) -> ApiResource:
    """An outcome as Cedar sees it: org, owner, agent, type, team and who received it."""
    return ApiResource.outcome(
        id=outcome.id, org_id=outcome.org_id, owner_id=outcome.user_id,
        agent_id=outcome.agent_id, type_name=outcome.type,
        beneficiaries=tuple(str(b) for b in outcome.beneficiaries or ()),
        team_id=outcome.team_id,
    )  # fmt: skip


def _user_ids(resolved: Iterable[tuple[str, str]]) -> list[str]:
    """The user ids (or ``external``) of ``_directory``'s pairs, once each, in order."""
    return list(dict.fromkeys(user for _, user in resolved))
