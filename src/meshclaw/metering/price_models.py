"""The table of prices a platform admin added to their org's price table
(``meshclaw.metering.price_book``): append-only, so every price an org ever used stays
for history and re-pricing."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class OrgPrice(Base):
    """One effective-dated price of one provider/model, added by an org's platform admin
    on top of the install's price table file. USD per million tokens, kept as the
    ``Decimal`` text that was entered (exact, whatever the database)."""

    __tablename__ = "org_prices"
    __table_args__ = (Index("ix_org_prices_org_created", "org_id", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    """A model name or a glob, as in the file."""
    input: Mapped[str] = mapped_column(String(40))
    output: Mapped[str] = mapped_column(String(40))
    cached_input: Mapped[str | None] = mapped_column(String(40))
    cache_write: Mapped[str | None] = mapped_column(String(40))
    effective_from: Mapped[date] = mapped_column(Date)
    """First UTC day the price applies."""
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
