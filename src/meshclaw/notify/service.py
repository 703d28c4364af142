"""Reading the notification outbox, and each person's read state: what the platform told
(or is about to tell) people, and which of their own messages they have read.

Who reads what is Cedar's decision (``notification.read``): on a ``User`` it is the
notifications addressed to that person (by default: oneself), on the ``Org`` every
notification of the org (by default: platform admins and auditors, who answer for
delivery failures). ``GET /v1/notifications``, the dashboard's ``/ui/notifications`` and
``meshclaw notifications`` read through ``NotificationService.find``.

Read state is per (notification, recipient) (``NotificationRecipient``): marking one read
is ``notification.read`` on one's own ``User`` plus being among its recipients (data, not
permission). To anyone else, including an admin who may read the org's, the notification
is "not found": nobody marks someone else's inbox, and nobody learns what is in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from meshclaw.accounts.service import Caller
from meshclaw.clock import utcnow
from meshclaw.errors import NotFoundError, UserError
from meshclaw.notify.limits import MAX_PAGE, STATUSES
from meshclaw.notify.models import Notification, NotificationRecipient
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import User

READ = "notification.read"
"""Cedar action: read notifications (on a ``User``: theirs; on the ``Org``: all)."""
Scope = Literal["mine", "org"]
_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])


class UnknownRecipient(UserError):
    """``recipient`` names nobody of the caller's org (HTTP 400, exit code 2)."""


@dataclass(frozen=True, kw_only=True)
class NotificationView:
    id: str
    kind: str
    """``budget.soft_cap``, ``approval.requested``, ..."""
    resource: str
    """What it is about, as in the audit log (``budget:<id>``, ``approval:<id>``)."""
    recipients: list[str]
    """User ids of the people it is for."""
    recipient_handles: list[str]
    """Their handles, in the same order (the id when someone is no longer found)."""
    subject: str
    body: str
    status: str
    attempts: int
    due_at: datetime
    """When it is (or was last) due to be sent."""
    last_error: str | None
    """Why the last attempt failed, or why it cannot be sent (``unsent``)."""
    created_at: datetime
    sent_at: datetime | None
    read: bool | None
    """Whether the caller has read it; None when it is not addressed to the caller (an
    org-wide view shows others' notifications, which only their recipients mark)."""
    read_at: datetime | None
    """When the caller marked it read."""


@dataclass(frozen=True, kw_only=True)
class NotificationPage:
    notifications: list[NotificationView]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    scope: Scope
    unread: int
    """How many of the notifications matching the query (all pages) are addressed to the
    caller and unread."""


@dataclass(frozen=True, kw_only=True)
class UnreadInbox:
    count: int
    """How many of the caller's notifications are unread."""
    newest: str | None
    """The id of the newest of them in the list's order (None when there are none): what
    "mark all read" passes as ``through`` so that a later one stays unread."""


