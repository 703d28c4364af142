"""The integrity engine on the platform's own store: a gamer is found, recorded, audited once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from meshclaw.accounts.service import Caller
from meshclaw.cli.main import app
from meshclaw.clock import utcnow
from meshclaw.config import Settings
from meshclaw.errors import PermissionDenied
from meshclaw.ids import new_id
from meshclaw.integrity.live import scan_org
from meshclaw.integrity.models import IntegrityFinding
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AgentVersion, AuditEvent, Run
from meshclaw.workers.celery_app import celery_config
from meshclaw.workers.inprocess import InProcessWorker
from tests.conftest import World, agent_yaml, store_url_of

NOW = utcnow().replace(microsecond=0) - timedelta(hours=1)
"""The runs are in the three weeks before this, so a scan "now" covers them too."""
SUBJECTS = (
    "billing", "checkout", "search", "ledger", "mobile", "gateway", "pipeline", "reports",
    "invoices", "alerts", "onboarding", "pricing", "refunds", "capacity", "tracing",
)  # fmt: skip
VERBS = ("fix the flaky test in", "review the pull request for", "write the design note on",
         "plan the migration of", "draft release notes for", "investigate latency in")  # fmt: skip


def _runs(world: World, person: Caller, tasks: list[str], agent: str, version: str) -> None:
    """Ended runs of ``person`` spread over the last three weeks, one every ~1.4 days."""
    rows = []
    for i, task in enumerate(tasks):
        start = NOW - timedelta(days=20) + timedelta(hours=34 * i + 3)
        rows.append(
            Run(
                id=new_id("run"), org_id=person.org_id, team_id=person.team_id,
                user_id=person.user_id, agent_id=agent, agent_version_id=version,
                agent_version=1, trigger="manual", input=task, status="succeeded",
                created_at=start, started_at=start, ended_at=start + timedelta(minutes=2),
            )
        )  # fmt: skip
    with world.platform.db.session() as session:
        session.add_all(rows)


def gaming_world(make_world: Callable[..., World]) -> tuple[World, list[Caller]]:
    """Alice runs one task over and over to no effect; five peers each do varied work."""
    world = make_world()
    accounts = world.platform.accounts
    agent = world.save_agent(agent_yaml())
    with world.platform.db.session() as session:
        version = session.scalars(
            select(AgentVersion.id).where(AgentVersion.agent_id == agent)
        ).one()
    peers = [world.bob]
    for name in ("carol", "dave", "erin", "frank"):
        user = accounts.create_user(world.alice.org_id, name, team_id=world.alice.team_id)
        peers.append(accounts.caller_for(user))
    fillers = ("", " please", " again", " now", " for me", " quickly")
    gamer = [f"summarise the weekly status report{fillers[i % 6]}" for i in range(15)]
    _runs(world, world.alice, gamer, agent, version)
    for n, peer in enumerate(peers):
        tasks = [f"{VERBS[(i + n) % 6]} {SUBJECTS[(3 * i + n) % 15]} {n}-{i}" for i in range(8)]
        _runs(world, peer, tasks, agent, version)
    return world, peers


def _findings(world: World) -> list[IntegrityFinding]:
    with world.platform.db.session() as session:
        return list(session.scalars(select(IntegrityFinding)))


def test_a_live_scan_finds_the_gamer_only_records_and_audits_it_once(
    make_world: Callable[..., World],
) -> None:
    world, peers = gaming_world(make_world)
    org = world.alice.org_id
    first = scan_org(world.platform, org, now=NOW)
    assert first.people == 6 and first.flagged == [world.alice.user_id]
    assert first.recorded.opened >= 1 and first.recorded.updated == 0
    found = _findings(world)
    assert {f.subject for f in found} == {world.alice.user_id}
    assert "repeated_tasks" in {f.detector for f in found}
    assert all(f.status == "open" and f.source == "live-scan" for f in found)
    with world.platform.db.session() as session:
        opened = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "integrity.finding.open")
        ).all()
    assert sorted(e.resource for e in opened) == sorted(f"finding:{f.id}" for f in found)
    assert all(e.actor_user_id is None and e.org_id == org for e in opened)  # the platform
    assert all(e.details["subject"] == world.alice.user_id for e in opened)

    again = scan_org(world.platform, org, now=NOW)  # nothing new: refreshed, not duplicated
    assert (again.recorded.opened, again.recorded.updated) == (0, first.recorded.opened)
    assert len(_findings(world)) == len(found)
    # A reviewer sees them in the queue; the gamer's peers have none.
    auditor = world.admin
    assert {f.subject for f in world.platform.findings.queue(auditor)} == {world.alice.user_id}
    assert world.platform.findings.queue(peers[0]) == []


def test_a_dismissed_pattern_is_not_raised_again_by_the_next_live_scan(
    make_world: Callable[..., World],
) -> None:
    world, _ = gaming_world(make_world)
    platform = world.platform
    (done,) = platform.scan_integrity(world.alice.org_id)
    for finding in _findings(world):
        platform.findings.move(world.admin, finding.id, "dismiss", reason="a scheduled job")
    (later,) = platform.scan_integrity(world.alice.org_id)
    assert later.recorded.opened == 0 and later.recorded.suppressed == done.recorded.opened


def test_a_window_without_runs_scans_nobody_and_every_org_is_scanned(
    make_world: Callable[..., World],
) -> None:
    world, _ = gaming_world(make_world)
    platform = world.platform
    other = platform.accounts.create_org("globex")
    quiet = scan_org(platform, world.alice.org_id, now=NOW - timedelta(weeks=8))
    assert (quiet.events, quiet.people, quiet.flagged) == (0, 0, [])
    scans = {s.org_id: s for s in platform.scan_integrity()}
    assert set(scans) == {world.alice.org_id, other.id}
    assert scans[other.id].events == 0
    with pytest.raises(ValueError, match="weeks"):
        scan_org(platform, other.id, weeks=0)


def test_only_reviewers_may_scan_their_org_by_hand(make_world: Callable[..., World]) -> None:
    world, _ = gaming_world(make_world)
    with pytest.raises(PermissionDenied):
        world.platform.scan_integrity(caller=world.alice)
    (done,) = world.platform.scan_integrity(caller=world.admin)
    assert done.org_id == world.admin.org_id and done.flagged == [world.alice.user_id]


def test_the_schedule_follows_the_setting_and_zero_turns_it_off(
    make_world: Callable[..., World],
) -> None:
    daily = celery_config(Settings(broker_url="redis://x"))["beat_schedule"]
    assert daily["meshclaw-integrity-scan"]["task"] == "meshclaw.integrity_scan"
    assert daily["meshclaw-integrity-scan"]["schedule"] == 24 * 3600
    hourly = celery_config(Settings(broker_url="redis://x", integrity_scan_hours=1))
    assert hourly["beat_schedule"]["meshclaw-integrity-scan"]["schedule"] == 3600
    off = celery_config(Settings(broker_url="redis://x", integrity_scan_hours=0))
    assert "meshclaw-integrity-scan" not in off["beat_schedule"]

    platform = make_world().platform
    jobs = {name: s for s, name, _ in InProcessWorker(platform, cron=True)._housekeeping()}
    assert jobs["integrity scan"] == 24 * 3600
    platform.settings = platform.settings.model_copy(update={"integrity_scan_hours": 0})
    jobs = {name: s for s, name, _ in InProcessWorker(platform, cron=True)._housekeeping()}
    assert jobs["integrity scan"] == 0  # ``_serve`` starts no loop for a 0 interval


def test_scan_live_through_the_cli(
    make_world: Callable[..., World], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, _ = gaming_world(make_world)  # the store under tmp_path/var, as the CLI's
    accounts = world.platform.accounts
    auditor = accounts.issue_token(world.admin.user_id, "cli")
    alice = accounts.issue_token(world.alice.user_id, "cli")
    monkeypatch.chdir(tmp_path)
    env = {
        "MESHCLAW_HOME": str(tmp_path / "var"), "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": store_url_of(tmp_path), "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": None,
    }  # fmt: skip
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.stdout, result.stderr

    code, _, err = run("integrity", "scan-live", "--json", "--token", alice)
    assert code == 2 and "auditors" in err
    code, _, err = run("integrity", "scan-live", "--weeks", "0", "--token", auditor)
    assert code == 2 and "--weeks" in err
    code, out, _ = run("integrity", "scan-live", "--json", "--token", auditor)
    assert code == 0
    summary = json.loads(out)
    assert summary["org"] == world.alice.org_id and summary["people"] == 6
    assert summary["flagged"] == [world.alice.user_id] and summary["opened"] >= 1
    assert summary["opened"] == len(_findings(world))
    code, out, _ = run("integrity", "scan-live", "--weeks", "3", "--token", auditor)
    assert code == 0 and "1 flagged" in out and "0 opened" in out  # refreshed, not duplicated


# ---- prompts: padded_prompts on runs made by the runtime ----------------------------

PADDING = (
    "You are a helpful, thorough and careful assistant. Always think step by step and "
    "double check every answer. Be complete and precise. Consider every angle.\n"
) * 6
DETAILED = (
    "You triage the payments team's incoming queue. Read each new ticket, decide whether "
    "it is a billing dispute, a failed payout, a card decline or a refund request, and "
    "label it so. Disputes over 500 euros go to Maria in finance; payouts that failed "
    "because a bank rejected the IBAN need the merchant's corrected details before anyone "
    "retries. Card declines with code 51 are insufficient funds and need no action beyond "
    "a polite reply; codes 05 and 14 point to fraud rules, so link the risk dashboard. "
    "Refunds older than ninety days require a manager's approval. Quote the ledger entry "
    "when you cite an amount, never round currency, and write replies in the customer's "
    "language when the ticket shows one. When a merchant writes twice about one payout, "
    "merge the tickets and keep the older number. Chargebacks arrive from the acquirer as "
    "PDF letters; attach them, note the reason code and the deadline, and tell the merchant "
    "which evidence wins: delivery proof for goods, login records for digital services, "
    "signed contracts for subscriptions. Weekend tickets wait until Monday unless a "
    "merchant's whole settlement is blocked, in which case page the on-call engineer "
    "through the incident channel with the merchant id and the failing batch. Summarise "
    "each day's queue at five o'clock: counts per category, the oldest open item, and "
    "anything that breached its service level."
)
"""Long, honest instructions (225 words, 0.76 distinct per word): real material."""


def _runtime_runs(world: World, person: Caller, instructions: str, tasks: list[str]) -> list[str]:
    """``person``'s own agent with ``instructions``, run to its end once per task."""
    yaml_text = agent_yaml(f"helper-{person.handle}").replace(
        "owner: alice", f"owner: {person.handle}"
    )
    yaml_text = yaml_text.replace(
        "instructions: You help.", f"instructions: {json.dumps(instructions)}"
    )
    agent = world.save_agent(yaml_text, person)
    runs = world.platform.runs
    ids = []
    for task in tasks:
        info = runs.create(person, agent, task)
        assert runs.claim(info.id)
        asyncio.run(world.execute(info.id))
        assert runs.get(person, info.id).status == "succeeded"
        ids.append(info.id)
    return ids


