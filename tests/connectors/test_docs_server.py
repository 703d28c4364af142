"""The built-in docs MCP server against a real WsgiDAV server on loopback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
