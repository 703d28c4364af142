"""The authorisation matrix: every route, every role, and another org -> the expected answer.

``ROUTES`` has one row per route of the app (the API and the dashboard pages). A route
without a row fails ``test_every_route_has_a_row`` with "add an expectation for METHOD
PATH". Each row names its rule (who may), and the request to send: path parameters are
filled with rows of org A that alice (the owner) created, and ``fresh`` ones are made for
each request when the request uses them up (cancelling a run, deciding an approval).

Columns (``seeded.COLUMNS``): anonymous; org A's owner (alice), another employee (bob),
team admin of alice's team, platform admin, auditor; org B's platform admin. Whatever org
B's admin is shown must not contain one id of org A.

To add a route: one line in ``ROUTES``, e.g.
``Row("GET", "/v1/things/{thing_id}", OWNER_OR_ADMIN)`` (and a ``thing_id`` in
``seeded.Seeded.ids`` if it is a new kind of row).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import routing
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from starlette.routing import Mount

from meshclaw.api.app import create_app
from meshclaw.api.deps import CSRF_HEADER, SESSION_COOKIE
from meshclaw.audit.sink import AuditRecord
from meshclaw.store.models import AuditEvent
from tests.accounts.passwords import cheap_hashing
from tests.api.seeded import COLUMNS, PASSWORD, SPEC, Seeded, seed
from tests.conftest import World

OK = "2xx"
LEAK = "2xx showing org A's ids"
Expected = int | str
"""``OK`` (any 2xx), or an exact status code (``LEAK`` only in ``Bug.now``)."""


def expect(*, everyone: Expected = 403, anonymous: Expected = 401, **columns: Expected
           ) -> dict[str, Expected]:  # fmt: skip
    unknown = set(columns) - set(COLUMNS)
    assert not unknown, f"unknown columns {unknown}"
    return {c: columns.get(c, anonymous if c == "anonymous" else everyone) for c in COLUMNS}


# -- rules -------------------------------------------------------------------------------
PUBLIC = expect(everyone=OK, anonymous=OK)
"""No sign-in (health, the sign-in itself, static files, signed links)."""
SIGNED_IN = expect(everyone=OK)
"""Anyone signed in; answers are about the caller's own org (or self), never another's."""
OWNER_OR_ADMIN = expect(everyone=404, owner=OK, platform_admin=OK)
"""A run or what hangs off it: its owner and the org's platform admin; hidden from others."""
OWNER_ONLY = expect(everyone=404, owner=OK)
"""The caller's own things (API tokens): nobody else, not even an admin."""
ORG_MEMBERS = expect(everyone=OK, other_org=404)
"""Anyone in org A (e.g. reading its agents); org B cannot even see it exists."""
AGENT_WRITE = expect(owner=OK, platform_admin=OK, other_org=422)
"""Writing alice's agent: alice or an admin. In org B there is no alice: invalid spec."""
RUN_START = expect(owner=OK, platform_admin=OK, other_org=404)
ORG_ADMIN = expect(platform_admin=OK, other_org=OK)
"""Org-wide administration; org B's admin administers org B."""
ORG_ADMIN_ON_A = expect(platform_admin=OK, other_org=404)
"""Administration of one of org A's rows."""
TEAM_OR_ORG_ADMIN_ON_A = expect(team_admin=OK, platform_admin=OK, other_org=404)
AUDITOR_ONLY = expect(auditor=OK)
"""Reading audit records (everyone's personal data): auditors only."""
AUDIT_VERIFY = expect(auditor=OK, platform_admin=OK, other_org=OK)
"""Checking the log's integrity (no record bodies): auditors and platform admins."""
OUTCOME_READERS = expect(everyone=404, owner=OK, employee=OK, platform_admin=OK, auditor=OK)
"""An outcome: its owner, the people who received it (bob), org roles."""
LINK_OWN_SELF = expect(everyone=404, owner=403, employee=OK, platform_admin=403, auditor=403)
"""Asking for a link for oneself: only the beneficiary (the seeded employee)."""
OUTCOME_JUDGES = expect(owner=OK, employee=OK, team_admin=404, other_org=404)
"""Feedback: whoever received it (the owner's own is kept but never counts); org roles
see it but do not judge it; who cannot see it gets 404."""
TEAM_VIEWERS = expect(team_admin=OK, platform_admin=OK, other_org=404)
PERSON_VIEWERS = expect(owner=OK, team_admin=OK, platform_admin=OK, other_org=404)
"""Alice's numbers: hers; others only as an audited drill-down with a reason."""
WEBHOOK = expect(everyone=401)
"""Signed deliveries only: no bearer token or cookie opens a webhook."""
REDIRECT = expect(everyone=307, anonymous=307)
PAGE = expect(everyone=OK, anonymous=303)
"""A dashboard page: signed-in people see it, others are sent to the sign-in page."""
SIGN_IN_PAGE = expect(everyone=303, anonymous=OK)
"""The sign-in page; who is signed in already goes on to the dashboard."""
PAGE_FORM = expect(everyone=303, anonymous=303)
"""A dashboard form post: done, then redirected (anonymous: to the sign-in page)."""


