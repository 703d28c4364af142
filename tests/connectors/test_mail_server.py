"""The built-in mail MCP server against real dovecot (IMAP) and aiosmtpd (SMTP) on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from imapclient import IMAPClient

from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.policy.authorizer import SpecGrantAuthorizer
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml
from tests.connectors.conftest import ctx, require
from tests.connectors.mailpeers import (
    ImapAccount,
    SmtpServer,
    deliver,
    dovecot_available,
    start_dovecot,
    start_smtp,
)


@pytest.fixture
def mail_peers() -> Iterator[tuple[ImapAccount, SmtpServer]]:
    require(dovecot_available(), "dovecot is not installed: apt-get install dovecot-imapd")
    with start_dovecot() as account, start_smtp(account) as smtp:
        yield account, smtp


def mail_config(account: ImapAccount, smtp: SmtpServer, via_cli: bool = False) -> ConnectorConfig:
    module = ["meshclaw.cli", "connector", "serve"] if via_cli else ["meshclaw.connectors.servers"]
    return ConnectorConfig(
        command=sys.executable,
        args=["-m", *module, "mail"],
        env={
            "MESHCLAW_MAIL_IMAP_HOST": account.host,
            "MESHCLAW_MAIL_IMAP_PORT": str(account.port),
            "MESHCLAW_MAIL_IMAP_SSL": "false",
            "MESHCLAW_MAIL_SMTP_HOST": smtp.host,
            "MESHCLAW_MAIL_SMTP_PORT": str(smtp.port),
            "MESHCLAW_MAIL_SMTP_STARTTLS": "false",
            "MESHCLAW_MAIL_SMTP_AUTH": "false",
        },
        credentials="mail",
        credential_env={
            "MESHCLAW_MAIL_USERNAME": "username",
            "MESHCLAW_MAIL_PASSWORD": "password",
        },
        approval="first_use",
        untrusted=True,
    )


def credentials(account: ImapAccount, password: str | None = None) -> MemoryCredentialStore:
    store = MemoryCredentialStore()
    store.put("mail", {"username": account.username, "password": password or account.password})
    return store


def folder_subjects(account: ImapAccount, folder: str) -> list[str]:
    client = IMAPClient(account.host, port=account.port, ssl=False, timeout=5)
    client.login(account.username, account.password)
    try:
        client.select_folder(folder, readonly=True)
        fetched = client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER]"])
        return sorted(
            str(
                email.message_from_bytes(d[b"BODY[HEADER]"], policy=email.policy.default)["Subject"]
            )
            for d in fetched.values()
        )
    finally:
        client.logout()


def test_mail_tools_read_search_move_flag_send_and_reply(
    mail_peers: tuple[ImapAccount, SmtpServer], approvals: ToolApprovals
) -> None:
    account, smtp = mail_peers
    deliver(account, sender="Carol <carol@customer.test>", subject="Invoice 42", body="Please pay.")
    deliver(account, sender="dave@outside.test", subject="Lunch?", body="Noon at the usual place.")
    conn = McpConnector(
        "mail", mail_config(account, smtp), approvals=approvals, credentials=credentials(account)
    )

    async def scenario() -> dict[str, ToolResult]:
        calls: dict[str, tuple[str, dict[str, Any]]] = {
            "list": ("list_messages", {}),
            "search": ("search", {"query": "pay"}),
            "read": ("read_message", {"uid": 1}),
            "flag": ("flag_message", {"uid": 2, "flag": "flagged"}),
            "reply": ("reply", {"uid": 1, "body": "Paid today."}),
            "move": ("move_message", {"uid": 1, "to_folder": "Archive"}),
            "send": ("send", {"to": ["bob@acme.test"], "subject": "Status", "body": "All good."}),
        }
        try:
            results = {key: await conn.call_tool(t, a, ctx(key)) for key, (t, a) in calls.items()}
            # The same run step again: the same Message-ID, so nothing is sent twice.
            results["send-again"] = await conn.call_tool(*calls["send"], ctx("send"))
            # A key that is no Message-ID as it stands (the outbox's): still one message.
            outbox = replace(ctx("note"), idempotency_key="notification:ntf_1")
            note = ("send", {"to": ["bob@acme.test"], "subject": "Note", "body": "Hi."})
            results["note"] = await conn.call_tool(*note, outbox)
            results["note-again"] = await conn.call_tool(*note, outbox)
            return results
        finally:
            await conn.aclose()

    results = asyncio.run(scenario())
    errors = {k: r.content for k, r in results.items() if r.is_error}
    assert errors == {}
    data = {k: r.data or {} for k, r in results.items()}
    listed = data["list"]["structured"]["messages"]
    assert [m["subject"] for m in listed] == ["Lunch?", "Invoice 42"]  # newest first
    assert [m["subject"] for m in data["search"]["structured"]["messages"]] == ["Invoice 42"]
    read = data["read"]["structured"]
    assert read["body"].strip() == "Please pay." and read["from"] == "Carol <carol@customer.test>"
    assert results["read"].untrusted  # mail from outside the org: the policy knows

    assert data["flag"]["evidence"]["flags"] == ["flagged"]
    reply = data["reply"]["evidence"]
    assert reply["recipients"] == ["carol@customer.test"] and reply["in_reply_to"]
    assert reply["message_id"] == "<idem_reply@acme.test>"
    assert data["move"]["evidence"]["to_folder"] == "Archive"
    sent = data["send"]["evidence"]
    assert sent == {
        "message_id": "<idem_send@acme.test>",
        "recipients": ["bob@acme.test"],
        "refused": [],
        "duplicate": False,
    }
    assert data["send-again"]["evidence"]["duplicate"] is True
    note_id = data["note"]["evidence"]["message_id"]
    assert note_id.startswith("<idem_") and data["note"]["evidence"]["duplicate"] is False
    again = data["note-again"]["evidence"]
    assert (again["message_id"], again["duplicate"]) == (note_id, True)

    # What the real servers hold now.
    assert folder_subjects(account, "INBOX") == ["Lunch?"]
    assert folder_subjects(account, "Archive") == ["Invoice 42"]
    assert folder_subjects(account, "Sent") == ["Note", "Re: Invoice 42", "Status"]
    assert [e["to"] for e in smtp.envelopes] == [
        ["carol@customer.test"],
        ["bob@acme.test"],
        ["bob@acme.test"],
    ]
    replied = email.message_from_bytes(smtp.envelopes[0]["data"], policy=email.policy.default)
    assert replied["In-Reply-To"] == reply["in_reply_to"]


def test_mail_auth_failure_is_clear_and_leaks_no_password(
    mail_peers: tuple[ImapAccount, SmtpServer], approvals: ToolApprovals
) -> None:
    account, smtp = mail_peers
    store = credentials(account, password="wrong-Secret-99")
    conn = McpConnector("mail", mail_config(account, smtp), approvals=approvals, credentials=store)

    async def scenario() -> ToolResult:
        try:
            return await conn.call_tool("list_messages", {}, ctx("l"))
        finally:
            await conn.aclose()

    result = asyncio.run(scenario())
    assert result.is_error
    assert "IMAP login to 127.0.0.1" in result.content and "failed" in result.content
    assert "wrong-Secret-99" not in result.content


def test_an_agent_triages_a_mailbox_end_to_end(
    mail_peers: tuple[ImapAccount, SmtpServer],
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    account, smtp = mail_peers
    deliver(account, sender="carol@customer.test", subject="Outage?", body="Is the API down?")
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "mail.list_messages", "arguments": {}}]}},
                {
                    "reply": {
                        "tool_calls": [
                            {
                                "name": "mail.reply",
                                "arguments": {"uid": 1, "body": "No outage; it is back up."},
                            }
                        ]
                    }
                },
                {
                    "reply": {
                        "tool_calls": [
                            {
                                "name": "mail.move_message",
                                "arguments": {"uid": 1, "to_folder": "Archive"},
                            }
                        ]
                    }
                },
                {"reply": {"content": "Answered Carol and archived her mail."}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("mail.*", "write"),), timeout=60))
    conn = McpConnector(
        "mail",
        mail_config(account, smtp, via_cli=True),  # `meshclaw connector serve mail`
        approvals=ToolApprovals(world.platform.db),
        credentials=credentials(account),
    )
    # The spec's grants decide here; how Cedar gates writes after untrusted content (the
    # mail is marked untrusted) is the policy capability's to test.
    info = world.run(
        "helper",
        "triage my inbox",
        connectors=ConnectorRegistry([conn]),
        authorizer=SpecGrantAuthorizer(),
    )
    assert info.status == "succeeded", info.error
    steps = [s for s in world.platform.runs.steps(world.alice, info.id) if s.kind == "tool"]
    assert [(s.name, s.status) for s in steps] == [
        ("mail.list_messages", "ok"),
        ("mail.reply", "ok"),
        ("mail.move_message", "ok"),
    ]
    reply_step = steps[1].response
    assert reply_step is not None
    assert reply_step["data"]["evidence"]["recipients"] == ["carol@customer.test"]
    assert reply_step["untrusted"] is True
    assert folder_subjects(account, "Archive") == ["Outage?"]
    assert [e["to"] for e in smtp.envelopes] == [["carol@customer.test"]]


def org_mail_config(
    account: ImapAccount, smtp: SmtpServer, org_domains: str | None = None
) -> ConnectorConfig:
    """The connector *not* marked untrusted as a whole: the server decides per result."""
    config = mail_config(account, smtp)
    env = dict(config.env)
    if org_domains is not None:
        env["MESHCLAW_MAIL_ORG_DOMAINS"] = org_domains
    return config.model_copy(update={"untrusted": False, "env": env})


def test_mail_from_outside_the_orgs_domains_is_untrusted(
    mail_peers: tuple[ImapAccount, SmtpServer], approvals: ToolApprovals
) -> None:
    account, smtp = mail_peers  # the mailbox is alice@acme.test: acme.test is the org's
    deliver(account, sender="Bob <bob@ACME.test>", subject="Standup", body="At ten.")
    deliver(account, sender="noreply@ci.acme.test", subject="Build green", body="All pass.")

    def calls(conn: McpConnector, *wanted: tuple[str, dict[str, Any]]) -> list[ToolResult]:
        async def scenario() -> list[ToolResult]:
            try:
                return [await conn.call_tool(t, a, ctx(f"s{i}")) for i, (t, a) in
                        enumerate(wanted)]  # fmt: skip
            finally:
                await conn.aclose()

        return asyncio.run(scenario())

    def connect(org_domains: str | None = None) -> McpConnector:
        return McpConnector("mail", org_mail_config(account, smtp, org_domains),
                            approvals=approvals, credentials=credentials(account))  # fmt: skip

    (inside,) = calls(connect(), ("list_messages", {}))
    assert not inside.is_error and inside.untrusted is False
    assert [m["outside_org"] for m in (inside.data or {})["structured"]["messages"]] == [
        False,
        False,
    ]  # fmt: skip (a subdomain of the org's domain is the org's)

    deliver(account, sender="Carol <carol@customer.test>", subject="Invoice 42", body="Pay.")
    listed, own, outside, found_own, found_outside = calls(
        connect(),
        ("list_messages", {}),
        ("read_message", {"uid": 1}),
        ("read_message", {"uid": 3}),
        ("search", {"query": "Standup"}),
        ("search", {"query": "Invoice"}),
    )
    assert listed.untrusted is True  # one message of three is from outside
    flags = {m["subject"]: m["outside_org"] for m in (listed.data or {})["structured"]["messages"]}
    assert flags == {"Standup": False, "Build green": False, "Invoice 42": True}
    assert (own.untrusted, outside.untrusted) == (False, True)
    assert (found_own.untrusted, found_outside.untrusted) == (False, True)

    # The org's domains as a setting (comma-separated, any case): the customer is trusted
    # too; an org that lists only another domain distrusts its own mailbox's domain.
    (everyone,) = calls(connect("acme.test, Customer.TEST"), ("list_messages", {}))
    assert everyone.untrusted is False
    (elsewhere,) = calls(connect("globex.test"), ("read_message", {"uid": 1}))
    assert elsewhere.untrusted is True


def test_the_org_domains_setting_is_checked() -> None:
    from pydantic import ValidationError

    from meshclaw.connectors.servers.mail import MailSettings

    base = {"imap_host": "h", "username": "bot@acme.test", "password": "p"}
    assert MailSettings(**base).trusted_domains() == ("acme.test",)
    assert MailSettings(**base | {"org_domains": " Acme.com,@acme.de ,"}).org_domains == [
        "acme.com", "acme.de",
    ]  # fmt: skip
    with pytest.raises(ValidationError, match="not a mail domain: localhost"):
        MailSettings(**base | {"org_domains": "acme.com,localhost"})
    assert MailSettings(**base | {"username": "bot"}).trusted_domains() == ()  # all untrusted