class NotificationService:
    def __init__(self, db: Database, access: ApiAuthorizer) -> None:
        self._db = db
        self._access = access

    def may_read_org(self, caller: Caller) -> bool:
        """Whether ``caller`` may see every notification of their org."""
        return self._access.authorize_api(caller, READ, ApiResource.org(caller.org_id)).allowed

    def find(
        self,
        caller: Caller,
        *,
        scope: Scope = "mine",
        status: str | None = None,
        unread: bool = False,
        recipient: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> NotificationPage:
        """One page of notifications, newest first: the caller's own (``mine``) or, with
        ``notification.read`` on the org, the whole org's (``org``).

        ``unread`` keeps those addressed to the caller that they have not read;
        ``recipient`` (a handle or user id of the org; ``org`` scope only) keeps those
        addressed to that person."""
        if scope not in ("mine", "org"):
            raise UserError(f"scope must be mine or org, not {scope!r}")
        if status is not None and status not in STATUSES:
            raise UserError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        if not 1 <= limit <= MAX_PAGE:
            raise UserError(f"limit must be 1..{MAX_PAGE}, not {limit}")
        if offset < 0:
            raise UserError("offset must be >= 0")
        recipient = (recipient or "").strip() or None
        if recipient is not None and scope != "org":
            raise UserError(
                "recipient filters the org's notifications: use it with scope org "
                "(your own are the default)"
            )
        if scope == "org":
            self._access.require(
                caller, READ, ApiResource.org(caller.org_id), message="the org's notifications:"
            )
        else:
            self._require_own(caller)
        mine = aliased(NotificationRecipient, name="mine")
        addressed = and_(
            mine.notification_id == Notification.id,
            mine.user_id == caller.user_id,
            mine.org_id == caller.org_id,
        )

        def joined(query: _Query) -> _Query:
            # ``mine``: the caller's inbox row; the org view keeps others' too (no row).
            if scope == "mine":
                return query.join(mine, addressed)
            return query.outerjoin(mine, addressed)

        is_unread = and_(mine.user_id.is_not(None), mine.read_at.is_(None))
        with self._db.session() as session:
            conds: list[Any] = [Notification.org_id == caller.org_id]
            if status is not None:
                conds.append(Notification.status == status)
            if recipient is not None:
                person = _person_id(session, caller.org_id, recipient)
                conds.append(
                    Notification.id.in_(
                        select(NotificationRecipient.notification_id).where(
                            NotificationRecipient.user_id == person,
                            NotificationRecipient.org_id == caller.org_id,
                        )
                    )
                )
            if unread:
                conds.append(is_unread)
            counted = joined(select(func.count()).select_from(Notification))
            total = int(session.scalar(counted.where(*conds)) or 0)
            unread_count = (
                total if unread else int(session.scalar(counted.where(*conds, is_unread)) or 0)
            )
            rows = session.execute(
                joined(select(Notification, mine.user_id, mine.read_at))
                .where(*conds)
                .order_by(Notification.created_at.desc(), Notification.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            views = _views(session, caller.org_id, [(n, who, at) for n, who, at in rows])
        following = offset + len(views)
        return NotificationPage(
            notifications=views, total=total, limit=limit, offset=offset,
            next_offset=following if following < total else None, scope=scope,
            unread=unread_count,
        )  # fmt: skip

    def unread_count(self, caller: Caller) -> int | None:
        """How many of the caller's own notifications are unread (None when the policy
        does not let them read their own). One COUNT on the inbox index, for the
        dashboard's navigation on every page."""
        if not self._access.authorize_api(caller, READ, self._own(caller)).allowed:
            return None
        with self._db.session() as session:
            counted = select(func.count()).where(
                NotificationRecipient.user_id == caller.user_id,
                NotificationRecipient.read_at.is_(None),
                NotificationRecipient.org_id == caller.org_id,
            )
            return int(session.scalar(counted) or 0)

    def unread_inbox(self, caller: Caller) -> UnreadInbox | None:
        """How many of the caller's own notifications are unread and which is the newest
        of them, read together (one statement: the count a page shows and the bound its
        "mark all read" sends agree). None when the policy does not let them read their
        own."""
        if not self._access.authorize_api(caller, READ, self._own(caller)).allowed:
            return None
        with self._db.session() as session:
            newest = session.execute(
                select(Notification.id, func.count().over())
                .join(
                    NotificationRecipient, NotificationRecipient.notification_id == Notification.id
                )
                .where(
                    NotificationRecipient.user_id == caller.user_id,
                    NotificationRecipient.org_id == caller.org_id,
                    NotificationRecipient.read_at.is_(None),
                    Notification.org_id == caller.org_id,
                )
                .order_by(Notification.created_at.desc(), Notification.id.desc())
                .limit(1)
            ).first()
        if newest is None:
            return UnreadInbox(count=0, newest=None)
        return UnreadInbox(count=int(newest[1]), newest=newest[0])

    # Read marks are the person's own inbox state, like a mail client's: they are not
    # audited (nothing is decided, shown to anyone else or changed in the org's record).

    def mark_read(
        self, caller: Caller, notification_id: str, *, read: bool = True
    ) -> NotificationView:
        """Mark one of the caller's notifications read (``read=False``: unread again).
        Marking it read again keeps the first time it was read. Not addressed to the
        caller (another person's, another org's, no such id): ``NotFoundError``."""
        self._require_own(caller)
        with self._db.session() as session:
            mark = session.scalar(
                select(NotificationRecipient).where(
                    NotificationRecipient.notification_id == notification_id,
                    NotificationRecipient.user_id == caller.user_id,
                    NotificationRecipient.org_id == caller.org_id,
                )
            )
            notification = session.get(Notification, notification_id) if mark else None
            if mark is None or notification is None or notification.org_id != caller.org_id:
                raise NotFoundError(f"no notification {notification_id!r} addressed to you")
            if not read:
                mark.read_at = None
            elif mark.read_at is None:
                mark.read_at = utcnow()
            (view,) = _views(session, caller.org_id, [(notification, mark.user_id, mark.read_at)])
            return view

    def mark_all_read(self, caller: Caller, *, through: str | None = None) -> int:
        """Mark the caller's unread notifications read; how many were marked.

        ``through`` (the id of one of the caller's notifications: the newest they
        saw) marks only that one and those before it in the list's order, so what
        arrived after the caller looked stays unread. The order is (``created_at``,
        ``id``), as ``find`` sorts: neither alone is exact (times tie; an id's random
        part orders notifications of the same millisecond by chance). A ``through`` not
        addressed to the caller: ``NotFoundError``, nothing marked."""
        self._require_own(caller)
        with self._db.session() as session:
            conds: list[Any] = [
                NotificationRecipient.user_id == caller.user_id,
                NotificationRecipient.org_id == caller.org_id,
                NotificationRecipient.read_at.is_(None),
            ]
            if through is not None:
                up_to = _up_to(session, caller, through)
                conds.append(NotificationRecipient.notification_id.in_(up_to))
            done = session.execute(
                update(NotificationRecipient).where(*conds).values(read_at=utcnow())
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    def _own(caller: Caller) -> ApiResource:
        return ApiResource.person(
            id=caller.user_id, org_id=caller.org_id, team_id=caller.team_id, role=caller.role
        )

    def _require_own(self, caller: Caller) -> None:
        self._access.require(caller, READ, self._own(caller), message="your notifications:")


def _person_id(session: Session, org_id: str, name: str) -> str:
    """A person of the org named by handle (first) or user id; else a ``UserError``."""
    for column in (User.handle, User.id):
        found = session.scalar(select(User.id).where(User.org_id == org_id, column == name))
        if found is not None:
            return found
    raise UnknownRecipient(f"recipient: nobody in your org has the handle or user id {name!r}")


def _up_to(session: Session, caller: Caller, through: str) -> Select[str]:
    """The ids of the caller's org's notifications up to ``through`` in the list's order
    (``created_at``, then ``id``); ``through`` must be addressed to the caller."""
    addressed = session.scalar(
        select(NotificationRecipient.notification_id).where(
            NotificationRecipient.notification_id == through,
            NotificationRecipient.user_id == caller.user_id,
            NotificationRecipient.org_id == caller.org_id,
        )
    )
    if addressed is None:
        raise NotFoundError(f"no notification {through!r} addressed to you")
    # Compared in SQL, not through a Python round trip of the time: exact on every engine.
    at = select(Notification.created_at).where(Notification.id == through).scalar_subquery()
    return select(Notification.id).where(
        Notification.org_id == caller.org_id,
        or_(Notification.created_at < at,
            and_(Notification.created_at == at, Notification.id <= through)),
    )  # fmt: skip


def _views(
    session: Session,
    org_id: str,
    rows: Sequence[tuple[Notification, str | None, datetime | None]],
) -> list[NotificationView]:
    """Rows as views: (notification, the caller's inbox user id or None, their read_at)."""
    ids = sorted({str(r) for row, _, _ in rows for r in row.recipients or ()})
    handles: dict[str, str] = {
        user_id: handle
        for user_id, handle in session.execute(
            select(User.id, User.handle).where(User.org_id == org_id, User.id.in_(ids))
        )
    }
    return [
        NotificationView(
            id=row.id,
            kind=row.kind,
            resource=row.resource,
            recipients=[str(r) for r in row.recipients or ()],
            recipient_handles=[handles.get(str(r), str(r)) for r in row.recipients or ()],
            subject=row.subject,
            body=row.body,
            status=row.status,
            attempts=row.attempts,
            due_at=row.due_at,
            last_error=row.last_error,
            created_at=row.created_at,
            sent_at=row.sent_at,
            read=None if inbox is None else read_at is not None,
            read_at=read_at,
        )
        for row, inbox, read_at in rows
    ]
