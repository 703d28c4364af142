from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from meshclaw.errors import NotFoundError, PermissionDenied, SpecError
from meshclaw.platform import Platform
from meshclaw.spec import AgentSpec, dump_spec, load_spec, parse_spec
from meshclaw.spec.registry import AgentInfo

from .conftest import Acme

MAIL_TRIAGE = Path(__file__).resolve().parents[2] / "examples" / "mail-triage.yaml"


def mail_triage(**changes: object) -> AgentSpec:
    return load_spec(MAIL_TRIAGE).model_copy(update=changes)


def same_agent(a: AgentInfo, b: AgentInfo) -> bool:
    # created_at is compared on its own: see test_timestamps_read_back_are_timezone_aware.
    return replace(a, created_at=b.created_at) == b


def with_budget(spec: AgentSpec, max_steps: int) -> AgentSpec:
    return spec.model_copy(
        update={"budget": spec.budget.model_copy(update={"max_steps": max_steps})}
    )


def test_create_saves_version_one(platform: Platform, acme: Acme) -> None:
    spec = mail_triage()

    agent, changed = platform.agents.save(acme.alice, spec)

    assert changed is True
    assert agent.id.startswith("agt_")
    assert (agent.name, agent.version, agent.spec) == ("mail-triage", 1, spec)
    assert (agent.owner_id, agent.owner_handle) == (acme.alice.user_id, "alice")
    assert agent.org_id == acme.alice.org_id
    assert agent.team_id == acme.platform_team_id, "the owner's team"
    assert same_agent(platform.agents.get(acme.alice, "mail-triage"), agent)
    assert same_agent(platform.agents.get(acme.alice, agent.id), agent)


def test_saving_an_identical_spec_is_a_no_op(platform: Platform, acme: Acme) -> None:
    first, _ = platform.agents.save(acme.alice, mail_triage())
    # The same agent written differently (comments gone, defaults spelled out) is identical.
    rewritten = parse_spec(dump_spec(mail_triage()))

    again, changed = platform.agents.save(acme.alice, rewritten)

    assert changed is False
    assert same_agent(again, first)
    assert [v.version for v in platform.agents.versions(acme.alice, "mail-triage")] == [1]


def test_a_changed_spec_becomes_version_two(platform: Platform, acme: Acme) -> None:
    original = mail_triage()
    platform.agents.save(acme.alice, original)
    changed_spec = with_budget(original, 25)

    agent, changed = platform.agents.save(acme.alice, changed_spec)

    assert changed is True
    assert (agent.version, agent.spec) == (2, changed_spec)
    versions = platform.agents.versions(acme.alice, "mail-triage")
    assert [v.version for v in versions] == [1, 2]
    assert [v.created_by for v in versions] == [acme.alice.user_id] * 2
    assert versions[0].spec_hash != versions[1].spec_hash
    assert versions[0].spec_yaml == dump_spec(original)
    assert versions[1].spec_yaml == dump_spec(changed_spec)
    assert versions[0].created_at <= versions[1].created_at
    _, row = platform.agents.version(acme.alice, "mail-triage", 1)
    assert parse_spec(row.spec_yaml) == original


def test_going_back_to_an_old_spec_is_a_new_version(platform: Platform, acme: Acme) -> None:
    original = mail_triage()
    platform.agents.save(acme.alice, original)
    platform.agents.save(acme.alice, with_budget(original, 25))

    agent, changed = platform.agents.save(acme.alice, original)

    assert (changed, agent.version) == (True, 3), "versions are never rewritten"
    versions = platform.agents.versions(acme.alice, "mail-triage")
    assert versions[0].spec_hash == versions[2].spec_hash


def test_diff_shows_the_changed_line(platform: Platform, acme: Acme) -> None:
    original = mail_triage()
    platform.agents.save(acme.alice, original)
    platform.agents.save(acme.alice, with_budget(original, 25))

    diff = platform.agents.diff(acme.alice, "mail-triage", 1, 2)

    lines = diff.splitlines()
    assert lines[:2] == ["--- v1", "+++ v2"]
    assert [line for line in lines[2:] if line[:1] in "+-"] == [
        "-  max_steps: 40",
        "+  max_steps: 25",
    ]
    assert platform.agents.diff(acme.alice, "mail-triage", 2, 2) == ""


