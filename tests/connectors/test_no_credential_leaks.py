"""A whole agent run with vault credentials, one accepted and one refused by the server, and
then a search for the secrets everywhere MeshClaw writes: its log records at DEBUG, the
process's stdout and stderr, every file under its home (the SQLite store and its WAL, the
connector error logs), the run trace, the audit log export and what the model was sent.

Issue 4: "No credential in logs, errors, audit or metering." The secrets are searched as
raw bytes, so an encrypted vault row is fine and a plaintext copy anywhere is not.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.all_models import Base
from tests.conftest import World, agent_yaml

ACCEPTED_SECRET = "leak-canary-accepted-7f3a9c"
REFUSED_SECRET = "leak-canary-refused-2b8e41"


def _connector(url: str, credentials: str) -> dict[str, Any]:
    return {
        "transport": "http",
        "url": url,
        "credentials": credentials,
        "credential_headers": {"Authorization": "Bearer {token}"},
        "approval": "first_use",
    }


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*"))
        if path.is_file() and needle in path.read_bytes()
    ]


def test_no_secret_reaches_logs_store_trace_audit_or_the_model(
    scripted: Callable[[dict[str, object]], ScriptedServer],
    make_world: Callable[..., World],
    http_fixture_server: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, at its most talkative
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "fx.echo", "arguments": {"message": "hi"}}]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    platform = world.platform
    url = http_fixture_server({"FIXTURE_TOKEN": ACCEPTED_SECRET})
    platform.vault.put("fx-cred", {"token": ACCEPTED_SECRET}, org_id=world.alice.org_id)
    platform.vault.put("bad-cred", {"token": REFUSED_SECRET}, org_id=world.alice.org_id)
    platform.connector_admin.add(world.admin, "fx", _connector(url, "fx-cred"))
    platform.connector_admin.add(world.admin, "bad", _connector(url, "bad-cred"))
    world.save_agent(agent_yaml(tools=(("fx.echo", "read"),)))
    world.save_agent(agent_yaml(name="refused", tools=(("bad.echo", "read"),)))

    run = world.run("helper")
    refused = world.run("refused")

    steps = platform.runs.steps(world.alice, run.id)
    tool_steps = {s.name: s for s in steps if s.kind == "tool"}
    assert "fx.echo" in tool_steps, (run.status, run.error, steps)
    # The accepted secret really was sent (the server answers only with it) ...
    assert (tool_steps["fx.echo"].response or {}).get("content") == "echo: hi", steps
    # ... and the refused one was too, and refused: the run says so without the secret.
    assert refused.status == "failed" and "cannot connect to MCP server 'bad'" in str(refused.error)
    steps += platform.runs.steps(world.alice, refused.id)

    accounts = platform.accounts
    auditor = accounts.create_user(world.alice.org_id, "dana", role="auditor")
    bundle = io.StringIO()
    platform.audit_log.export(accounts.caller_for(auditor), bundle)
    with platform.db.session() as session:  # every row of every table, on either engine
        tables = {t.name: session.execute(select(t)).all() for t in Base.metadata.sorted_tables}
    stored = repr(tables)
    platform.close()  # flush the store and its WAL to disk before reading the files
    out, err = capfd.readouterr()
    log_text = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
    )
    model_requests = repr(server.requests)
    trace = repr([(s.request, s.response, s.decision, s.error) for s in steps])
    trace += repr(run) + repr(refused)

    for secret in (ACCEPTED_SECRET, REFUSED_SECRET):
        assert secret not in log_text, "a log record holds a credential"
        assert secret not in out and secret not in err, "stdout/stderr holds a credential"
        assert secret not in trace, "the run trace holds a credential"
        assert secret not in stored, "a row of the store holds a credential"
        assert secret not in bundle.getvalue(), "the audit log holds a credential"
        assert secret not in model_requests, "the model was sent a credential"
        home = platform.settings.home
        assert _files_holding(home, secret.encode()) == [], "a file under home holds it"
    assert caplog.records, "nothing was logged: the search above would prove nothing"
    assert len(tables["vault_entries"]) == 2  # the secrets are in the store, encrypted