FINDING_READERS = expect(everyone=404, owner=OK, auditor=OK, platform_admin=OK)
"""A finding about alice: reviewers, and alice herself; nobody else learns it exists."""
FINDING_REVIEWERS = expect(everyone=404, owner=403, auditor=OK, platform_admin=OK)
"""Reviewing it: auditors and platform admins; alice sees it but may not judge her own."""
NOTIFICATION_ORG_READERS = expect(auditor=OK, platform_admin=OK, other_org=OK)
"""The org's notifications (``scope=org``); one's own (the default) is anyone's."""
NOTIFICATION_RECIPIENT = expect(everyone=404, owner=OK)
"""Marking alice's notification read or unread: alice only, hidden from everyone else."""
DIRECTORY_READERS = expect(everyone=403, team_admin=OK, auditor=OK, platform_admin=OK,
                           other_org=OK)  # fmt: skip
"""The directory: org roles read it, team admins their team, org B's admin org B."""
PERSON_DIRECTORY = expect(everyone=403, team_admin=OK, auditor=OK, platform_admin=OK,
                          other_org=404)  # fmt: skip
"""Someone's directory entry (one's own is ``/v1/me``)."""

# -- dashboard rules (HTML; 303 = redirected after a form, or anonymous to the sign-in) -----
ORG_PAGE = expect(everyone=OK, anonymous=303, other_org=404)
OWNER_OR_ADMIN_PAGE = expect(everyone=404, anonymous=303, owner=OK, platform_admin=OK)
OUTCOME_PAGE = expect(everyone=404, anonymous=303, owner=OK, employee=OK, platform_admin=OK,
                      auditor=OK)  # fmt: skip
FINDING_PAGE = expect(everyone=404, anonymous=303, owner=OK, auditor=OK, platform_admin=OK)
ORG_ADMIN_PAGE = expect(everyone=403, anonymous=303, platform_admin=OK, other_org=OK)
OWNER_OR_ADMIN_FORM = expect(everyone=404, anonymous=303, owner=303, platform_admin=303)
OUTCOME_JUDGES_FORM = expect(everyone=403, anonymous=303, owner=303, employee=303,
                             team_admin=404, other_org=404)  # fmt: skip
FINDING_REVIEW_FORM = expect(everyone=404, anonymous=303, owner=403, auditor=303,
                             platform_admin=303)  # fmt: skip
NOTIFICATION_RECIPIENT_FORM = expect(everyone=404, anonymous=303, owner=303)
ORG_ADMIN_FORM = expect(everyone=403, anonymous=303, platform_admin=303, other_org=303)
ORG_ADMIN_FORM_ON_A = expect(everyone=403, anonymous=303, platform_admin=303, other_org=404)
ORG_ADMIN_FORM_RENDERED = expect(everyone=403, anonymous=303, platform_admin=OK, other_org=OK)
TEAM_OR_ORG_ADMIN_FORM_ON_A = expect(everyone=403, anonymous=303, team_admin=303,
                                     platform_admin=303, other_org=404)  # fmt: skip
AGENT_OWNER_FORM = expect(everyone=403, anonymous=303, owner=303, platform_admin=303,
                          other_org=404)  # fmt: skip
"""Alice's agent in the builder: others in org A see it but may not change or run it."""
AUDIT_VERIFY_FORM = expect(everyone=403, anonymous=303, auditor=OK, platform_admin=OK,
                           other_org=OK)  # fmt: skip
DIRECTORY_PAGE = expect(everyone=403, anonymous=303, team_admin=OK, auditor=OK,
                        platform_admin=OK, other_org=OK)  # fmt: skip

AGENT_FORM = {
    "name": "helper", "owner": "alice", "model-provider": "scripted",
    "model-model": "test-model", "instructions": "You help.", "tools-0-name": "mail.send",
    "tools-0-scope": "write", "budget-max_steps": "10", "budget-timeout_seconds": "30",
    "outcomes-0-type": "mail_sent",
}  # fmt: skip
"""The builder form of alice's agent as the page posts it."""


