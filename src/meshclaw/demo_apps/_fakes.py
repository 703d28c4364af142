"""Tickets and chat for the demo: MeshClaw's GitHub and Slack protocol fakes, in-process.

The fakes keep their state in memory; the demo loads it from a JSON file under the demo
home when it starts and writes it back when it stops, so tickets and messages survive a
restart of ``make run``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from meshclaw.connectors.fakes.github import FakeIssue, GitHubFake, GitHubState
from meshclaw.connectors.fakes.slack import FakeMessage, SlackFake, SlackWorkspace
from meshclaw.demo_apps._base import PortBook, Secrets, StandIn, read_json, write_json

TICKETS_REPO = "acme/ops"
TICKETS_BOT = "meshclaw-bot"
CHAT_BOT = "U0MESHCLAW"
CHANNELS = ("general", "platform", "deploys")

SEED_TICKETS = [
    FakeIssue(
        number=1,
        title="OPS-1: build runner disk full, builds fail",
        body="Builds on runner-3 fail with 'No space left on device' since this morning.",
        user="bob",
        labels=["status:in-progress"],
        comments=[
            {
                "id": 1001,
                "body": "Cleared the old artifacts and added a nightly clean-up. "
                "Builds are green again: I confirm the fix works.",
                "user": {"login": "bob"},
                "html_url": "https://github.example/acme/ops/issues/1#issuecomment-1001",
                "created_at": "2026-01-05T09:12:00Z",
            }
        ],
    ),
    FakeIssue(
        number=2,
        title="OPS-2: VPN drops every 30 minutes",
        body="Since the client update my VPN disconnects every half hour.",
        user="erin",
    ),
]
"""The tracker on first start: OPS-1's reporter confirmed the fix (ticket-updater's work)."""


class TicketsApp:
    """The tickets stand-in: ``connectors.fakes.github`` serving the repo ``acme/ops``."""

    name = "tickets"

    def __init__(self, folder: Path, ports: PortBook, secrets: Secrets) -> None:
        self._file = folder / "tickets.json"
        self._ports = ports
        self._token = secrets.get("tickets-token")
        self.fake: GitHubFake | None = None

    def start(self) -> StandIn:
        state = GitHubState()
        state.add_token(self._token, TICKETS_BOT)
        saved = read_json(self._file)
        repos = saved.get("repos")
        if isinstance(repos, dict):
            for repo, issues in repos.items():
                state.add_repo(repo)
                state.repos[repo] = [FakeIssue(**issue) for issue in issues]
        else:
            state.add_repo(TICKETS_REPO)
            state.repos[TICKETS_REPO] = [dataclasses.replace(i) for i in SEED_TICKETS]
        # Comment ids go on from the highest one kept.
        kept = [c["id"] for issues in state.repos.values() for i in issues for c in i.comments]
        while kept and state.next_comment_id() < max(kept):
            pass
        self.fake = GitHubFake(state, port=self._ports.port(self.name)).start()
        return StandIn(
            connector=self.name,
            title="GitHub REST fake",
            address=self.fake.api_url,
            detail=f"repo {TICKETS_REPO}",
            env={
                "MESHCLAW_TICKETS_API_URL": self.fake.api_url,
                "MESHCLAW_TICKETS_REPO": TICKETS_REPO,
            },
            credential={"token": self._token},
            credential_env={"MESHCLAW_TICKETS_TOKEN": "token"},
        )

    def stop(self) -> None:
        if self.fake is None:
            return
        self.fake.stop()
        state = self.fake.state
        with state.lock:
            repos = {
                repo: [dataclasses.asdict(i) for i in issues]
                for repo, issues in state.repos.items()
            }
        write_json(self._file, {"repos": repos})
        self.fake = None


class ChatApp:
    """The chat stand-in: ``connectors.fakes.slack`` with acme's channels."""

    name = "chat"

    def __init__(self, folder: Path, ports: PortBook, secrets: Secrets) -> None:
        self._file = folder / "chat.json"
        self._ports = ports
        self._token = secrets.get("chat-token")
        self.fake: SlackFake | None = None

    def start(self) -> StandIn:
        saved = read_json(self._file).get("channels")
        workspace = SlackWorkspace(team="acme", channels=())
        workspace.add_token(self._token, CHAT_BOT)
        if isinstance(saved, list):
            for entry in saved:
                channel = workspace.add_channel(str(entry["name"]))
                channel.messages.extend(FakeMessage(**m) for m in entry.get("messages", []))
        else:
            for name in CHANNELS:
                workspace.add_channel(name)
            deploys = workspace.channel("deploys")
            assert deploys is not None
            workspace.post(deploys, "U0ALICE", "Is staging on the latest build?")
        self.fake = SlackFake(workspace, port=self._ports.port(self.name)).start()
        names = " ".join(f"#{c.name}" for c in workspace.channels.values())
        return StandIn(
            connector=self.name,
            title="Slack Web API fake",
            address=self.fake.base_url,
            detail=names,
            env={"MESHCLAW_CHAT_BASE_URL": self.fake.base_url},
            credential={"token": self._token},
            credential_env={"MESHCLAW_CHAT_TOKEN": "token"},
            targets={
                tool: {"channel": "chat"} for tool in ("post_message", "reply_in_thread", "react")
            },
        )

    def stop(self) -> None:
        if self.fake is None:
            return
        self.fake.stop()
        channels: list[dict[str, Any]] = [
            {"name": c.name, "messages": [dataclasses.asdict(m) for m in c.messages]}
            for c in self.fake.workspace.channels.values()
        ]
        write_json(self._file, {"channels": channels})
        self.fake = None
