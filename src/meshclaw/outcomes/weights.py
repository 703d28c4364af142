"""Outcome type weights per org: how much one credited outcome of a type counts.

Every type has a shipped default (``outcomes.types.DEFAULT_TYPES``); platform admins
override it for their org (Cedar: ``outcome.weight`` on the ``Org``), audited. The
leaderboards and the live integrity scan read the org's weights from here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.errors import ConflictError
from meshclaw.ids import new_id
from meshclaw.outcomes.models import OutcomeTypeWeight
from meshclaw.outcomes.types import DEFAULT_TYPES
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database

SET_WEIGHT = "outcome.weight"
"""Cedar action: set the org's outcome type weights (on the ``Org``)."""


class OutcomeWeights:
    """Reading and setting an org's type weights (``OutcomeService`` owns one)."""

    def __init__(
        self,
        db: Database,
        audit: AuditSink,
        access: ApiAuthorizer,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._db = db
        self._audit = audit
        self._access = access
        self._clock = clock

    def of_org(self, org_id: str) -> dict[str, float]:
        """Every known type's weight in the org: admin-set, else the shipped default."""
        weights = {name: t.weight for name, t in DEFAULT_TYPES.items()}
        with self._db.session() as session:
            for type_name, weight in session.execute(
                select(OutcomeTypeWeight.type, OutcomeTypeWeight.weight).where(
                    OutcomeTypeWeight.org_id == org_id
                )
            ):
                weights[type_name] = weight
        return weights

    def set(self, caller: Caller, type_name: str, weight: float) -> dict[str, float]:
        """Set one type's weight in the caller's org (0 to 100); the org's weights after."""
        self._access.require(
            caller,
            SET_WEIGHT,
            ApiResource.org(caller.org_id),
            message="only platform admins set outcome type weights",
        )
        if not 0 <= weight <= 100:
            raise ConflictError("weight must be between 0 and 100")
        with self._db.session() as session:
            row = session.scalar(
                select(OutcomeTypeWeight).where(
                    OutcomeTypeWeight.org_id == caller.org_id, OutcomeTypeWeight.type == type_name
                )
            )
            if row is None:
                row = OutcomeTypeWeight(id=new_id("otw"), org_id=caller.org_id, type=type_name)
                session.add(row)
            old = row.weight
            row.weight, row.updated_by, row.updated_at = weight, caller.user_id, self._clock()
            self._audit.append(
                session,
                AuditRecord(
                    action="outcome.weight", resource=f"outcome_type:{type_name}", outcome="ok",
                    org_id=caller.org_id, actor_user_id=caller.user_id,
                    details={"weight": weight, "was": old},
                ),
            )  # fmt: skip
        return self.of_org(caller.org_id)