@dataclass(frozen=True)
class Bug:
    """A route that does not answer as its rule says yet: the row is an xfail that still
    checks every column, against ``now`` where the bug shows. Fixed? Delete the ``Bug``."""

    reason: str
    now: Mapping[str, Expected]
    """Column -> what the route answers today (``LEAK``: 2xx showing org A's ids)."""


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    rule: Mapping[str, Expected]
    json: Any = None
    """Request body; strings may use ``{...}`` placeholders like the path."""
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] | None = None
    """A dashboard form (sent with the session's ``csrf``)."""
    ids: Mapping[str, str] = field(default_factory=dict)
    """Path parameter -> key in ``Seeded.ids`` when the names differ."""
    fresh: Mapping[str, str] = field(default_factory=dict)
    """Path parameter -> kind of row (``Seeded.fresh``) made anew for every request."""
    new_session: bool = False
    """Sign in anew for each request (the request ends its session)."""
    bug: Bug | None = None

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def is_page(self) -> bool:
        return self.path == "/ui" or self.path.startswith("/ui/")


AGENT = {"name": "agent_id"}
CONNECTOR = {"name": "connector"}

ROUTES: tuple[Row, ...] = (
    # meta and docs
    Row("GET", "/health", PUBLIC),
    Row("GET", "/ready", PUBLIC),
    Row("GET", "/openapi.json", PUBLIC),
    Row("GET", "/docs", PUBLIC),
    Row("GET", "/docs/oauth2-redirect", PUBLIC),
    Row("GET", "/redoc", PUBLIC),
    Row("GET", "/metrics", AUDIT_VERIFY),  # the caller's org's series only
    Row("GET", "/v1/me", SIGNED_IN),
    # sign-in and tokens
    Row("POST", "/v1/auth/login", PUBLIC,
        json={"handle": "mallory", "password": PASSWORD, "org": "globex"}),
    Row("POST", "/v1/auth/logout", SIGNED_IN),  # with a token: no session to end
    Row("GET", "/v1/tokens", SIGNED_IN),
    Row("POST", "/v1/tokens", SIGNED_IN, json={"name": "matrix"}),
    Row("DELETE", "/v1/tokens/{token_id}", OWNER_ONLY, fresh={"token_id": "token"}),
    # agents
    Row("GET", "/v1/agents", SIGNED_IN),
    Row("POST", "/v1/agents", AGENT_WRITE, json={"spec_yaml": SPEC}),
    Row("GET", "/v1/agents/{name}", ORG_MEMBERS, ids=AGENT),
    Row("GET", "/v1/agents/{name}/versions", ORG_MEMBERS, ids=AGENT),
    Row("POST", "/v1/agents/{name}/archive", RUN_START, fresh={"name": "agent"}),
    Row("POST", "/v1/agents/{name}/restore", RUN_START, fresh={"name": "archived_agent"}),
    Row("GET", "/v1/agents/{name}/diff", ORG_MEMBERS, ids=AGENT, query={"old": "1", "new": "2"}),
    # runs
    Row("POST", "/v1/runs", RUN_START, json={"agent": "{agent_id}", "input": "hi"}),
    Row("GET", "/v1/runs", SIGNED_IN),
    Row("GET", "/v1/runs/{run_id}", OWNER_OR_ADMIN),
    Row("GET", "/v1/runs/{run_id}/steps", OWNER_OR_ADMIN),
    Row("POST", "/v1/runs/{run_id}/cancel", OWNER_OR_ADMIN, fresh={"run_id": "run"}),
    Row("GET", "/v1/runs/{run_id}/events", OWNER_OR_ADMIN),  # finished: the stream ends
    Row("POST", "/v1/hooks/{agent_id}", WEBHOOK, json={"event": "push"}),
    Row("POST", "/v1/hooks/chat/{org_id}/{connector}", WEBHOOK, json={"type": "event_callback"}),
    # A Matrix homeserver's application-service pushes: its hs_token only, and the seeded
    # connector is no Matrix one, so every caller is refused (txn_id, matrix_user and
    # room_alias are filled with any seeded id: they are not read before that).
    Row("PUT", "/v1/hooks/matrix/{org_id}/{connector}/_matrix/app/v1/transactions/{txn_id}",
        WEBHOOK, ids={"txn_id": "run_id"}, json={"events": []}),
    Row("GET", "/v1/hooks/matrix/{org_id}/{connector}/_matrix/app/v1/users/{matrix_user}",
        WEBHOOK, ids={"matrix_user": "user_id"}),
    Row("GET", "/v1/hooks/matrix/{org_id}/{connector}/_matrix/app/v1/rooms/{room_alias}",
        WEBHOOK, ids={"room_alias": "connector"}),
    Row("POST", "/v1/hooks/matrix/{org_id}/{connector}/_matrix/app/v1/ping", WEBHOOK, json={}),
    # approvals
    Row("GET", "/v1/approvals", SIGNED_IN),
    Row("GET", "/v1/approvals/{approval_id}", OWNER_OR_ADMIN),
    Row("POST", "/v1/approvals/{approval_id}/approve", OWNER_OR_ADMIN,
        fresh={"approval_id": "approval"}),
    Row("POST", "/v1/approvals/{approval_id}/deny", OWNER_OR_ADMIN,
        fresh={"approval_id": "approval"}, json={"note": "no"}),
    # policy
    Row("POST", "/v1/policy/validate", ORG_ADMIN, json={"policies": ""}),
    Row("GET", "/v1/policy", SIGNED_IN),  # each org its own
    Row("PUT", "/v1/policy", ORG_ADMIN, json={"policies": ""}),  # org B's admin: org B's
    Row("GET", "/v1/policy/versions", SIGNED_IN),
    Row("GET", "/v1/policy/diff", SIGNED_IN, query={"old": "0", "new": "0"}),
    Row("POST", "/v1/policy/explain", ORG_MEMBERS, json={"agent": "{agent_id}"}),
    # audit
    Row("GET", "/v1/audit/events", AUDITOR_ONLY),
    Row("GET", "/v1/audit/verify", AUDIT_VERIFY),
    Row("GET", "/v1/audit/public-key", SIGNED_IN),
    Row("GET", "/v1/audit/checkpoints", AUDIT_VERIFY),
    Row("POST", "/v1/audit/checkpoints", AUDIT_VERIFY),
    Row("GET", "/v1/audit/proofs/inclusion", AUDITOR_ONLY, query={"seq": "1"}),
    Row("GET", "/v1/audit/proofs/consistency", AUDIT_VERIFY,
        query={"old": "0", "new": "{checkpoint_size}"}),
    Row("GET", "/v1/audit/export", AUDITOR_ONLY),
    Row("POST", "/v1/audit/redact", ORG_ADMIN, json={"before": "2001-01-01T00:00:00Z"}),
    # connectors
    Row("GET", "/v1/connectors", SIGNED_IN),
    Row("POST", "/v1/connectors", ORG_ADMIN,
        json={"name": "matrixconn{unique}", "config": {"transport": "http", "url": "http://127.0.0.1:9/"}}),
    Row("DELETE", "/v1/connectors/{name}", ORG_ADMIN_ON_A, fresh={"name": "connector"}),
    Row("GET", "/v1/connectors/{name}/tools", ORG_MEMBERS, ids=CONNECTOR,
        query={"refresh": "false"}),
    Row("POST", "/v1/connectors/{name}/approve",  # nothing recorded to approve: 404
        expect(platform_admin=404, other_org=404), ids=CONNECTOR, json={}),
    # Any signed-in person may probe a connector (it is down here: ok false, still 200).
    Row("POST", "/v1/connectors/{name}/test", ORG_MEMBERS, ids=CONNECTOR),
    # budgets and usage
    Row("GET", "/v1/budgets", SIGNED_IN),
    Row("PUT", "/v1/budgets", TEAM_OR_ORG_ADMIN_ON_A,
        json={"scope": "user", "name": "alice", "metric": "calls", "period": "day",
              "hard_cap": "50"}),
    Row("DELETE", "/v1/budgets/{budget_id}", TEAM_OR_ORG_ADMIN_ON_A,
        fresh={"budget_id": "budget"}),
    Row("GET", "/v1/usage", SIGNED_IN),
    Row("POST", "/v1/usage/reprice", ORG_ADMIN, json={"dry_run": True}),
    # outcomes
    Row("GET", "/v1/outcomes", SIGNED_IN),
    Row("GET", "/v1/outcomes/{outcome_id}", OUTCOME_READERS),
    Row("POST", "/v1/outcomes/{outcome_id}/feedback", OUTCOME_JUDGES,
        json={"verdict": "accepted"}),
    # A link answers for its reviewer: only the beneficiary gets one, for herself (asking
    # for someone else's is refused: test_an_owner_cannot_credit_her_own_outcome_...).
    Row("POST", "/v1/outcomes/{outcome_id}/link", LINK_OWN_SELF, json={}),
    # Org B's admin re-checks org B only (its counts show no ids, so the cross-org part is
    # pinned by tests/outcomes/test_recheck.py::test_an_admin_rechecks_only_her_own_...).
    Row("POST", "/v1/outcomes/recheck", ORG_ADMIN),
    Row("GET", "/v1/outcome-types", SIGNED_IN),
    Row("PUT", "/v1/outcome-types/{type_name}", ORG_ADMIN, ids={"type_name": "outcome_type"},
        json={"weight": 1.5}),
    Row("GET", "/v1/outcomes-cost", SIGNED_IN),
    Row("GET", "/v1/feedback/{token}", PUBLIC, ids={"token": "feedback_token"}),
    Row("POST", "/v1/feedback/{token}", PUBLIC, ids={"token": "feedback_token"},
        query={"verdict": "accepted"}),
    # analytics
    Row("GET", "/v1/analytics/leaderboard", SIGNED_IN),
    Row("GET", "/v1/analytics/teams/{team_id}", TEAM_VIEWERS),
    Row("GET", "/v1/analytics/people/{user_id}", PERSON_VIEWERS, query={"reason": "review"}),
    Row("GET", "/v1/analytics/views", SIGNED_IN),
    Row("PUT", "/v1/analytics/opt-in", SIGNED_IN, json={"opt_in": True}),
    Row("GET", "/v1/analytics/settings", SIGNED_IN),
    Row("PUT", "/v1/analytics/settings", ORG_ADMIN, json={"k": 2}),
    # integrity findings (about alice)
    Row("GET", "/v1/integrity/findings", SIGNED_IN),
    Row("GET", "/v1/integrity/findings/{finding_id}", FINDING_READERS),
    Row("POST", "/v1/integrity/findings/{finding_id}/review", FINDING_REVIEWERS,
        fresh={"finding_id": "finding"}, json={"status": "under_review"}),
    # notifications (the caller's own by default; here the org's)
    Row("GET", "/v1/notifications", NOTIFICATION_ORG_READERS, query={"scope": "org"}),
    Row("POST", "/v1/notifications/{notification_id}/read", NOTIFICATION_RECIPIENT),
    Row("DELETE", "/v1/notifications/{notification_id}/read", NOTIFICATION_RECIPIENT),
    Row("POST", "/v1/notifications/read-all", SIGNED_IN),  # each caller's own
    # directory and prices
    Row("GET", "/v1/users", DIRECTORY_READERS),
    Row("POST", "/v1/users", ORG_ADMIN, json={"handle": "new{unique}"}),
    Row("GET", "/v1/users/{user}", PERSON_DIRECTORY, ids={"user": "user_id"}),
    Row("PATCH", "/v1/users/{user}", ORG_ADMIN_ON_A, ids={"user": "user_id"},
        json={"role": "employee"}),
    Row("GET", "/v1/teams", DIRECTORY_READERS),
    Row("POST", "/v1/teams", ORG_ADMIN, json={"name": "team{unique}"}),
    Row("GET", "/v1/prices", SIGNED_IN),
    Row("POST", "/v1/prices", ORG_ADMIN,
        json={"provider": "openai", "model": "gpt-x", "input": "1", "output": "2",
              "effective_from": "2026-12-01"}),
    Row("GET", "/v1/prices/entries", SIGNED_IN),
    Row("GET", "/v1/prices/export", SIGNED_IN),
    # the dashboard (session cookie; anonymous is sent to the sign-in page)
    Row("GET", "/", REDIRECT),
    Row("GET", "/ui/login", SIGN_IN_PAGE),
    Row("POST", "/ui/login", PAGE_FORM,
        form={"handle": "mallory", "password": PASSWORD, "org": "globex"}),
    Row("POST", "/ui/logout", PAGE_FORM, form={}, new_session=True),
    Row("GET", "/ui/", PAGE),
    Row("GET", "/ui/agents", PAGE),
    Row("GET", "/ui/agents/new", PAGE),
    Row("POST", "/ui/agents/new", PAGE_FORM, form=AGENT_FORM | {"name": "ui{unique}",
                                                                "owner": "{handle}"}),
    Row("GET", "/ui/agents/{name}", ORG_PAGE, ids=AGENT),
    Row("GET", "/ui/agents/{name}/edit", ORG_PAGE, ids=AGENT),
    Row("POST", "/ui/agents/{name}/edit", AGENT_OWNER_FORM, ids=AGENT, form=AGENT_FORM),
    Row("POST", "/ui/agents/{name}/runs", AGENT_OWNER_FORM, ids=AGENT, form={"input": "hi"}),
    Row("POST", "/ui/agents/{name}/archive", AGENT_OWNER_FORM, fresh={"name": "agent"}, form={}),
    Row("POST", "/ui/agents/{name}/restore", AGENT_OWNER_FORM, fresh={"name": "archived_agent"},
        form={}),
    Row("GET", "/ui/runs", PAGE),
    Row("GET", "/ui/runs/{run_id}", OWNER_OR_ADMIN_PAGE),
    Row("GET", "/ui/runs/{run_id}/trace", OWNER_OR_ADMIN_PAGE),
    Row("POST", "/ui/runs/{run_id}/cancel", OWNER_OR_ADMIN_FORM, fresh={"run_id": "run"},
        form={}),
    Row("GET", "/ui/approvals", PAGE),
    Row("POST", "/ui/approvals/{approval_id}", OWNER_OR_ADMIN_FORM,
        fresh={"approval_id": "approval"}, form={"decision": "approve"}),
    Row("GET", "/ui/insights", PAGE),
    Row("GET", "/ui/insights/outcomes/{outcome_id}", OUTCOME_PAGE),
    Row("POST", "/ui/insights/outcomes/{outcome_id}/feedback", OUTCOME_JUDGES_FORM,
        form={"verdict": "accepted"}),
    Row("GET", "/ui/leaderboard", PAGE),
    Row("POST", "/ui/leaderboard/opt-in", PAGE_FORM, form={"choice": "in"}),
    Row("GET", "/ui/integrity", PAGE),
    Row("GET", "/ui/integrity/{finding_id}", FINDING_PAGE),
    Row("POST", "/ui/integrity/{finding_id}/review", FINDING_REVIEW_FORM,
        fresh={"finding_id": "finding"}, form={"decision": "under_review"}),
    Row("GET", "/ui/notifications", PAGE),
    Row("POST", "/ui/notifications/{notification_id}/read", NOTIFICATION_RECIPIENT_FORM,
        form={"read": "yes"}),
    Row("POST", "/ui/notifications/read-all", PAGE_FORM, form={}),  # each caller's own
    Row("GET", "/ui/audit", PAGE),
    Row("POST", "/ui/audit/verify", AUDIT_VERIFY_FORM, form={}),
    Row("GET", "/ui/admin", PAGE),
    Row("GET", "/ui/admin/connectors", PAGE),
    Row("GET", "/ui/admin/connectors/{name}", ORG_PAGE, ids=CONNECTOR),
    # Anyone may ask for a refresh (as on the API); the server is down here: 502.
    Row("POST", "/ui/admin/connectors/{name}/refresh",
        expect(everyone=502, anonymous=303, other_org=404), ids=CONNECTOR, form={}),
    Row("POST", "/ui/admin/connectors/{name}/approve",  # no such tool: 422 for admins
        expect(anonymous=303, platform_admin=422, other_org=404), ids=CONNECTOR,
        form={"tool": "nothing"}),
    Row("GET", "/ui/admin/policies", ORG_ADMIN_PAGE),
    Row("POST", "/ui/admin/policies", ORG_ADMIN_FORM_RENDERED, form={"policies": ""}),
    Row("GET", "/ui/admin/budgets", PAGE),
    Row("POST", "/ui/admin/budgets", expect(anonymous=303, team_admin=303, platform_admin=303,
                                            other_org=422),  # org B has no alice
        form={"scope": "user", "name": "alice", "metric": "calls", "period": "week",
              "hard_cap": "10"}),
    Row("POST", "/ui/admin/budgets/{budget_id}/delete", TEAM_OR_ORG_ADMIN_FORM_ON_A,
        fresh={"budget_id": "budget"}, form={}),
    Row("GET", "/ui/admin/prices", PAGE),
    Row("POST", "/ui/admin/prices", ORG_ADMIN_FORM,
        form={"provider": "openai", "model": "gpt-x", "input": "1", "output": "2",
              "effective_from": "2026-12-01"}),
    Row("GET", "/ui/admin/directory", DIRECTORY_PAGE),
    Row("POST", "/ui/admin/directory/users", ORG_ADMIN_FORM,
        form={"handle": "ui{unique}", "role": "employee"}),
    Row("POST", "/ui/admin/directory/users/{user_id}", ORG_ADMIN_FORM_ON_A,
        form={"role": "employee"}),
    Row("POST", "/ui/admin/directory/teams", ORG_ADMIN_FORM, form={"name": "uiteam{unique}"}),
    Row("GET", "/ui/vendor/plotly.min.js", PUBLIC),
    Row("MOUNT", "/ui/static", PUBLIC),
)  # fmt: skip
"""One row per route. The dashboard's GET pages redirect anonymous callers (303)."""

