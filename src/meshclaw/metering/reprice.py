"""Re-pricing history after the price table changed (``meshclaw usage reprice``).

Each model usage record is priced again by the entry in force *when the call was made*
(``effective_from``), its cost and ``price_version`` updated, and the run step's cost with
it. Records are read in batches by id, all in one transaction with one ``usage.reprice``
audit event recording the scope, the table version and the totals before and after:
history is re-priced entirely, with its audit record, or not at all.
Only platform admins may re-price (``usage.reprice`` on the org, a Cedar decision): it
changes what every report shows. Each changed
record of a past day marks that day stale in the daily usage roll-up (a database trigger,
``metering.rollup``), so reports sum the new costs without anything done here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.metering.prices import PriceSource, from_nano, to_nano
from meshclaw.metering.usage import builtin_access
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.providers.base import Usage
from meshclaw.store.db import Database
from meshclaw.store.models import RunStep, UsageRecord

BATCH = 500


@dataclass(frozen=True, kw_only=True)
class RepriceResult:
    version: str
    examined: int
    """Model usage records in scope."""
    changed: int
    """Records whose cost or price version changed."""
    unpriced: int
    """Records whose model has no price in the table (cost set to 0)."""
    before_usd: Decimal
    after_usd: Decimal
    dry_run: bool


def reprice(
    db: Database,
    audit: AuditSink,
    prices: PriceSource,
    caller: Caller,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
    access: ApiAuthorizer | None = None,
) -> RepriceResult:
    """Re-price the caller's org's model usage; ``access`` is the platform's authoriser
    (default: the built-in policies alone)."""
    (access or builtin_access()).require(
        caller,
        "usage.reprice",
        ApiResource.org(caller.org_id),
        message="only a platform admin can re-price usage",
    )
    table = prices.for_org(caller.org_id)  # the file plus the org's own prices
    examined = changed = unpriced = before = after = 0
    last_id = ""
    with db.session() as session:
        while True:
            query = (
                select(UsageRecord)
                .where(
                    UsageRecord.org_id == caller.org_id,
                    UsageRecord.kind == "model",
                    UsageRecord.id > last_id,
                )
                .order_by(UsageRecord.id)
                .limit(BATCH)
            )
            if since is not None:
                query = query.where(UsageRecord.created_at >= since)
            if until is not None:
                query = query.where(UsageRecord.created_at < until)
            rows = list(session.scalars(query))
            if not rows:
                break
            last_id = rows[-1].id
            for row in rows:
                examined += 1
                before += row.cost_nano_usd
                usage = Usage(
                    input_tokens=row.input_tokens,
                    output_tokens=row.output_tokens,
                    cached_tokens=row.cached_tokens,
                    cache_write_tokens=row.cache_write_tokens,
                    reasoning_tokens=row.reasoning_tokens,
                )
                cost = table.cost_usd(row.provider or "", row.model or "", usage, row.created_at)
                new_nano = to_nano(cost) if cost is not None else 0
                version = table.version if cost is not None else None
                unpriced += cost is None
                after += new_nano
                if (new_nano, version) == (row.cost_nano_usd, row.price_version):
                    continue
                changed += 1
                if dry_run:
                    continue
                row.cost_nano_usd, row.price_version = new_nano, version
                if row.step_id is not None:
                    session.execute(
                        update(RunStep)
                        .where(RunStep.id == row.step_id)
                        .values(cost_nano_usd=new_nano)
                    )
            session.flush()
            session.expunge_all()  # constant memory over long histories
        if not dry_run:
            audit.append(
                session,
                AuditRecord(
                    action="usage.reprice",
                    resource=f"prices:{table.version}",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={
                        "since": since.isoformat() if since else None,
                        "until": until.isoformat() if until else None,
                        "examined": examined,
                        "changed": changed,
                        "unpriced": unpriced,
                        # Decimal strings: totals can exceed JSON's safe integers.
                        "before_usd": str(from_nano(before)),
                        "after_usd": str(from_nano(after)),
                    },
                ),
            )
    result = RepriceResult(
        version=table.version,
        examined=examined,
        changed=changed,
        unpriced=unpriced,
        before_usd=from_nano(before),
        after_usd=from_nano(after),
        dry_run=dry_run,
    )
    return result
