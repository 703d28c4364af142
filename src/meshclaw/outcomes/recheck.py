"""Durability re-checks: is a credited outcome still done, and silence-is-acceptance.

``Rechecker.run`` is what the scheduler calls through ``OutcomeService.recheck_due``
(``Platform.recheck_outcomes`` hands it a reader that reads through the gateway as the
outcome's run). For each outcome that is due it claims the outcome
(``outcomes._durability``), asks the type's ``Verifier`` to re-check it, and records the
result while the claim holds:

- the check failed: ``system`` feedback with the type's undo verdict;
- the read failed, or the platform refused it (the tool no longer offered, not granted,
  denied or held for an approval nobody can give): no evidence either way, so the
  outcome is due again after a back-off (``RETRY_FIRST`` doubling to ``RETRY_MAX``). A
  re-check still failing or refused ``recheck_grace`` past its first due time opens one
  integrity finding about the owner (``recheck_failing``), which withholds their credit
  pending review; a later read that succeeds is noted on the outcome and the finding.

Outcomes whose type has silence-is-acceptance and whose deadline passed with nobody
speaking are accepted (by ``silence``) in the same pass. Verdicts are recorded through
the service's feedback path (``AddFeedback``), so state and audit follow one set of rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.errors import NotFoundError, PolicyDenied
from meshclaw.integrity.findings import RECHECK_FAILING, FindingsService
from meshclaw.outcomes import _durability
from meshclaw.outcomes.models import Outcome
from meshclaw.outcomes.types import DEFAULT_TYPES, OutcomeType
from meshclaw.outcomes.verify import Lookup, ToolRead, ToolReadLookup, Verifier
from meshclaw.store.db import Database

log = logging.getLogger(__name__)

CLAIM = timedelta(minutes=10)
"""How long a re-check holds an outcome it claimed before another may take it."""
RECHECK_GRACE = timedelta(hours=72)
"""How long past its first due time a re-check may keep failing before a finding about the
owner withholds the credit (the default of ``Settings.outcomes_recheck_grace_hours``)."""
FAILING = "recheck_failing"
"""Key under ``Outcome.verification``: since when its re-check fails, when it was first
due, how many tries failed, the last error, the finding it opened, and when a re-check
read again (``recovered_at``)."""
RETRY_FIRST = timedelta(minutes=15)
RETRY_MAX = timedelta(hours=6)
"""A failing or refused re-check is tried again after 15 minutes, then after twice as long
each time, at most every 6 hours: about 15 tries over a 72-hour grace instead of one per
scheduler tick (each try is a step and an audit record)."""
FAILING_DETECTOR = RECHECK_FAILING
RunReader = Callable[[str, str], Awaitable[ToolRead]]
"""(run id, call label) -> a reader in that ended run's context, through the gateway
(``runtime.executor.RunExecutor.reader_for_ended_run``)."""
AddFeedback = Callable[[Session, Outcome, str, str, str, str | None], object]
"""(session, outcome, by, verdict, via, note): records a verdict the way people's are
recorded (``OutcomeService._add_feedback``): state, silence and audit follow."""
Result = Literal["left", "holds", "undone"]
"""One re-check: ``left`` due again, the outcome ``holds``, or it was ``undone``."""


@dataclass(frozen=True, kw_only=True)
class RecheckSummary:
    checked: int = 0
    undone: int = 0
    silently_accepted: int = 0


class Rechecker:
    """The re-check loop over due outcomes; ``OutcomeService`` owns one."""

    def __init__(
        self,
        db: Database,
        audit: AuditSink,
        *,
        findings: FindingsService,
        verifiers: Mapping[str, Verifier],
        lookup: Callable[[], Lookup | None],
        add_feedback: AddFeedback,
        clock: Callable[[], datetime],
        claim_for: timedelta = CLAIM,
        recheck_grace: timedelta = RECHECK_GRACE,
    ) -> None:
        self._db = db
        self._audit = audit
        self._findings = findings
        """Where a re-check that keeps failing opens its finding (the platform's one)."""
        self._verifiers = verifiers
        self._lookup = lookup
        """The service's ``lookup`` as it is now (tests set it after construction)."""
        self._add_feedback = add_feedback
        self._clock = clock
        self._claim_for = claim_for
        self._recheck_grace = recheck_grace

    async def run(
        self,
        *,
        org_id: str | None = None,
        now: datetime | None = None,
        limit: int = 500,
        reader: RunReader | None = None,
    ) -> RecheckSummary:
        """Durability re-checks and silence-acceptance that are due (as documented on
        ``OutcomeService.recheck_due``, which callers use)."""
        now = now or self._clock()
        in_org = [Outcome.org_id == org_id] if org_id is not None else []
        with self._db.session() as session:
            due = _durability.due_outcomes(session, now=now, org_id=org_id, limit=limit)
            quiet = session.scalars(
                select(Outcome.id)
                .where(Outcome.silence_accepts_at.is_not(None), Outcome.silence_accepts_at <= now,
                       *in_org)
                .limit(limit)
            ).all()  # fmt: skip
        silent = 0
        for outcome_id in quiet:
            with self._db.session() as session:
                if not self._claim_silence(session, outcome_id):
                    continue  # someone spoke, or another re-check took it
                outcome = session.get(Outcome, outcome_id)
                if outcome is None:
                    raise NotFoundError(f"no outcome {outcome_id}")
                self._add_feedback(session, outcome, "silence", "accepted", "system", None)
                silent += 1
        results = [await self._recheck_one(d, now, reader) for d in due]
        return RecheckSummary(
            checked=results.count("holds") + results.count("undone"),
            undone=results.count("undone"),
            silently_accepted=silent,
        )

    async def _recheck_one(
        self, due: _durability.Due, now: datetime, reader: RunReader | None
    ) -> Result:
        kind = due.kind or DEFAULT_TYPES.get(due.type, OutcomeType(name=due.type))
        verifier = self._verifiers.get(due.type)
        reads = verifier is not None and kind.verify_tool is not None
        if reads and self._lookup() is None and reader is None:
            return "left"  # nothing to read the connector with here: stays due
        until = now + self._claim_for
        with self._db.session() as session:
            if not _durability.claim(session, due.id, now=now, until=until):
                return "left"  # another re-check has it
        try:
            lookup = self._lookup()
            if reads and lookup is None and reader is not None:
                lookup = ToolReadLookup(await reader(due.run_id, f"recheck-{due.id}"))
            undone = None
            if verifier is not None:
                undone = await verifier.recheck(kind, due.ref, due.owner, lookup)
        except PolicyDenied as exc:  # refused by the platform: cannot tell now, due again
            log.info("outcome %s: re-check read refused: %s", due.id, exc)
            reason = f"read refused: {exc}"
            return self._settle(due, now, until, "left", None, reason, note="refused")
        except Exception as exc:  # cannot tell now (connector down): due again
            log.info("outcome %s: re-check read failed: %s", due.id, exc)
            reason = f"read failed: {type(exc).__name__}: {exc}"
            return self._settle(due, now, until, "left", None, reason)
        if undone is None:
            return self._settle(due, now, until, "holds", None, None)
        return self._settle(due, now, until, "undone", undone.verdict, undone.reason)

    def _settle(
        self,
        due: _durability.Due,
        now: datetime,
        until: datetime,
        result: Result,
        verdict: str | None,
        reason: str | None,
        *,
        note: Literal["due", "refused"] = "due",
    ) -> Result:
        """Record a re-check's result while our claim holds (else another re-check has it).

        ``left`` is due again as before, with why (``note``: the read failed, ``due``, or
        the platform refused it, ``refused``)."""
        with self._db.session() as session:
            if result == "left":
                outcome = _durability.settle(session, due.id, until=until, due_at=due.due_at)
                if outcome is not None:
                    outcome.verification = _durability.with_note(outcome, note, now, reason)
                    outcome.durability_due_at = self._note_failure(
                        session, outcome, due, now, reason or ""
                    )
                return "left"
            outcome = _durability.settle(
                session, due.id, until=until, due_at=None, durability_checked_at=now
            )
            if outcome is None:
                return "left"
            outcome.verification = _durability.with_note(outcome, result, now, reason)
            self._note_recovery(session, outcome, now, result)
            self._audit.append(
                session,
                AuditRecord(
                    action="outcome.recheck", resource=f"outcome:{due.id}", outcome=result,
                    org_id=outcome.org_id,
                    details={"type": due.type, "ref": due.ref, "run": due.run_id}
                    | ({"reason": reason} if reason else {}),
                ),
            )  # fmt: skip
            if verdict is not None:
                self._add_feedback(session, outcome, "system", verdict, "system",
                                   "durability re-check")  # fmt: skip
        return result

    def _note_failure(
        self, session: Session, outcome: Outcome, due: _durability.Due, now: datetime, error: str
    ) -> datetime:
        """Keep when the re-check started failing; once it has failed past the grace (from
        its first due time), open one finding about the owner (their credit waits for a
        reviewer). Returns when to try again (``RETRY_FIRST`` doubling to ``RETRY_MAX``)."""
        failing = dict((outcome.verification or {}).get(FAILING) or {})
        if "recovered_at" in failing:  # failing again after a recovery: a new episode
            failing = {k: v for k, v in failing.items() if k == "finding"}
        failing.setdefault("since", now.isoformat())
        first_due = datetime.fromisoformat(failing.setdefault("first_due", due.due_at.isoformat()))
        failing["tries"] = int(failing.get("tries", 0)) + 1
        failing["last_error"] = error[:500]
        if "finding" not in failing and now - first_due >= self._recheck_grace:
            failing["finding"] = self._findings.open_for_platform(
                session, org_id=outcome.org_id, subject=outcome.user_id,
                detector=FAILING_DETECTOR, source=f"outcome.recheck:{outcome.id}",
                evidence={
                    "outcome": outcome.id, "type": outcome.type, "ref": outcome.ref,
                    "run": outcome.run_id, "due_at": first_due.isoformat(),
                    "first_failure": failing["since"], "last_error": failing["last_error"],
                },
            )  # fmt: skip
        outcome.verification = {**(outcome.verification or {}), FAILING: failing}
        tries: int = failing["tries"]
        return now + min(RETRY_FIRST * (1 << min(tries - 1, 16)), RETRY_MAX)

    def _note_recovery(
        self, session: Session, outcome: Outcome, now: datetime, result: str
    ) -> None:
        """A re-check read again after failing: say so on the outcome, and on its finding
        (which stays for the reviewer to decide)."""
        failing = (outcome.verification or {}).get(FAILING)
        if not failing or "recovered_at" in failing:
            return
        at = now.isoformat()
        outcome.verification = {
            **(outcome.verification or {}),
            FAILING: {**failing, "recovered_at": at},
        }
        if "finding" in failing:
            self._findings.annotate(session, failing["finding"], recovered_at=at,
                                    recovered_as=result)  # fmt: skip

    @staticmethod
    def _claim_silence(session: Session, outcome_id: str) -> bool:
        """Clear a silence deadline if it is still set: True for the one caller that did
        (the acceptance is written in the same transaction, so nothing is lost)."""
        result = session.execute(
            update(Outcome)
            .where(Outcome.id == outcome_id, Outcome.silence_accepts_at.is_not(None))
            .values(silence_accepts_at=None)
        )
        return bool(getattr(result, "rowcount", 0) == 1)