ROWS = {row.key: row for row in ROUTES}
assert len(ROWS) == len(ROUTES), "two rows for one route"


def app_routes(seeded: Seeded) -> set[str]:
    """``METHOD PATH`` of every route the app serves (``MOUNT PATH`` for mounts)."""
    keys = set()
    for route in routing.iter_route_contexts(seeded.app.routes):
        if isinstance(route.original_route, Mount):
            keys.add(f"MOUNT {route.path}")
            continue
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette adds HEAD to every GET
        keys |= {f"{method} {route.path}" for method in methods}
    return keys


# -- the test ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, module_store: str | None) -> Iterator[Seeded]:
    with pytest.MonkeyPatch.context() as patch:
        cheap_hashing(patch)
        world, server = seed(tmp_path_factory.mktemp("matrix"), database_url=module_store)
        try:
            yield world
        finally:
            world.platform.close()
            server.stop()


@dataclass
class Clients:
    """Cookie-less API calls (bearer tokens) and a browser whose session is set per call."""

    seeded: Seeded
    api: TestClient
    browser: TestClient
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Column -> (session cookie secret, CSRF token), signed in once."""

    def sign_in(self, column: str, *, again: bool = False) -> tuple[str, str]:
        """The column's session (``again``: a new one, used once and not kept)."""
        if again or column not in self.sessions:
            caller = self.seeded.callers[column]
            org = "globex" if column == "other_org" else "acme"
            signed_in = self.seeded.platform.signin.login(caller.handle, PASSWORD, org)
            if again:
                return signed_in.secret, signed_in.csrf_token
            self.sessions[column] = (signed_in.secret, signed_in.csrf_token)
        return self.sessions[column]

    def as_browser(self, column: str, *, new_session: bool = False) -> tuple[TestClient, str]:
        """The browser carrying exactly ``column``'s session cookie, and its CSRF token."""
        self.browser.cookies.clear()
        if column == "anonymous":
            return self.browser, ""
        secret, csrf = self.sign_in(column, again=new_session)
        self.browser.cookies.set(SESSION_COOKIE, secret)
        return self.browser, csrf

    def as_api(self) -> TestClient:
        self.api.cookies.clear()  # a sign-in row may have set one
        return self.api


