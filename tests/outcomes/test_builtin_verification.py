"""The default ``deploy``, ``doc_published`` and ``pr_merged`` outcome types against the
built-in servers.

A pipeline run started with ``deploy.trigger_pipeline`` (real git, the tests' pipeline
service on loopback) is verified by reading it back with ``deploy.pipeline_status``; a
document written with ``docs.write_document`` (a real WsgiDAV share) by reading it back
with ``docs.read_document``; a pull request merged with ``tickets.merge_pull_request``
(the GitHub fake) by reading it back with ``tickets.get_pull_request``. The durability
re-checks read the same servers again.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshclaw.clock import utcnow
from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolContext, ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.connectors.fakes.github import GitHubFake, GitHubState
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.outcomes import DEFAULT_TYPES, ToolReadLookup
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml
from tests.connectors.conftest import require
from tests.connectors.davpeers import DavShare, start_wsgidav
from tests.connectors.pipeline_service import PipelineService, git, seeded_repo

TOKEN = "ci-Token-1"


def test_the_default_types_name_the_built_in_tools_and_keep_third_party_ones() -> None:
    deploy, doc = DEFAULT_TYPES["deploy"], DEFAULT_TYPES["doc_published"]

    assert deploy.tools == ("deploy.trigger_pipeline", "deploy.run")
    assert (deploy.verify_tool, deploy.verify_argument) == ("deploy.pipeline_status", "pipeline_id")
    assert doc.tools == ("docs.write_document", "files.publish")
    assert (doc.verify_tool, doc.verify_argument) == ("docs.read_document", "path")


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    require(shutil.which("git") is not None, "git is not installed")
    return seeded_repo(tmp_path, "app.git", "VERSION", "1.0.0\n", "1.0.0")


@pytest.fixture
def pipeline(origin: Path) -> Iterator[PipelineService]:
    service = PipelineService(repo=origin, token=TOKEN).start()
    yield service
    service.stop()


@pytest.fixture
def share(tmp_path: Path) -> Iterator[DavShare]:
    with start_wsgidav(tmp_path / "dav") as dav:
        (dav.root / "handbook").mkdir()
        yield dav


def deploy_connector(origin: Path, pipeline: PipelineService, world: World) -> McpConnector:
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "deploy"],
        env={"MESHCLAW_DEPLOY_REPO": str(origin), "MESHCLAW_DEPLOY_PIPELINE_URL": pipeline.url},
        credentials="ci",
        credential_env={"MESHCLAW_DEPLOY_PIPELINE_TOKEN": "token"},
        approval="first_use",
    )
    store = MemoryCredentialStore({"ci": {"default": {"token": TOKEN}}})
    return McpConnector(
        "deploy", config, approvals=ToolApprovals(world.platform.db), credentials=store
    )


def docs_connector(share: DavShare, world: World) -> McpConnector:
    store = MemoryCredentialStore()
    store.put("dav", {"username": share.username, "password": share.password})
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "docs"],
        env={"MESHCLAW_DOCS_URL": share.url},
        credentials="dav",
        credential_env={"MESHCLAW_DOCS_USERNAME": "username", "MESHCLAW_DOCS_PASSWORD": "password"},
        approval="first_use",
    )
    return McpConnector(
        "docs", config, approvals=ToolApprovals(world.platform.db), credentials=store
    )


def recheck_with(world: World, connector: McpConnector, run_id: str, hours: int) -> Any:
    """Run the durability re-checks due in ``hours``, reading through ``connector``."""
    ctx = ToolContext(org_id=world.alice.org_id, user_id=world.alice.user_id,
                      agent_id="agt", run_id=run_id, step_id="recheck",
                      idempotency_key="recheck")  # fmt: skip
    prefix = f"{connector.name}."

    async def read(tool: str, arguments: dict[str, Any]) -> ToolResult:
        return await connector.call_tool(tool.removeprefix(prefix), arguments, ctx)

    async def recheck() -> Any:
        try:
            return await world.platform.outcomes.recheck_due(now=utcnow() + timedelta(hours=hours))
        finally:
            await connector.aclose()

    world.platform.outcomes.lookup = ToolReadLookup(read)
    return asyncio.run(recheck())


def deploying_world(
    origin: Path,
    pipeline: PipelineService,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> tuple[World, ConnectorRegistry]:
    """A world whose agent triggers the pipeline once and claims a ``deploy`` outcome."""
    model = scripted({"turns": [
        {"reply": {"tool_calls": [{"name": "deploy.trigger_pipeline", "arguments": {}}]}},
        {"reply": {"content": "deployed"}},
    ]})  # fmt: skip
    world = make_world(model.base_url)
    spec = agent_yaml(
        tools=(("deploy.trigger_pipeline", "write"), ("deploy.pipeline_status", "read")),
        timeout=120,
    )
    world.save_agent(spec + "outcomes:\n  - {type: deploy}\n")
    connectors = ConnectorRegistry([deploy_connector(origin, pipeline, world)])
    return world, connectors


def test_a_pipeline_run_is_verified_by_its_status_and_undone_when_it_fails(
    origin: Path,
    pipeline: PipelineService,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    world, connectors = deploying_world(origin, pipeline, scripted, make_world)
    info = world.run("helper", connectors=connectors)
    assert info.status == "succeeded", info.error

    [outcome] = world.platform.outcomes.list_outcomes(world.alice)
    head = git(origin, "rev-parse", "main")
    assert (outcome.type, outcome.tool, outcome.ref, outcome.verified) == (
        "deploy", "deploy.trigger_pipeline", "1", True,
    )  # fmt: skip
    assert outcome.verification == {"checked": f"pipeline run 1 succeeded for {head}"}
    steps = [s for s in world.platform.runs.steps(world.alice, info.id) if s.kind == "tool"]
    reads = [s.request for s in steps if s.name == "deploy.pipeline_status"]
    assert [r["arguments"] for r in reads if r] == [{"pipeline_id": "1"}]

    pipeline.runs[0]["status"] = "failed"  # the run is marked failed after the fact
    summary = recheck_with(world, deploy_connector(origin, pipeline, world), info.id, 25)
    assert (summary.checked, summary.undone) == (1, 1)
    after = world.platform.outcomes.get(world.alice, outcome.id)
    assert after.state == "undone" and after.feedback[-1].verdict == "rolled_back"


def test_a_deploy_rolled_back_after_the_fact_loses_its_credit_at_the_recheck(
    origin: Path,
    pipeline: PipelineService,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    world, connectors = deploying_world(origin, pipeline, scripted, make_world)
    assert world.run("helper", connectors=connectors).status == "succeeded"
    [outcome] = world.platform.outcomes.list_outcomes(world.alice)
    assert outcome.verified

    # Someone rolls the deploy back later (its pipeline run itself still says success).
    rollback = deploy_connector(origin, pipeline, world)
    ctx = ToolContext(org_id=world.alice.org_id, user_id=world.bob.user_id, agent_id="agt",
                      run_id="run_x", step_id="s", idempotency_key="run_x:1")  # fmt: skip

    async def roll_back() -> Any:
        try:
            return await rollback.call_tool("rollback", {}, ctx)
        finally:
            await rollback.aclose()

    rolled = asyncio.run(roll_back())
    assert not rolled.is_error, rolled.content
    assert pipeline.runs[0]["status"] == "success"
    summary = recheck_with(world, deploy_connector(origin, pipeline, world), outcome.run_id, 25)
    assert (summary.checked, summary.undone) == (1, 1)
    after = world.platform.outcomes.get(world.alice, outcome.id)
    assert after.state == "undone" and after.feedback[-1].verdict == "rolled_back"


def test_a_written_document_is_verified_by_reading_it_and_holds_at_a_later_revision(
    share: DavShare,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    write = {"path": "handbook/deploys.md", "content": "# Deploys\nAsk in #deploys.\n"}
    model = scripted({"turns": [
        {"reply": {"tool_calls": [{"name": "docs.write_document", "arguments": write}]}},
        {"reply": {"content": "published"}},
    ]})  # fmt: skip
    world = make_world(model.base_url)
    spec = agent_yaml(
        tools=(("docs.write_document", "write"), ("docs.read_document", "read")), timeout=120
    )
    world.save_agent(spec + "outcomes:\n  - {type: doc_published}\n")
    info = world.run("helper", connectors=ConnectorRegistry([docs_connector(share, world)]))
    assert info.status == "succeeded", info.error

    [outcome] = world.platform.outcomes.list_outcomes(world.alice)
    assert (outcome.type, outcome.tool, outcome.verified) == (
        "doc_published", "docs.write_document", True,
    )  # fmt: skip
    assert outcome.ref.strip("/") == "handbook/deploys.md"
    head = httpx.head(share.url.rstrip("/") + "/handbook/deploys.md",
                      auth=(share.username, share.password))  # fmt: skip
    revision = head.headers["etag"]  # the revision written, unchanged since
    assert outcome.verification == {"checked": f"{outcome.ref} is there at revision {revision}"}
    steps = [s for s in world.platform.runs.steps(world.alice, info.id) if s.kind == "tool"]
    reads = [s.request for s in steps if s.name == "docs.read_document"]
    assert [r["arguments"] for r in reads if r] == [{"path": outcome.ref}]

    # Someone improves the page: a later revision still holds the outcome.
    (share.root / "handbook" / "deploys.md").write_text("# Deploys\nAsk in #deploys first.\n")
    summary = recheck_with(world, docs_connector(share, world), info.id, 73)
    assert (summary.checked, summary.undone) == (1, 0)
    assert world.platform.outcomes.get(world.alice, outcome.id).state != "undone"


def test_the_pr_merged_type_names_the_built_in_pull_request_tools() -> None:
    merged = DEFAULT_TYPES["pr_merged"]

    assert merged.tools == ("tickets.merge_pull_request", "code.merge")
    assert (merged.verify_tool, merged.verify_argument) == ("tickets.get_pull_request", "number")


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    state = GitHubState()
    state.add_repo("acme/app")
    for login in ("alice", "bob", "carol"):
        state.add_token(f"ghp-{login}", login)
    with GitHubFake(state) as fake:
        yield fake


def tickets_connector(github: GitHubFake, world: World) -> McpConnector:
    """The tickets server on the GitHub fake, acting with alice's own token."""
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "tickets"],
        env={"MESHCLAW_TICKETS_API_URL": github.api_url, "MESHCLAW_TICKETS_REPO": "acme/app"},
        credentials="gh",
        credential_env={"MESHCLAW_TICKETS_TOKEN": "token"},
        approval="first_use",
    )
    store = MemoryCredentialStore({"gh": {"default": {"token": "ghp-alice"}}})
    return McpConnector(
        "tickets", config, approvals=ToolApprovals(world.platform.db), credentials=store
    )


