"""In-platform analytics: leaderboards and adoption from the store, under privacy tiers.

The store's outcomes, feedback and usage are turned into the same ``Tables`` the offline
analytics read, so one set of rules (``analytics._credit``) decides credit everywhere.
Team boards are the default; individual boards exist only where the org enabled them,
and list only people who opted in. See ``analytics.privacy`` for who may see what.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.analytics._credit import Credit, CreditRules, Cutoff, compute_credit
from meshclaw.analytics._history import History, OutcomeHistory
from meshclaw.analytics._leaderboard import Leaderboard, leaderboard
from meshclaw.analytics._load import Tables
from meshclaw.analytics._report import build_report
from meshclaw.analytics.models import AnalyticsOptIn, AnalyticsView
from meshclaw.analytics.privacy import (
    VIEW_PERSON,
    VIEW_TEAM,
    authorize,
    individual_boards,
    k_of,
    record_person_view,
)
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.errors import ConflictError, NotFoundError, PermissionDenied
from meshclaw.events import ReadReport
from meshclaw.integrity.scope import Withholding
from meshclaw.metering.usage import visibility
from meshclaw.outcomes.cost import CostBy, CostRow
from meshclaw.outcomes.service import OutcomeService
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import Org, Team, UsageRecord, User

NANO = 1_000_000_000
Withheld = Callable[[str], frozenset[Withholding]]
"""org id -> the credit integrity findings concern (the integrity seam:
``FindingsService.withheld``, scoped as ``integrity.scope`` says)."""


@dataclass(frozen=True, kw_only=True)
class ViewRecord:
    viewer_id: str
    subject_id: str
    reason: str
    created_at: datetime


def _no_findings(org_id: str) -> frozenset[Withholding]:
    return frozenset()


class AnalyticsService:
    def __init__(
        self,
        db: Database,
        audit: AuditSink,
        access: ApiAuthorizer,
        outcomes: OutcomeService,
        *,
        withheld: Withheld = _no_findings,
    ) -> None:
        self._db = db
        self._audit = audit
        self._access = access
        self._outcomes = outcomes
        self.withheld = withheld
        """Set by the integrity engine when its in-platform findings exist."""
        self._history = OutcomeHistory(db)
        # Boards only rank: the last credit per org, reused while history and rules match.
        self._credit_kept: dict[str, tuple[Hashable, Credit]] = {}
        self._credit_lock = threading.Lock()

    # ---- the data ----------------------------------------------------------------------

    def _org_settings(self, org_id: str) -> dict[str, Any]:
        with self._db.session() as session:
            org = session.get(Org, org_id)
            return dict(org.settings or {}) if org is not None else {}

    def tables(self, org_id: str, *, activity: bool = True) -> Tables:
        """The org's history as analytics tables.

        ``activity`` is summed per team, person and hour in SQL (one row per hour, not per
        call); ``activity=False`` leaves it empty, for callers that only rank outcomes.
        """
        return self._tables(self._history.read(org_id), org_id, activity=activity)

    def _tables(self, history: History, org_id: str, *, activity: bool) -> Tables:
        if activity:
            with self._db.session() as session:
                hours = self._activity_hours(session, org_id)
        else:
            hours = []
        ts = pl.Datetime("us", "UTC")
        hour_schema: dict[str, Any] = {
            "team": pl.String, "user": pl.String, "events": pl.UInt32, "first_ts": ts,
            "last_ts": ts, "llm_calls": pl.UInt32, "cost_usd": pl.Float64,
        }  # fmt: skip
        activity_frame = (
            pl.DataFrame(hours, schema=hour_schema, orient="row")
            .lazy()
            .select(
                "team", "user", pl.col("first_ts").dt.truncate("1h").alias("hour"), "events",
                "first_ts", "last_ts", "llm_calls", "cost_usd",
                pl.lit(0, dtype=pl.UInt32).alias("calls_without_cost"),
            )
        )  # fmt: skip
        return Tables(
            outcomes=history.outcomes.lazy(),
            feedback=history.feedback.lazy(),
            activity=activity_frame,
        )

    def _activity_hours(self, session: Session, org_id: str) -> list[tuple[Any, ...]]:
        """Usage per (team, person, UTC hour): calls, first and last, model calls, their cost."""
        created = UsageRecord.created_at
        if self._db.engine.dialect.name == "postgresql":
            hour: Any = func.date_trunc("hour", func.timezone("UTC", created))
        else:  # SQLite keeps UTC timestamps as ISO text: the hour is the first 13 characters
            hour = func.substr(created, 1, 13)
        is_call = UsageRecord.kind == "model"
        rows = session.execute(
            select(
                UsageRecord.team_id, UsageRecord.user_id, func.count(), func.min(created),
                func.max(created), func.sum(case((is_call, 1), else_=0)),
                func.sum(case((is_call, UsageRecord.cost_nano_usd), else_=0)),
            )
            .where(UsageRecord.org_id == org_id)
            .group_by(UsageRecord.team_id, UsageRecord.user_id, hour)
        )  # fmt: skip
        return [
            (team or "", user, int(n), first, last, int(calls or 0), int(nano or 0) / NANO)
            for team, user, n, first, last, calls, nano in rows
        ]

    def credit(self, org_id: str, *, activity: bool = True) -> tuple[Tables, Credit]:
        settings = self._org_settings(org_id)
        analytics = settings.get("analytics") or {}
        cutoff = Cutoff(
            weekday=int(analytics.get("cutoff_weekday", 4)),
            hour=int(analytics.get("cutoff_hour", 17)),
        )
        rules = CreditRules(
            weights=self._outcomes.weights(org_id), cutoff=cutoff, withheld=self.withheld(org_id)
        )
        history = self._history.read(org_id)
        tables = self._tables(history, org_id, activity=activity)
        if activity:  # reports: the activity part changes with every call; not kept
            return tables, compute_credit(tables, rules)
        key = (history.marks, _rules_key(rules))
        with self._credit_lock:
            kept = self._credit_kept.get(org_id)
        if kept is not None and kept[0] == key:
            return tables, kept[1]
        credit = compute_credit(tables, rules)
        with self._credit_lock:
            self._credit_kept[org_id] = (key, credit)
        return tables, credit

    def _team_sizes(self, org_id: str) -> dict[str, int]:
        with self._db.session() as session:
            return {
                str(team): int(n)
                for team, n in session.execute(
                    select(User.team_id, func.count())
                    .where(User.org_id == org_id, User.team_id.is_not(None))
                    .group_by(User.team_id)
                )
            }

    def settings(self, caller: Caller) -> dict[str, Any]:
        """The org's analytics settings, defaults filled in."""
        analytics = self._org_settings(caller.org_id).get("analytics") or {}
        return {
            "k": k_of({"analytics": analytics}),
            "individual_boards": bool(analytics.get("individual_boards", False)),
            "cutoff_weekday": int(analytics.get("cutoff_weekday", 4)),
            "cutoff_hour": int(analytics.get("cutoff_hour", 17)),
        }

    def update_settings(self, caller: Caller, **changes: Any) -> dict[str, Any]:
        """Change ``k``, ``individual_boards``, ``cutoff_weekday/hour`` (``analytics.manage``
        on the org: platform admins)."""
        self._access.require(
            caller,
            "analytics.manage",
            ApiResource.org(caller.org_id),
            message="only platform admins change analytics settings",
        )
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {"k", "individual_boards", "cutoff_weekday", "cutoff_hour"}
        if unknown:
            raise ConflictError(f"unknown analytics settings: {', '.join(sorted(unknown))}")
        if "k" in changes and not 2 <= int(changes["k"]) <= 1000:
            raise ConflictError("k must be between 2 and 1000")
        try:
            Cutoff(
                weekday=int(changes.get("cutoff_weekday", 4)),
                hour=int(changes.get("cutoff_hour", 17)),
            )
        except ValueError as exc:
            raise ConflictError(str(exc)) from None
        with self._db.session() as session:
            org = session.get(Org, caller.org_id)
            assert org is not None
            settings = dict(org.settings or {})
            before = dict(settings.get("analytics") or {})
            settings["analytics"] = {**before, **changes}
            org.settings = settings
            self._audit.append(
                session,
                AuditRecord(
                    action="analytics.settings", resource=f"org:{caller.org_id}", outcome="ok",
                    org_id=caller.org_id, actor_user_id=caller.user_id,
                    details={"was": before, "now": settings["analytics"]},
                ),
            )  # fmt: skip
        return self.settings(caller)

    # ---- boards ------------------------------------------------------------------------

    def team_board(self, caller: Caller, *, top: int | None = None) -> Leaderboard:
        """Teams ranked by credited value; teams smaller than k are left out."""
        k = k_of(self._org_settings(caller.org_id))
        sizes = self._team_sizes(caller.org_id)
        _, credit = self.credit(caller.org_id, activity=False)  # ranks need no usage
        board = leaderboard(credit, by="team")
        kept = [e for e in board.entries if sizes.get(e.id, 0) >= k]
        entries = [
            type(e)(rank=i, id=e.id, score=e.score, pending=e.pending, outcomes=e.outcomes)
            for i, e in enumerate(kept[:top] if top is not None else kept, start=1)
        ]
        return Leaderboard(by="team", entries=entries)

    def people_board(self, caller: Caller, *, top: int | None = None) -> Leaderboard:
        """Individuals, only where the org allows it and only people who opted in."""
        if not individual_boards(self._org_settings(caller.org_id)):
            raise PermissionDenied("individual leaderboards are off in this org (team boards only)")
        with self._db.session() as session:
            opted = set(
                session.scalars(
                    select(AnalyticsOptIn.user_id).where(AnalyticsOptIn.org_id == caller.org_id)
                )
            )
        _, credit = self.credit(caller.org_id, activity=False)  # ranks need no usage
        board = leaderboard(credit, by="user")
        kept = [e for e in board.entries if e.id in opted]
        entries = [
            type(e)(rank=i, id=e.id, score=e.score, pending=e.pending, outcomes=e.outcomes)
            for i, e in enumerate(kept[:top] if top is not None else kept, start=1)
        ]
        return Leaderboard(by="user", entries=entries)

    def opt_in(self, caller: Caller, on: bool) -> bool:
        with self._db.session() as session:
            row = session.get(AnalyticsOptIn, caller.user_id)
            if on and row is None:
                session.add(AnalyticsOptIn(user_id=caller.user_id, org_id=caller.org_id))
            elif not on and row is not None:
                session.delete(row)
            self._audit.append(
                session,
                AuditRecord(
                    action="analytics.opt_in", resource=f"user:{caller.user_id}",
                    outcome="on" if on else "off", org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                ),
            )  # fmt: skip
        return on

    # ---- team and person views ---------------------------------------------------------

    def team_summary(self, caller: Caller, team_id: str) -> dict[str, Any]:
        """The team's report (adoption, cost per outcome, rates), if at least k people."""
        with self._db.session() as session:
            team = session.get(Team, team_id)
            if team is None or team.org_id != caller.org_id:
                raise NotFoundError(f"no team {team_id}")
            name = team.name
        authorize(
            self._access, caller, VIEW_TEAM,
            ApiResource.team(id=team_id, org_id=caller.org_id, name=name),
        )  # fmt: skip
        k = k_of(self._org_settings(caller.org_id))
        size = self._team_sizes(caller.org_id).get(team_id, 0)
        if size < k:
            raise PermissionDenied(
                f"team {name} has {size} people: groups smaller than {k} are not shown"
            )
        tables, credit = self.credit(caller.org_id)
        team_tables = Tables(
            outcomes=tables.outcomes.filter(pl.col("team") == team_id),
            feedback=tables.feedback,
            activity=tables.activity.filter(pl.col("team") == team_id),
        )
        team_credit = Credit(
            outcomes=credit.outcomes.filter(pl.col("team") == team_id),
            unknown_feedback=credit.unknown_feedback.clear(),
            cutoff=credit.cutoff,
        )
        report = build_report(team_tables, team_credit, ReadReport())
        out = report.to_json()
        out.pop("input")
        out["team"] = {"id": team_id, "name": name, "people": size}
        for week in out["weeks"]:
            week.pop("active_by_team", None)
        return out

    def person(self, caller: Caller, user_id: str, *, reason: str | None = None) -> dict[str, Any]:
        """One person's numbers. Someone else's need a reason, and the look is recorded."""
        with self._db.session() as session:
            subject = session.get(User, user_id)
            if subject is None or subject.org_id != caller.org_id:
                raise NotFoundError(f"no user {user_id}")
            resource = ApiResource.person(
                id=subject.id, org_id=subject.org_id, team_id=subject.team_id, role=subject.role
            )
        own = user_id == caller.user_id
        if not own:
            if not reason or not reason.strip():
                raise ConflictError("looking at someone else's numbers needs a stated reason")
            authorize(self._access, caller, VIEW_PERSON, resource, drill_down=True)
        else:
            authorize(self._access, caller, VIEW_PERSON, resource)
        tables, credit = self.credit(caller.org_id)
        mine = credit.outcomes.filter(pl.col("user") == user_id)
        person_credit = Credit(
            outcomes=mine, unknown_feedback=credit.unknown_feedback.clear(), cutoff=credit.cutoff
        )
        report = build_report(
            Tables(
                outcomes=tables.outcomes.filter(pl.col("user") == user_id),
                feedback=tables.feedback,
                activity=tables.activity.filter(pl.col("user") == user_id),
            ),
            person_credit,
            ReadReport(),
        )
        if not own:
            with self._db.session() as session:
                reason = (reason or "").strip()
                record_person_view(session, self._audit, caller, user_id, reason, what="numbers")
        out = report.to_json()
        out.pop("input")
        for week in out["weeks"]:
            week.pop("active_by_team", None)
        out["user"] = user_id
        out["score"] = round(float(mine["points"].sum()), 6)
        out["pending_review"] = round(float(mine["pending"].sum()), 6)
        out["outcomes"] = {
            status: int(n) for status, n in mine.group_by("status").len().iter_rows()
        }
        return out

    def cost_per_outcome(self, caller: Caller, *, by: CostBy = "agent") -> list[CostRow]:
        """Spend per accepted, durable outcome, within the caller's privacy tier.

        The tier is the usage reports' (``metering.usage.visibility``): employees their
        own agents (or themselves), team admins their team, platform admins and auditors
        the org. Per-person rows of others need a drill-down (``person``), and team rows
        of teams smaller than k are left out.
        """
        only: dict[str, str] = {}
        reach = visibility(self._access, caller)
        if reach.kind == "team" and reach.team_id is not None:
            only = {"team_id": reach.team_id}
        elif reach.kind == "self":
            only = {"user_id": caller.user_id}
        if by == "user" and "user_id" not in only:
            raise PermissionDenied("cost per person is an individual drill-down (analytics person)")
        rows = self._outcomes.cost_per_outcome(caller.org_id, by=by, only=only)
        if by == "team" and "user_id" not in only:
            k = k_of(self._org_settings(caller.org_id))
            sizes = self._team_sizes(caller.org_id)
            rows = [r for r in rows if sizes.get(r.key, 0) >= k]
        return rows

    def views_of(
        self, caller: Caller, *, limit: int | None = None, offset: int = 0
    ) -> list[ViewRecord]:
        """Who looked at the caller's numbers, newest first; ``offset`` skips."""
        with self._db.session() as session:
            rows = session.scalars(
                select(AnalyticsView)
                .where(AnalyticsView.subject_id == caller.user_id)
                .order_by(AnalyticsView.created_at.desc(), AnalyticsView.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            return [
                ViewRecord(
                    viewer_id=r.viewer_id, subject_id=r.subject_id, reason=r.reason,
                    created_at=r.created_at,
                )
                for r in rows
            ]  # fmt: skip


def _rules_key(rules: CreditRules) -> Hashable:
    return (
        tuple(sorted(rules.weights.items())),
        rules.default_weight,
        rules.cutoff,
        rules.withheld,
    )