@pytest.fixture(scope="module")
def clients(seeded: Seeded) -> Iterator[Clients]:
    with (
        TestClient(seeded.app, follow_redirects=False) as api,
        TestClient(seeded.app, follow_redirects=False) as browser,
    ):
        yield Clients(seeded=seeded, api=api, browser=browser)


def test_every_route_has_a_row(seeded: Seeded) -> None:
    served = app_routes(seeded)
    missing = sorted(served - ROWS.keys())
    stale = sorted(ROWS.keys() - served)
    problems = [f"add an expectation for {key} (tests/api/test_authz_matrix.py ROUTES)"
                for key in missing]  # fmt: skip
    problems += [f"no route {key} any more: remove or fix its row" for key in stale]
    assert not problems, "\n".join(problems)


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _fill(template: Any, values: Mapping[str, str]) -> Any:
    """``{name}`` -> ``values[name]`` in strings (other braces, as in YAML, stay)."""
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), template)
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return template


def _request(seeded: Seeded, row: Row, column: str, clients: Clients) -> Any:
    values = dict(seeded.ids)
    if column != "anonymous":
        values["handle"] = seeded.callers[column].handle
    values["unique"] = seeded.unique()
    for param, source in row.ids.items():
        values[param] = seeded.ids[source]
    for param, kind in row.fresh.items():
        values[param] = seeded.fresh(kind)
    path = _fill(row.path, values)
    if row.method == "MOUNT":
        return clients.as_browser(column)[0].get(f"{path}/app.css")
    if row.is_page or row.path == "/":
        browser, csrf = clients.as_browser(column, new_session=row.new_session)
        form = None if row.form is None else {**_fill(dict(row.form), values), "csrf": csrf}
        return browser.request(row.method, path, params=_fill(dict(row.query), values), data=form)
    query, body = _fill(dict(row.query), values), _fill(row.json, values)
    return clients.as_api().request(
        row.method, path, params=query, json=body, headers=seeded.headers(column)
    )


