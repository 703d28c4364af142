from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from meshclaw.errors import SpecError
from meshclaw.spec import AgentSpec, Budget, ToolGrant, ToolScope, validate_spec
from meshclaw.spec.models import OUTCOME_TYPES, CronTrigger, ManualTrigger


def minimal(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "triage",
        "owner": "alice",
        "model": {"provider": "scripted", "model": "scripted-demo"},
        "instructions": "Sort the inbox.",
    }
    return doc | overrides


def test_defaults_of_a_minimal_spec() -> None:
    spec = AgentSpec.model_validate(minimal())

    assert spec.apiVersion == "meshclaw/v1"
    assert spec.description == ""
    assert spec.team is None
    assert spec.model.parameters == {}
    assert spec.tools == []
    assert spec.triggers == [ManualTrigger(type="manual")]
    assert spec.budget == Budget(max_steps=20, timeout_seconds=300)
    assert spec.budget.max_tokens_per_run is None
    assert spec.budget.max_cost_usd_per_run is None
    assert spec.outcomes == []


def test_a_tool_grant_is_read_only_on_everything_by_default() -> None:
    grant = ToolGrant(name="mail.read")

    assert grant.scope is ToolScope.read
    assert grant.targets == ["*"]


@pytest.mark.parametrize("name", ["mail.read", "mail.*", "google_drive.list-files", "x1.y2"])
def test_tool_names_that_are_accepted(name: str) -> None:
    assert ToolGrant(name=name).name == name


@pytest.mark.parametrize(
    "name", ["mail", "Mail.read", "mail.Read", "mail.read.all", "*.read", "mail.", ".read", "1x.y"]
)
def test_tool_names_that_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match=r"connector\.tool"):
        ToolGrant(name=name)


@pytest.mark.parametrize("name", ["ab", "mail-triage", "a" + "b" * 62])
def test_agent_names_that_are_accepted(name: str) -> None:
    assert AgentSpec.model_validate(minimal(name=name)).name == name


@pytest.mark.parametrize("name", ["a", "Mail", "mail_triage", "-mail", "1mail", "a" + "b" * 63])
def test_agent_names_that_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        AgentSpec.model_validate(minimal(name=name))


def test_cron_needs_five_fields() -> None:
    assert CronTrigger(type="cron", schedule="0 9 * * 1-5").schedule == "0 9 * * 1-5"
    for schedule in ["0 9 * *", "0 0 9 * * 1-5", "@daily", ""]:
        with pytest.raises(ValidationError, match="five-field"):
            CronTrigger(type="cron", schedule=schedule)


def test_every_trigger_type_validates() -> None:
    spec = AgentSpec.model_validate(
        minimal(
            triggers=[
                {"type": "manual"},
                {"type": "api"},
                {"type": "cron", "schedule": "*/15 * * * *", "input": "check"},
                {"type": "webhook", "secret_ref": "vault:hooks/x"},
                {"type": "chat", "channel": "#ops"},
                {"type": "mail", "mailbox": "ops@acme.example"},
            ]
        )
    )

    assert [t.type for t in spec.triggers] == ["manual", "api", "cron", "webhook", "chat", "mail"]


def test_budget_cost_is_decimal_and_limits_are_enforced() -> None:
    assert Budget(max_cost_usd_per_run=Decimal("0.05")).max_cost_usd_per_run == Decimal("0.05")
    for bad in [
        {"max_steps": 0},
        {"max_steps": 1001},
        {"max_tokens_per_run": 0},
        {"max_cost_usd_per_run": 0},
        {"max_cost_usd_per_run": -1},
        {"timeout_seconds": 0},
        {"timeout_seconds": 86_401},
    ]:
        with pytest.raises(ValidationError):
            Budget.model_validate(bad)


def test_outcome_types_are_snake_case() -> None:
    for kind in OUTCOME_TYPES:
        assert AgentSpec.model_validate(minimal(outcomes=[{"type": kind}])).outcomes[0].type == kind
    with pytest.raises(ValidationError):
        AgentSpec.model_validate(minimal(outcomes=[{"type": "Mail Sent"}]))


def test_unknown_keys_are_errors_at_every_level() -> None:
    for doc in [
        minimal(colour="blue"),
        minimal(model={"provider": "scripted", "model": "m", "temp": 0}),
        minimal(tools=[{"name": "mail.read", "scopes": "read"}]),
        minimal(triggers=[{"type": "cron", "schedule": "0 9 * * *", "timezone": "UTC"}]),
        minimal(budget={"max_step": 3}),
    ]:
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            AgentSpec.model_validate(doc)


def test_a_tool_granted_twice_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        AgentSpec.model_validate(
            minimal(tools=[{"name": "mail.read"}, {"name": "mail.*"}, {"name": "mail.read"}])
        )

    [error] = info.value.errors()
    assert error["type"] == "duplicate_tool"
    assert error["loc"] == ("tools",)
    assert error["msg"] == "tool 'mail.read' is granted twice (first at tools[0])"


def test_grant_for_prefers_the_exact_name_over_the_wildcard() -> None:
    spec = AgentSpec.model_validate(
        minimal(
            tools=[
                {"name": "mail.*", "scope": "read"},
                {"name": "mail.send", "scope": "write", "targets": ["mail:to/*@acme.example"]},
            ]
        )
    )

    send = spec.grant_for("mail.send")
    read = spec.grant_for("mail.read")
    assert send is not None and send.scope is ToolScope.write
    assert read is not None and read.name == "mail.*"
    assert spec.grant_for("calendar.create") is None


def test_specs_are_immutable() -> None:
    spec = AgentSpec.model_validate(minimal())

    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


def test_validate_spec_on_a_plain_mapping_reports_paths_without_lines() -> None:
    doc = minimal(name="Bad Name", tools=[{"name": "mail.read", "scope": "admin"}])

    with pytest.raises(SpecError) as info:
        validate_spec(doc)

    found = [(i.path, i.line) for i in info.value.issues]
    assert found == [("name", None), ("tools[0].scope", None)]
