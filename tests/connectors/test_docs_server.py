"""The built-in docs MCP server against a real WsgiDAV server on loopback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshclaw._loopback import LoopbackServer
from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolContext, ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.connectors.mcp import McpConnector
from tests.connectors.davpeers import DavShare, start_wsgidav

CTX = ToolContext(
    org_id="org_1",
    user_id="usr_1",
    agent_id="agt_1",
    run_id="run_1",
    step_id="stp_1",
    idempotency_key="idem_1",
)


@pytest.fixture
def share(tmp_path: Path) -> Iterator[DavShare]:
    with start_wsgidav(tmp_path / "dav") as dav:
        (dav.root / "runbooks").mkdir()
        (dav.root / "runbooks" / "api-outage.md").write_text("# API outage\nRestart the pods.\n")
        (dav.root / "notes.txt").write_text("Quarterly planning.\n")
        yield dav


def docs_connector(
    share: DavShare, approvals: ToolApprovals, password: str | None = None
) -> McpConnector:
    store = MemoryCredentialStore()
    store.put("dav", {"username": share.username, "password": password or share.password})
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "docs"],
        env={"MESHCLAW_DOCS_URL": share.url},
        credentials="dav",
        credential_env={"MESHCLAW_DOCS_USERNAME": "username", "MESHCLAW_DOCS_PASSWORD": "password"},
        approval="first_use",
    )
    return McpConnector("docs", config, approvals=approvals, credentials=store)


def test_docs_tools_list_read_search_and_write_with_revisions(
    share: DavShare, approvals: ToolApprovals
) -> None:
    conn = docs_connector(share, approvals)

    async def scenario() -> dict[str, ToolResult]:
        results: dict[str, ToolResult] = {}
        try:

            async def call(key: str, tool: str, **arguments: Any) -> dict[str, Any]:
                results[key] = await conn.call_tool(tool, arguments, CTX)
                return results[key].data or {}

            await call("list", "list_documents")
            read = await call("read", "read_document", path="runbooks/api-outage.md")
            await call("search", "search_documents", query="restart")
            etag = read["structured"]["etag"]
            await call("update", "write_document", path="/runbooks/api-outage.md",
                       content="# API outage\nRestart the pods, then page on-call.\n",
                       expected_etag=etag)  # fmt: skip
            await call("stale", "write_document", path="/runbooks/api-outage.md",
                       content="lost update", expected_etag=etag)  # fmt: skip
            await call("folder", "create_folder", path="/reports")
            await call("create", "write_document", path="/reports/weekly.md", content="All green.")
            await call("orphan", "write_document", path="/missing/x.md", content="x")
            await call("escape", "read_document", path="../etc/passwd")
            await call("missing", "read_document", path="runbooks/db-outage.md")
            return results
        finally:
            await conn.aclose()

    results = asyncio.run(scenario())
    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert set(failed) == {"stale", "orphan", "escape"}
    assert "changed since you read it" in failed["stale"]
    assert "create_folder first" in failed["orphan"]
    assert "may not contain '..'" in failed["escape"]

    def data(key: str) -> dict[str, Any]:
        found = results[key].data
        assert found is not None
        return found

    entries = data("list")["structured"]["entries"]
    assert [(e["path"], e["folder"]) for e in entries] == [
        ("/runbooks", True),
        ("/notes.txt", False),
    ]
    assert data("read")["structured"]["content"].startswith("# API outage")
    assert data("read")["structured"]["exists"] is True
    # A path with no document is an answer the model (and a re-check) can act on.
    assert data("missing")["structured"] == {"path": "/runbooks/db-outage.md", "exists": False}
    (hit,) = data("search")["structured"]["documents"]
    assert hit["path"] == "/runbooks/api-outage.md" and "Restart the pods" in hit["snippet"]
    update = data("update")["evidence"]
    assert update["url"] == f"{share.url}runbooks/api-outage.md" and update["created"] is False
    assert update["revision"] and update["revision"] != data("read")["structured"]["etag"]
    assert data("create")["evidence"]["created"] is True
    assert data("folder")["evidence"]["created"] is True
    assert (share.root / "runbooks" / "api-outage.md").read_text().endswith("page on-call.\n")
    assert (share.root / "reports" / "weekly.md").read_text() == "All green."


def test_docs_auth_failure_is_clear(share: DavShare, approvals: ToolApprovals) -> None:
    conn = docs_connector(share, approvals, password="Bad-Pass-3")

    async def scenario() -> ToolResult:
        try:
            return await conn.call_tool("list_documents", {}, CTX)
        finally:
            await conn.aclose()

    result = asyncio.run(scenario())
    assert result.is_error and f"WebDAV login to {share.url} failed" in result.content
    assert "Bad-Pass-3" not in result.content


async def _unavailable(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A WebDAV server in trouble: every request answers 503."""
    await send({"type": "http.response.start", "status": 503, "headers": []})
    await send({"type": "http.response.body", "body": b"maintenance"})


def _read_notes(share: DavShare, approvals: ToolApprovals) -> ToolResult:
    conn = docs_connector(share, approvals)

    async def scenario() -> ToolResult:
        try:
            return await conn.call_tool("read_document", {"path": "notes.txt"}, CTX)
        finally:
            await conn.aclose()

    return asyncio.run(scenario())


def test_a_share_that_cannot_answer_is_an_error_not_a_missing_document(
    tmp_path: Path, approvals: ToolApprovals
) -> None:
    with start_wsgidav(tmp_path / "gone") as stopped:
        pass  # its server is stopped: the port refuses connections
    with LoopbackServer(_unavailable, name="unavailable WebDAV") as server:
        failing = DavShare(url=server.url + "/", username="alice", password="x", root=tmp_path)
        unavailable = _read_notes(failing, approvals)
    refused = _read_notes(stopped, approvals)
    with start_wsgidav(tmp_path / "moved") as dav:
        (dav.root / "notes.txt").write_text("Quarterly planning.\n")
        elsewhere = DavShare(url=dav.url + "old-share/", username=dav.username,
                             password=dav.password, root=dav.root)  # fmt: skip
        wrong_url = _read_notes(elsewhere, approvals)

    assert refused.is_error and f"cannot reach WebDAV {stopped.url}" in refused.content
    assert unavailable.is_error and "GET /notes.txt answered 503" in unavailable.content
    # A share URL that names no share is not "every document deleted".
    assert wrong_url.is_error
    assert f"the share {elsewhere.url} is not there" in wrong_url.content
    assert "exists" not in refused.content + unavailable.content + wrong_url.content