def _matches(status: int, expected: Expected) -> bool:
    return 200 <= status < 300 if expected == OK else status == expected


@pytest.mark.parametrize("row", ROUTES, ids=[r.key for r in ROUTES])
def test_route_answers_each_role_as_its_rule_says(
    seeded: Seeded, clients: Clients, row: Row
) -> None:
    org_a = seeded.org_a_ids()
    expected_now = {**row.rule, **(row.bug.now if row.bug else {})}
    wrong = []
    for column in COLUMNS:
        expected = expected_now[column]
        response = _request(seeded, row, column, clients)
        status, body = response.status_code, response.text
        leaked = sorted(i for i in org_a if i in body) if column == "other_org" else []
        if expected == LEAK:
            if not (200 <= status < 300 and leaked):
                wrong.append(f"{column}: expected {LEAK}, got {status} {body[:300]}")
        elif not _matches(status, expected):
            wrong.append(f"{column}: expected {expected}, got {status} {body[:300]}")
        elif leaked and status < 300:
            wrong.append(f"{column}: got {status} showing org A's {leaked}")
        if column == "anonymous" and status == 303 and row.path != "/ui/login":
            where = response.headers["location"]
            if not where.startswith("/ui/login?next="):
                wrong.append(f"anonymous: sent to {where}, not to the sign-in page")
        if status >= 400 and not row.is_page:
            assert response.headers["content-type"] == "application/problem+json", row.key
            assert json.loads(body)["status"] == status
    hint = " (the known bug is fixed? then delete the row's Bug)" if row.bug else ""
    assert not wrong, f"{row.key} ({_rule_name(row.rule)}){hint}:\n  " + "\n  ".join(wrong)
    if row.bug is not None:
        pytest.xfail(f"known bug: {row.bug.reason}")