def test_list_shows_the_orgs_agents_by_name(platform: Platform, acme: Acme) -> None:
    platform.agents.save(acme.alice, mail_triage(name="zeta"))
    platform.agents.save(acme.erin, mail_triage(name="alpha", owner="erin"))

    assert [a.name for a in platform.agents.list_agents(acme.bob)] == ["alpha", "zeta"]
    assert [a.owner_handle for a in platform.agents.list_agents(acme.bob)] == ["erin", "alice"]


def test_another_org_sees_nothing(platform: Platform, acme: Acme) -> None:
    platform.agents.save(acme.alice, mail_triage())
    other = platform.accounts.create_org("globex")
    zed = platform.accounts.caller_for(platform.accounts.create_user(other.id, "zed"))

    assert platform.agents.list_agents(zed) == []
    with pytest.raises(NotFoundError, match="no agent 'mail-triage'"):
        platform.agents.get(zed, "mail-triage")


def test_an_employee_cannot_save_an_agent_for_someone_else(platform: Platform, acme: Acme) -> None:
    with pytest.raises(PermissionDenied, match="only create agents that you own"):
        platform.agents.save(acme.erin, mail_triage())  # owner: alice

    assert platform.agents.list_agents(acme.erin) == []


def test_a_team_admin_cannot_save_an_agent_for_someone_else(platform: Platform, acme: Acme) -> None:
    with pytest.raises(PermissionDenied):
        platform.agents.save(acme.bob, mail_triage())


def test_an_employee_cannot_take_over_someone_elses_agent(platform: Platform, acme: Acme) -> None:
    platform.agents.save(acme.alice, mail_triage())

    with pytest.raises(PermissionDenied, match="belongs to someone else"):
        platform.agents.save(acme.erin, mail_triage(owner="erin"))

    assert platform.agents.get(acme.alice, "mail-triage").version == 1


def test_a_platform_admin_can_save_an_agent_for_someone_else(
    platform: Platform, acme: Acme
) -> None:
    agent, changed = platform.agents.save(acme.carol, mail_triage())

    assert changed is True
    assert (agent.owner_id, agent.owner_handle) == (acme.alice.user_id, "alice")
    assert agent.team_id == acme.platform_team_id
    [version] = platform.agents.versions(acme.alice, "mail-triage")
    assert version.created_by == acme.carol.user_id
    # ... and the owner can go on editing it.
    assert platform.agents.save(acme.alice, with_budget(mail_triage(), 5))[0].version == 2


def test_an_owner_that_does_not_exist_is_a_spec_error(platform: Platform, acme: Acme) -> None:
    with pytest.raises(SpecError) as info:
        platform.agents.save(acme.carol, mail_triage(owner="mallory"))

    [issue] = info.value.issues
    assert issue.path == "owner"
    assert issue.message == "no user 'mallory' in this org"


def test_an_owner_in_another_org_does_not_exist_here(platform: Platform, acme: Acme) -> None:
    other = platform.accounts.create_org("globex")
    platform.accounts.create_user(other.id, "zed")

    with pytest.raises(SpecError) as info:
        platform.agents.save(acme.carol, mail_triage(owner="zed"))

    assert [i.path for i in info.value.issues] == ["owner"]


def test_unknown_agents_and_versions_are_not_found(platform: Platform, acme: Acme) -> None:
    platform.agents.save(acme.alice, mail_triage())

    with pytest.raises(NotFoundError):
        platform.agents.get(acme.alice, "nope")
    with pytest.raises(NotFoundError):
        platform.agents.versions(acme.alice, "nope")
    with pytest.raises(NotFoundError, match="no version 2"):
        platform.agents.version(acme.alice, "mail-triage", 2)
    with pytest.raises(NotFoundError):
        platform.agents.diff(acme.alice, "mail-triage", 1, 2)


def test_timestamps_read_back_are_timezone_aware(platform: Platform, acme: Acme) -> None:
    created, _ = platform.agents.save(acme.alice, mail_triage())
    assert created.created_at.tzinfo is not None

    [version] = platform.agents.versions(acme.alice, "mail-triage")
    read_back = platform.agents.get(acme.alice, "mail-triage")

    assert read_back.created_at == created.created_at
    assert version.created_at.tzinfo is not None
