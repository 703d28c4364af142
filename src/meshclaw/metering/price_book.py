"""Prices a platform admin adds to their org's price table, layered on the install's file.

The price table file (``price_table``, docs/metering.md) is the install's and stays
read-only: an operator edits it. A platform admin (Cedar's ``price.write`` on the
``Org``) adds effective-dated entries for their own org: a vendor's new price from a
day on, a negotiated discount, a model the file does not know. Entries are never
changed or removed (a correction is a newer entry), so every price an org ever used
stays for history and re-pricing.

The org's table is the file's entries with the org's in front, newest first: at the
same ``effective_from`` the org's latest entry wins, an exact model name still beats a
glob, and the latest ``effective_from`` in force still wins (docs/metering.md). Its
version is the file's with ``+org<N>`` (N entries added), so a usage record names the
table that priced it. Each process keeps an org's table for ``REFRESH_SECONDS``; an
entry added here is seen at once in this process and within that time in others.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select

from meshclaw.accounts.directory import InvalidFields
from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.ids import new_id
from meshclaw.metering.price_models import OrgPrice
from meshclaw.metering.prices import MAX_VERSION, ModelPrice, PriceTable
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database

REFRESH_SECONDS = 30.0
"""How long a process keeps an org's table before reading its entries again."""
MAX_PRICE = Decimal(1_000_000)
"""Highest price accepted, USD per million tokens (a typo guard)."""
MAX_PLACES = 9
"""Most decimal places a price may have."""
PRICE_FIELDS = ("input", "output", "cached_input", "cache_write")
REQUIRED = ("input", "output")
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(9999, 12, 31)
PRICE_WRITE = "price.write"


@dataclass(frozen=True, kw_only=True)
class PriceEntryInfo:
    """One price an admin added, with who added it and when."""

    id: str
    provider: str
    model: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    cache_write: Decimal | None
    effective_from: date
    created_by: str
    created_at: datetime