def _rule_name(rule: Mapping[str, Expected]) -> str:
    for name, value in globals().items():
        if name.isupper() and value == rule:
            return name
    return "custom rule"


def test_csrf_is_required_for_unsafe_cookie_requests_on_every_route(
    seeded: Seeded, clients: Clients
) -> None:
    """The matrix signs API requests with tokens and pages with the right CSRF token; here
    every unsafe route, API or page, refuses a signed-in browser's request whose CSRF token
    is wrong, before doing anything."""
    not_refused = []
    for row in ROUTES:
        if row.method not in ("POST", "PUT", "DELETE", "PATCH"):
            continue
        open_route = row.rule["anonymous"] not in (401, 303) or row.rule["owner"] == 401
        if open_route or row.key == "POST /ui/login":
            continue  # sign-in, signed links and webhooks have no session to protect
        client, _ = clients.as_browser("platform_admin")
        values = {**seeded.ids, **{p: seeded.ids[s] for p, s in row.ids.items()}}
        values["unique"] = seeded.unique()
        path, query = _fill(row.path, values), _fill(dict(row.query), values)
        if row.is_page:
            form = {**_fill(dict(row.form or {}), values), "csrf": "wrong"}
            response = client.request(row.method, path, params=query, data=form)
            refused = response.status_code == 403
        else:
            response = client.request(row.method, path, params=query,
                                      json=_fill(row.json, values),
                                      headers={CSRF_HEADER: "wrong"})  # fmt: skip
            refused = response.status_code == 403 and "CSRF" in response.json()["detail"]
        if not refused:
            not_refused.append(f"{row.key}: {response.status_code} {response.text[:200]}")
    assert not not_refused, "a wrong CSRF token was not refused:\n" + "\n".join(not_refused)


