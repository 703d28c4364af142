"""A seeded platform for whole-API tests: two orgs, every role, and real rows to point at.

Org ``acme`` (A) holds everything: alice (employee, team eng) owns an agent, a finished run
whose mail to bob is an outcome, a pending approval, a budget and API tokens; tara is eng's
team admin, root the platform admin, audrey the auditor, bob a plain colleague. Org
``globex`` (B) has mallory, its platform admin: the strongest outsider there is. The
authorisation matrix and the contract tests both start from here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select, update

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.config import ProviderConfig, Settings
from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.models import ConnectorRecord
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.integrity.models import IntegrityFinding
from meshclaw.metering.models import Budget
from meshclaw.notify.models import Notification
from meshclaw.outcomes.models import Outcome
from meshclaw.platform import Platform
from meshclaw.policy.approvals import HeldCall
from meshclaw.policy.authorizer import Decision
from meshclaw.policy.models import Approval
from meshclaw.providers.scripted import Script, ScriptedServer
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import Agent, Run, Team, User
from tests.conftest import FAST_RETRY, agent_yaml

PASSWORD = "correct horse battery staple"
COLUMNS = ("anonymous", "owner", "employee", "team_admin", "platform_admin", "auditor",
           "other_org")  # fmt: skip
"""Who calls: nobody, then org A's people by role (``owner`` is alice, an employee who owns
the resources; ``employee`` is bob, who does not), then org B's platform admin."""

SPEC = agent_yaml(tools=(("mail.send", "write"),)) + "outcomes:\n  - {type: mail_sent}\n"
"""Alice's agent ``helper``: it mails, and a mail someone else receives is an outcome."""


class _FakeMail:
    """``mail.send`` answering with the built-in mail server's evidence shape."""

    name = "mail"

    async def list_tools(self) -> list[ToolDefinition]:
        return [ToolDefinition(name="send", description="Send a mail.", action="write")]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        evidence = {"message_id": f"<{ctx.idempotency_key}@mail>", "recipients": [arguments["to"]]}
        return ToolResult(content="sent", data={"evidence": evidence})


@dataclass
class Seeded:
    platform: Platform
    app: FastAPI
    callers: dict[str, Caller]
    """By column (every column but ``anonymous``)."""
    tokens: dict[str, str]
    """A bearer secret per caller column."""
    ids: dict[str, str]
    """Rows of org A by name: agent_id, agent, run_id, outcome_id, approval_id, team_id,
    user_id (alice), token_id (one of alice's), budget_id, connector, feedback_token..."""
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def headers(self, column: str) -> dict[str, str]:
        if column == "anonymous":
            return {}
        return {"Authorization": f"Bearer {self.tokens[column]}"}

    def unique(self) -> str:
        """A number never handed out before in this world (for names that must be new)."""
        return str(next(self._counter))

    def org_a_ids(self) -> set[str]:
        """Ids that must never appear in anything org B is shown."""
        org_a = self.callers["owner"].org_id
        found = {org_a}
        with self.platform.db.session() as session:
            for model in (Agent, Run, Team, User, Outcome, Approval, Budget, IntegrityFinding,
                          Notification):  # fmt: skip
                found |= set(session.scalars(select(model.id).where(model.org_id == org_a)))
            found |= set(session.scalars(
                select(ConnectorRecord.name).where(ConnectorRecord.org_id == org_a)
            ))  # fmt: skip
        return found

    # -- fresh rows for requests that use theirs up ---------------------------------------

    def fresh(self, kind: str) -> str:
        """A new row of org A (alice's, or made by its admin) of ``kind``; its id or name."""
        n = next(self._counter)
        owner, admin = self.callers["owner"], self.callers["platform_admin"]
        if kind == "run":
            return self.platform.runs.create(owner, "helper", f"fresh {n}").id
        if kind == "approval":
            return self._pending_approval(n)
        if kind == "token":
            self.platform.accounts.issue_token(owner.user_id, f"fresh-{n}")
            return self.platform.accounts.tokens(owner)[0].id
        if kind == "budget":
            return self.platform.budgets.set(
                admin, scope="user", name="alice", metric="calls", period="hour",
                hard_cap="1000", soft_cap=None,
            ).id  # fmt: skip
        if kind == "outcome":
            return self._outcome(n)
        if kind == "finding":
            return self._finding(n)
        if kind in ("agent", "archived_agent"):
            spec = parse_spec(SPEC.replace("name: helper", f"name: fresh-agent-{n}"))
            agent, _ = self.platform.agents.save(owner, spec)
            if kind == "archived_agent":
                self.platform.agents.archive(owner, agent.id)
            return agent.id
        if kind == "connector":
            name = f"fresh{n}"
            self.platform.connector_admin.add(
                admin, name, {"transport": "http", "url": "http://127.0.0.1:9/mcp"}
            )
            return name
        raise KeyError(kind)

    def _outcome(self, n: int) -> str:
        """Another run of alice's that mails bob: a new, unjudged outcome."""
        owner = self.callers["owner"]
        run = self.platform.runs.create(owner, "helper", f"mail bob again {n}")
        assert self.platform.runs.claim(run.id)
        asyncio.run(_execute(self.platform, run.id))
        (outcome,) = [o for o in self.platform.outcomes.list_outcomes(owner) if o.run_id == run.id]
        return outcome.id

    def _finding(self, n: int) -> str:
        """An open integrity finding about alice (as a scan would record it)."""
        owner = self.callers["owner"]
        finding = IntegrityFinding(
            id=f"fnd_seed{n}", org_id=owner.org_id, subject=owner.user_id,
            detector="repeat_task", status="open", strength=0.8, score=3.5,
            evidence={"runs": [self.ids.get("run_id", "")], "similarity": 0.97},
            source="seed",
        )  # fmt: skip
        with self.platform.db.session() as session:
            session.add(finding)
        return finding.id

    def _pending_approval(self, n: int) -> str:
        """A run of alice's waiting on one held ``mail.send`` (as the gateway leaves it)."""
        owner = self.callers["owner"]
        run = self.platform.runs.create(owner, "helper", f"needs approval {n}")
        with self.platform.db.session() as session:
            session.execute(update(Run).where(Run.id == run.id).values(status="waiting_approval"))
        resolution = self.platform.approvals.resolve(
            HeldCall(
                org_id=owner.org_id, run_id=run.id, agent_id=run.agent_id,
                owner_id=owner.user_id, seq=1, tool_call_id=f"call_{n}", tool="mail.send",
                action="write", arguments={"to": "bob", "subject": f"report {n}"},
                decision=Decision(allowed=False, needs_approval=True,
                                  reason="write after untrusted content"),
            )
        )  # fmt: skip
        assert resolution.verdict == "pending"
        return resolution.approval_id


