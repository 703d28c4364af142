"""Leaderboards as the dashboard shows them: the analytics service's ranking, with names,
cost and cost per credited outcome beside each row.

The rows come from ``AnalyticsService.team_board`` / ``people_board``, which apply the
privacy tiers (teams smaller than k are left out; people appear only where the org has
individual boards and only if they opted in); this module only adds the spend of the
teams or people already on the board (one ``GROUP BY`` over at most ``top`` ids) and
their names. The score is accepted, durable value; tokens are never a score.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from sqlalchemy import func, select

from meshclaw.accounts.service import Caller
from meshclaw.analytics.models import AnalyticsOptIn
from meshclaw.analytics.service import AnalyticsService
from meshclaw.errors import UserError
from meshclaw.metering.prices import from_nano
from meshclaw.metering.rollup import UsageRollup
from meshclaw.store.db import Database
from meshclaw.store.models import Team, User

Board = Literal["team", "user"]
BOARDS: tuple[Board, ...] = ("team", "user")
_CENT = Decimal("0.000001")


@dataclass(frozen=True, kw_only=True)
class BoardRow:
    rank: int
    id: str
    """A team id, or a user id on the individual board."""
    name: str
    """The team's name or the person's handle."""
    value: float
    """Accepted, durable outcome value (the ranking score, ``analytics._credit``)."""
    pending: float
    """Value withheld while an integrity finding about it is open."""
    credited: int
    """Accepted, durable outcomes behind the value."""
    cost_usd: Decimal
    """All model and tool spend (the same all-time window as the value)."""

    @property
    def cost_per_outcome(self) -> Decimal | None:
        return (self.cost_usd / self.credited).quantize(_CENT) if self.credited else None


class Boards:
    def __init__(self, db: Database, analytics: AnalyticsService) -> None:
        self._db = db
        self._analytics = analytics

    def rows(self, caller: Caller, by: str = "team", *, top: int = 50) -> list[BoardRow]:
        """The board ``by`` team (default) or person, ranked; ``PermissionDenied`` when the
        org has no individual boards."""
        if by not in BOARDS:
            raise UserError(f"unknown leaderboard {by!r}: use team or user")
        if by == "team":
            board = self._analytics.team_board(caller, top=top)
        else:
            board = self._analytics.people_board(caller, top=top)
        ids = [e.id for e in board.entries]
        if not ids:  # an empty IN () still scans the org's usage on SQLite
            return []
        spent = self._spent(caller.org_id, by, ids)
        names = (
            team_names(self._db, caller.org_id, ids)
            if by == "team"
            else handles(self._db, caller.org_id, ids)
        )
        return [
            BoardRow(
                rank=e.rank,
                id=e.id,
                name=names.get(e.id, e.id),
                value=e.score,
                pending=e.pending,
                credited=e.outcomes,
                cost_usd=from_nano(spent.get(e.id, 0)),
            )
            for e in board.entries
        ]

    def _spent(self, org_id: str, by: str, ids: list[str]) -> dict[str, int]:
        """Nano-USD spent by each of ``ids`` (teams or people), all time (closed days from
        the daily usage roll-up)."""
        usage = UsageRollup(self._db).source(org_id)
        column = usage.c.team_id if by == "team" else usage.c.user_id
        with self._db.session() as session:
            return {
                str(key): int(nano)
                for key, nano in session.execute(
                    select(column, func.coalesce(func.sum(usage.c.cost_nano_usd), 0))
                    .where(column.in_(ids))
                    .group_by(column)
                )
            }

    def opted_in(self, caller: Caller) -> bool:
        """Whether ``caller`` agreed to appear on individual boards."""
        with self._db.session() as session:
            return session.get(AnalyticsOptIn, caller.user_id) is not None


def handles(db: Database, org_id: str, user_ids: Iterable[str]) -> dict[str, str]:
    """User id -> handle for the given ids in the org (others are left out)."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    with db.session() as session:
        rows = session.execute(
            select(User.id, User.handle).where(User.org_id == org_id, User.id.in_(wanted))
        )
        return {user_id: handle for user_id, handle in rows}


def team_names(db: Database, org_id: str, team_ids: Iterable[str]) -> dict[str, str]:
    """Team id -> name for the given ids in the org."""
    wanted = sorted(set(team_ids))
    if not wanted:
        return {}
    with db.session() as session:
        rows = session.execute(
            select(Team.id, Team.name).where(Team.org_id == org_id, Team.id.in_(wanted))
        )
        return {team_id: name for team_id, name in rows}