# -- beyond one request per cell ----------------------------------------------------------


def test_an_owner_cannot_credit_her_own_outcome_through_a_feedback_link(
    seeded: Seeded, clients: Clients
) -> None:
    outcome_id = seeded.fresh("outcome")
    api, owner = clients.as_api(), seeded.callers["owner"]
    minted = api.post(f"/v1/outcomes/{outcome_id}/link", headers=seeded.headers("owner"),
                      json={"reviewer": seeded.callers["employee"].user_id})  # fmt: skip
    assert minted.status_code == 403, minted.text  # she never holds bob's link
    assert seeded.platform.outcomes.get(owner, outcome_id).state != "credited"


def test_org_b_cannot_redact_org_a_audit_records(make_world: Callable[..., World]) -> None:
    world = make_world()
    platform = world.platform
    globex = platform.accounts.create_org("globex")
    mallory = platform.accounts.create_user(globex.id, "mallory", role="platform_admin")
    token = platform.accounts.issue_token(mallory.id, "t")
    with platform.db.session() as session:  # an old record of org A's
        platform.audit.append(session, AuditRecord(
            action="agent.create", resource="agent:old", outcome="ok",
            org_id=world.alice.org_id, actor_user_id=world.alice.user_id,
        ))  # fmt: skip
    with platform.db.session() as session:
        seq = session.scalars(
            select(AuditEvent.seq).where(AuditEvent.resource == "agent:old")
        ).one()
        session.execute(update(AuditEvent).where(AuditEvent.seq == seq)
                        .values(ts=datetime(2000, 1, 1, tzinfo=UTC)))  # fmt: skip
    with TestClient(create_app(platform)) as client:
        redacted = client.post("/v1/audit/redact", json={"before": "2001-01-01T00:00:00Z"},
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert redacted.status_code == 200, redacted.text
    with platform.db.session() as session:
        old = session.get(AuditEvent, seq)
        assert old is not None and old.redacted_at is None, "org B redacted org A's record"