def seed(home: Path, *, database_url: str | None = None) -> tuple[Seeded, ScriptedServer]:
    """Build the seeded platform; the caller stops the server and closes the platform."""
    server = ScriptedServer(Script.model_validate({"turns": [
        {"reply": {"tool_calls": [{"name": "mail.send", "arguments": {"to": "bob"}}]}},
        {"reply": {"content": "sent the report"}},
    ]}))  # fmt: skip
    server.start()
    settings = Settings(
        home=home,
        database_url=database_url,
        embedded_model_server=False,
        providers={"scripted": ProviderConfig(base_url=server.base_url, timeout_seconds=10)},
    )
    platform = Platform(settings)
    accounts = platform.accounts
    acme = accounts.create_org("acme")
    eng = accounts.create_team(acme.id, "eng")
    ops = accounts.create_team(acme.id, "ops")
    people = {
        "owner": accounts.create_user(acme.id, "alice", team_id=eng.id),
        "employee": accounts.create_user(acme.id, "bob", team_id=ops.id),
        "team_admin": accounts.create_user(acme.id, "tara", team_id=eng.id, role="team_admin"),
        "platform_admin": accounts.create_user(acme.id, "root", role="platform_admin"),
        "auditor": accounts.create_user(acme.id, "audrey", role="auditor"),
    }
    globex = accounts.create_org("globex")
    globex_team = accounts.create_team(globex.id, "eng")
    people["other_org"] = accounts.create_user(
        globex.id, "mallory", team_id=globex_team.id, role="platform_admin"
    )
    callers = {column: accounts.caller_for(user) for column, user in people.items()}
    tokens = {column: accounts.issue_token(user.id, "seed") for column, user in people.items()}
    for user in people.values():
        platform.signin.set_password(user.id, PASSWORD)
    owner, admin = callers["owner"], callers["platform_admin"]

    agent, _ = platform.agents.save(owner, parse_spec(SPEC))
    platform.agents.save(owner, parse_spec(SPEC.replace("You help.", "You help, briefly.")))
    run = platform.runs.create(owner, "helper", "mail bob the report")
    assert platform.runs.claim(run.id)
    asyncio.run(_execute(platform, run.id))
    assert platform.runs.get(owner, run.id).status == "succeeded"
    (outcome,) = platform.outcomes.list_outcomes(owner)
    platform.analytics.update_settings(admin, k=2)  # eng (alice, tara) is big enough
    checkpoint = platform.audit_log.checkpoint(admin)
    # Org B has rows of its own, so "empty" is never why org A's rows do not show.
    mallory = callers["other_org"]
    platform.agents.save(mallory, parse_spec(SPEC.replace("owner: alice", "owner: mallory")))

    seeded = Seeded(platform=platform, app=create_app(platform), callers=callers,
                    tokens=tokens, ids={})  # fmt: skip
    seeded.ids.update(
        agent_id=agent.id,
        agent="helper",
        agent_version="1",
        run_id=run.id,
        outcome_id=outcome.id,
        approval_id=seeded.fresh("approval"),
        team_id=eng.id,
        user_id=owner.user_id,
        token_id=seeded.fresh("token"),
        budget_id=seeded.fresh("budget"),
        connector=seeded.fresh("connector"),
        feedback_token=platform.outcomes.link_for(outcome.id, callers["employee"].user_id),
        outcome_type="mail_sent",
        org_id=acme.id,
        checkpoint_size=str(checkpoint.size),
    )
    seeded.ids["finding_id"] = seeded.fresh("finding")
    with platform.db.session() as session:  # the pending approval told alice
        seeded.ids["notification_id"] = session.scalars(
            select(Notification.id).where(
                Notification.resource == f"approval:{seeded.ids['approval_id']}"
            )
        ).one()
    return seeded, server


async def _execute(platform: Platform, run_id: str) -> None:
    gateway = platform.build_gateway(retry=FAST_RETRY, connectors=ConnectorRegistry([_FakeMail()]))
    try:
        await platform.executor(gateway).execute(run_id)
    finally:
        await gateway.aclose()