def check_price(name: str, value: Any, *, required: bool) -> tuple[Decimal | None, str | None]:
    """A price field as entered (text or number): its ``Decimal``, or why it is refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, ("required (USD per million tokens)" if required else None)
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return None, "a number of US dollars per million tokens, e.g. 2.50"
    text = str(value).strip().removeprefix("$").strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None, f"not a number: {text[:40]!r} (USD per million tokens, e.g. 2.50)"
    if not number.is_finite():
        return None, "must be a finite number"
    if number < 0:
        return None, "cannot be negative"
    if number > MAX_PRICE:
        return None, f"at most {MAX_PRICE:,} USD per million tokens"
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_PLACES:
        return None, f"at most {MAX_PLACES} decimal places"
    return number, None


def _name_problem(value: Any, limit: int, what: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"required: the {what}"
    if len(value.strip()) > limit:
        return f"at most {limit} characters"
    if any(c.isspace() or not c.isprintable() for c in value.strip()):
        return "no spaces or control characters"
    return None


def check_entry(fields: dict[str, Any]) -> ModelPrice:
    """A new entry from its fields (text from a form or JSON values), every problem at
    once as ``InvalidFields`` (one message per field)."""
    problems: dict[str, str] = {}
    for name, limit, what in (("provider", 100, "provider name"), ("model", 200, "model")):
        problem = _name_problem(fields.get(name), limit, what)
        if problem:
            problems[name] = problem
    prices: dict[str, Decimal | None] = {}
    for name in PRICE_FIELDS:
        prices[name], problem = check_price(name, fields.get(name), required=name in REQUIRED)
        if problem:
            problems[name] = problem
    day = fields.get("effective_from")
    if isinstance(day, str) and day.strip():
        try:
            day = date.fromisoformat(day.strip())
        except ValueError:
            problems["effective_from"] = "a date as YYYY-MM-DD (UTC), e.g. 2026-12-01"
            day = None
    if "effective_from" not in problems:
        if not isinstance(day, date) or isinstance(day, datetime):
            problems["effective_from"] = "required: the first UTC day the price applies"
        elif not FIRST_DAY <= day <= LAST_DAY:
            problems["effective_from"] = f"between {FIRST_DAY} and {LAST_DAY}"
    if problems:
        raise InvalidFields(problems)
    assert isinstance(day, date)
    return ModelPrice(
        provider=str(fields["provider"]).strip(),
        model=str(fields["model"]).strip(),
        input=prices["input"] or Decimal(0),
        output=prices["output"] or Decimal(0),
        cached_input=prices["cached_input"],
        cache_write=prices["cache_write"],
        effective_from=day,
    )


def _version(base: str, added: int) -> str:
    if not added:
        return base
    suffix = f"+org{added}"
    return base[: MAX_VERSION - len(suffix)] + suffix


def _model_price(row: OrgPrice) -> ModelPrice:
    return ModelPrice(
        provider=row.provider,
        model=row.model,
        input=Decimal(row.input),
        output=Decimal(row.output),
        cached_input=None if row.cached_input is None else Decimal(row.cached_input),
        cache_write=None if row.cache_write is None else Decimal(row.cache_write),
        effective_from=row.effective_from,
    )


def _info(row: OrgPrice) -> PriceEntryInfo:
    price = _model_price(row)
    return PriceEntryInfo(
        id=row.id,
        provider=price.provider,
        model=price.model,
        input=price.input,
        output=price.output,
        cached_input=price.cached_input,
        cache_write=price.cache_write,
        effective_from=row.effective_from,
        created_by=row.created_by,
        created_at=row.created_at,
    )


class PriceBook:
    """The install's price table and every org's own entries (a ``PriceSource``)."""

    def __init__(
        self,
        base: PriceTable,
        db: Database,
        audit: AuditSink,
        access: ApiAuthorizer,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.base = base
        self._db = db
        self._audit = audit
        self._access = access
        self._refresh = refresh_seconds
        self._tables: dict[str, tuple[float, PriceTable]] = {}
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        """The file's version (an org's table adds ``+org<N>``)."""
        return self.base.version

    def for_org(self, org_id: str) -> PriceTable:
        """The org's table: the file's with the org's entries in front."""
        now = time.monotonic()
        cached = self._tables.get(org_id)
        if cached is not None and now - cached[0] < self._refresh:
            return cached[1]
        with self._db.session() as session:
            rows = session.scalars(
                select(OrgPrice)
                .where(OrgPrice.org_id == org_id)
                .order_by(OrgPrice.created_at.desc(), OrgPrice.id.desc())
            ).all()
            entries = [_model_price(r) for r in rows]
        table = (
            self.base.layered(entries, version=_version(self.base.version, len(entries)))
            if entries
            else self.base
        )
        with self._lock:
            self._tables[org_id] = (now, table)
        return table

    def entries(
        self, caller: Caller, *, limit: int | None = None, offset: int = 0
    ) -> list[PriceEntryInfo]:
        """The prices the caller's org added, newest first (ties by id, so pages never
        skip or repeat one), ``offset`` skips (``price.read``)."""
        self._access.require(caller, "price.read", ApiResource.org(caller.org_id))
        with self._db.session() as session:
            rows = session.scalars(
                select(OrgPrice)
                .where(OrgPrice.org_id == caller.org_id)
                .order_by(OrgPrice.created_at.desc(), OrgPrice.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            return [_info(r) for r in rows]

    def export(self, caller: Caller) -> PriceTable:
        """The caller's org's whole table, history included (``price.read``)."""
        self._access.require(caller, "price.read", ApiResource.org(caller.org_id))
        return self._fresh(caller.org_id)

    def add(self, caller: Caller, fields: dict[str, Any]) -> PriceEntryInfo:
        """Add an effective-dated price to the caller's org's table (``price.write``,
        platform admins; audited). Checks every field first (``InvalidFields``)."""
        self._access.require(
            caller,
            PRICE_WRITE,
            ApiResource.org(caller.org_id),
            message="only a platform admin can add prices",
        )
        price = check_entry(fields)
        with self._db.session() as session:
            row = OrgPrice(
                id=new_id("prc"),
                org_id=caller.org_id,
                provider=price.provider,
                model=price.model,
                input=str(price.input),
                output=str(price.output),
                cached_input=None if price.cached_input is None else str(price.cached_input),
                cache_write=None if price.cache_write is None else str(price.cache_write),
                effective_from=price.effective_from,
                created_by=caller.user_id,
            )
            session.add(row)
            session.flush()
            added = session.scalar(
                select(func.count()).select_from(OrgPrice).where(OrgPrice.org_id == caller.org_id)
            )
            version = _version(self.base.version, int(added or 0))
            self._audit.append(
                session,
                AuditRecord(
                    action="price.add",
                    resource=f"price:{row.id}",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={
                        "version": version,
                        **{k: str(v) for k, v in price.to_yaml_data().items()},
                    },
                ),
            )
            info = _info(row)
        self._fresh(caller.org_id)
        return info

    def _fresh(self, org_id: str) -> PriceTable:
        with self._lock:
            self._tables.pop(org_id, None)
        return self.for_org(org_id)
