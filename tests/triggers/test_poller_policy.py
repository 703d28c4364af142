"""The trigger pollers' reads pass Cedar as ``Platform::"trigger-poller"``
(``policy.platform``): a read an org policy refuses is not made, it is kept as the
trigger's problem and audited ``trigger.refused`` with the decision, and the poller goes
on with the other triggers. Against MeshClaw's Slack Web API fake on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from meshclaw.connectors.fakes.slack import SlackFake, SlackWorkspace
from meshclaw.policy.cedar import PolicyStore
from meshclaw.policy.platform import PlatformAuthorizer
from meshclaw.spec.loader import parse_spec
from meshclaw.spec.models import ChatTrigger, MailTrigger
from meshclaw.triggers._inbound import Watcher, poll_call
from meshclaw.triggers.models import InboundWatermark
from tests.conftest import World, agent_yaml
from tests.triggers.test_chat_trigger import (
    BOT,
    TOKEN,
    audited,
    chat_runs,
    chat_world,
    poller,
)

NOT_HELP = (
    '@id("org.poller.not-help")\n'
    'forbid (principal == Platform::"trigger-poller", action == Action::"tool.argument",\n'
    '        resource in Connector::"chat")\n'
    'when { context.kind == "target" && context.value == "chat:#help" };\n'
)


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    workspace = SlackWorkspace(channels=("general", "help"))
    workspace.add_token(TOKEN, BOT)
    with SlackFake(workspace) as fake:
        yield fake


def _agent(name: str, channel: str) -> str:
    trigger = f"  - {{type: chat, channel: '{channel}'}}\n"
    yaml_text = agent_yaml(name=name, tools=(("chat.read_channel", "read"),))
    return yaml_text.replace("budget:", f"triggers:\n{trigger}budget:")


def _post(slack: SlackFake, channel_name: str, text: str) -> None:
    channel = slack.workspace.channel(channel_name)
    assert channel is not None
    slack.workspace.post(channel, "UALICE01", text)


def test_a_read_the_org_refuses_the_poller_is_not_made_audited_and_the_rest_go_on(
    make_world: Callable[..., World], slack: SlackFake
) -> None:
    world = chat_world(make_world(), slack)
    world.platform.org_policies.save(world.admin, NOT_HELP, note="keep out of #help")
    helpdesk = world.save_agent(_agent("helpdesk", "#help"))
    world.save_agent(_agent("watcher", "#general"))
    p = poller(world)
    assert p.tick() == []  # #general: notes where it stands; #help: refused
    _post(slack, "help", "my laptop is on fire")
    _post(slack, "general", "lunch at noon?")
    (run_id,) = p.tick()
    assert p.tick() == []
    (run,) = chat_runs(world)
    assert run.id == run_id and json.loads(run.input)["text"] == "lunch at noon?"

    (refused,) = audited(world, "trigger.refused")  # once: the reason did not change
    assert refused.resource == f"agent:{helpdesk}" and refused.outcome == "denied"
    reason = (
        "refused by policy: tool.argument Tool::chat.read_channel target 'chat:#help': "
        "forbidden by org.poller.not-help"
    )
    assert refused.details["reason"] == reason
    assert refused.details["decision"] == {
        "principal": 'Platform::"trigger-poller"', "action": "tool.read",
        "tool": "chat.read_channel", "decision": "deny", "policies": ["org.poller.not-help"],
        "reason": reason.removeprefix("refused by policy: "),
    }  # fmt: skip
    with world.platform.db.session() as session:
        mark = session.scalars(
            select(InboundWatermark).where(InboundWatermark.agent_id == helpdesk)
        ).one()
        assert mark.error == reason and mark.position == ""  # never read


def _watcher(trigger: ChatTrigger | MailTrigger) -> Watcher:
    spec = parse_spec(agent_yaml(tools=(("mail.read_message", "read"),)))
    return Watcher(
        agent_id="agt_1", org_id="org_1", owner=None, spec=spec, index=0, trigger=trigger,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("trigger", "tool", "targets"),
    [
        (
            ChatTrigger(type="chat", connector="chat", channel="#help"),
            "chat.read_channel",
            ("chat:#help", "chat:help"),
        ),
        (
            MailTrigger(type="mail", connector="work-mail", folder="Invoices"),
            "work-mail.list_messages",
            ("folder:Invoices",),
        ),
    ],
)
def test_a_poll_asks_for_the_read_it_makes_and_the_default_scope_allows_it(
    trigger: ChatTrigger | MailTrigger, tool: str, targets: tuple[str, ...]
) -> None:
    call = poll_call(_watcher(trigger))
    assert (call.principal, call.tool, call.kind, call.targets) == (
        "trigger-poller", tool, "read", targets,
    )  # fmt: skip
    decision = PlatformAuthorizer(PolicyStore()).decide(call).decision
    assert decision.allowed and decision.policies == ("platform.trigger-poller.read",)