def github_as(github: GitHubFake, login: str, method: str, path: str, **body: Any) -> Any:
    response = httpx.request(method, f"{github.api_url}/repos/acme/app{path}", json=body,
                             headers={"Authorization": f"Bearer ghp-{login}"})  # fmt: skip
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_a_merged_pull_request_is_credited_to_its_author_and_undone_when_reverted(
    github: GitHubFake,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    bobs = github_as(github, "bob", "POST", "/pulls", title="Fix timeout", head="fix", base="main")
    github_as(github, "carol", "POST", f"/pulls/{bobs['number']}/reviews", event="APPROVE")
    own = github_as(github, "alice", "POST", "/pulls", title="My tweak", head="tweak", base="main")

    def merge(number: int) -> dict[str, Any]:
        return {"name": "tickets.merge_pull_request", "arguments": {"number": number}}

    model = scripted({"turns": [
        {"reply": {"tool_calls": [merge(bobs["number"]), merge(own["number"])]}},
        {"reply": {"content": "merged"}},
    ]})  # fmt: skip
    world = make_world(model.base_url)
    spec = agent_yaml(
        tools=(("tickets.merge_pull_request", "write"), ("tickets.get_pull_request", "read")),
        timeout=120,
    )
    world.save_agent(spec + "outcomes:\n  - {type: pr_merged}\n")
    info = world.run("helper", connectors=ConnectorRegistry([tickets_connector(github, world)]))
    assert info.status == "succeeded", info.error

    outcomes = world.platform.outcomes
    by_ref = {o.ref: o for o in outcomes.list_outcomes(world.alice)}
    assert set(by_ref) == {"acme/app#1", "acme/app#2"}
    merged = by_ref["acme/app#1"]
    assert (merged.tool, merged.verified) == ("tickets.merge_pull_request", True)
    assert merged.beneficiaries == [world.bob.user_id, "external"]  # carol is not in acme
    assert merged.verification == {"checked": "merged; authored by bob; approved by carol"}
    pull = github.state.repos["acme/app"][0].pull_request
    assert pull is not None and (pull["merged"], pull["merged_by"]) == (True, "alice")
    mine = by_ref["acme/app#2"]
    assert not mine.verified
    assert mine.verification == {"reason": "no one but the owner wrote or approved it"}
    steps = [s for s in world.platform.runs.steps(world.alice, info.id) if s.kind == "tool"]
    reads = [s.request for s in steps if s.name == "tickets.get_pull_request"]
    assert [r["arguments"] for r in reads if r] == [{"number": 1}, {"number": 2}]
    assert outcomes.feedback(world.bob, merged.id, "accepted").state == "credited"

    # Bob reverts it with GitHub's "Revert" pull request; the re-check reads it again.
    revert = github_as(github, "bob", "POST", "/pulls", title='Revert "Fix timeout"',
                       head="revert-1-fix", base="main", body="Reverts acme/app#1")  # fmt: skip
    github_as(github, "carol", "PUT", f"/pulls/{revert['number']}/merge")
    summary = recheck_with(world, tickets_connector(github, world), info.id, 24 * 7 + 1)
    assert (summary.checked, summary.undone) == (1, 1)
    after = outcomes.get(world.alice, merged.id)
    assert after.state == "undone" and after.feedback[-1].verdict == "reverted"