def test_a_live_scan_finds_padded_prompts_and_not_long_honest_ones(
    scripted: Callable[[dict[str, Any]], ScriptedServer], make_world: Callable[..., World]
) -> None:
    model = scripted({"turns": [{"reply": {"content": "done"}}]})
    world = make_world(model.base_url)
    accounts, org = world.platform.accounts, world.alice.org_id
    team = [world.alice]
    for name in ("carol", "dave", "erin", "frank", "gina"):
        team.append(
            accounts.caller_for(accounts.create_user(org, name, team_id=world.alice.team_id))
        )
    alice, gina, plain = team[0], team[-1], team[1:-1]
    tasks = [f"{VERBS[i % 6]} {SUBJECTS[i % 15]}" for i in range(20)]
    padded = _runtime_runs(world, alice, PADDING + "Do the task.", tasks)
    for n, person in enumerate(plain):
        _runtime_runs(world, person, "You help the team.", tasks[n : n + 6])
    _runtime_runs(world, gina, DETAILED, tasks)  # as many runs as alice: judged too

    scan = scan_org(world.platform, org, now=utcnow() + timedelta(minutes=1))

    found = [f for f in _findings(world) if f.detector == "padded_prompts"]
    assert [f.subject for f in found] == [alice.user_id], scan.flagged
    evidence = found[0].evidence
    assert evidence["calls_with_prompt"] == 20
    assert evidence["density"] < 0.7 < 0.9 < evidence["peer_median_density"]
    assert set(evidence["example_runs"]) <= set(padded)
    # Evidence is numbers and ids: no prompt text reached the finding.
    assert "thorough" not in json.dumps(evidence) and "payments" not in json.dumps(evidence)
