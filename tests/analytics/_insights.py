"""A small org with usage and outcomes at chosen times, for the insights and board tests.

Team eng has six people (alice, eng0..eng3 and their team admin ``lead``): at least
k = 5, so its aggregates are shown. Team ops has only bob: never shown as a group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from meshclaw.accounts.service import Caller
from meshclaw.clock import utcnow
from meshclaw.ids import new_id
from meshclaw.outcomes.models import Outcome
from meshclaw.store.models import UsageRecord
from tests.conftest import World, agent_yaml


@dataclass
class InsightsOrg:
    world: World
    eng: list[Caller]
    """alice and eng0..eng3."""
    lead: Caller
    """Team admin of eng."""
    auditor: Caller
    agent_id: str
    run_id: str

    @property
    def alice(self) -> Caller:
        return self.world.alice

    def spend(self, who: Caller, nano_usd: int, at: datetime | None = None) -> None:
        """A metered model call of ``who``'s costing ``nano_usd``."""
        with self.world.platform.db.session() as session:
            session.add(
                UsageRecord(
                    id=new_id("use"), kind="model", org_id=who.org_id, team_id=who.team_id,
                    user_id=who.user_id, agent_id=self.agent_id, agent_version=1,
                    run_id=self.run_id, trigger="api", provider="scripted", model="test-model",
                    input_tokens=1000, output_tokens=500, cost_nano_usd=nano_usd,
                    created_at=at or utcnow(),
                )
            )  # fmt: skip

    def outcome(
        self,
        owner: Caller,
        beneficiary: Caller,
        *,
        accept: bool = False,
        at: datetime | None = None,
    ) -> str:
        """A verified mail from ``owner`` to ``beneficiary``; accepted by them if ``accept``."""
        oid = new_id("out")
        with self.world.platform.db.session() as session:
            session.add(
                Outcome(
                    id=oid, org_id=owner.org_id, team_id=owner.team_id, user_id=owner.user_id,
                    agent_id=self.agent_id, run_id=self.run_id, tool="mail.send",
                    type="mail_sent", ref=f"<{oid}@mail>", beneficiaries=[beneficiary.user_id],
                    verified=True, verification={"delivered": True, "recipient": "someone else"},
                    evidence={}, value=1.0, state="unaccepted", created_at=at or utcnow(),
                )
            )  # fmt: skip
        if accept:
            self.world.platform.outcomes.feedback(beneficiary, oid, "accepted")
        return oid


def insights_org(make_world: Callable[..., World], database_url: str | None = None) -> InsightsOrg:
    world = make_world(database_url=database_url)
    accounts = world.platform.accounts
    org, team = world.alice.org_id, world.alice.team_id

    def person(handle: str, role: str = "employee", team_id: str | None = team) -> Caller:
        return accounts.caller_for(accounts.create_user(org, handle, team_id=team_id, role=role))

    eng = [world.alice, *(person(f"eng{i}") for i in range(4))]
    lead = person("lead", "team_admin")
    auditor = person("dave", "auditor", None)
    agent_id = world.save_agent(agent_yaml())
    run_id = world.start_run("helper")
    return InsightsOrg(
        world=world, eng=eng, lead=lead, auditor=auditor, agent_id=agent_id, run_id=run_id
    )
