"""Fixtures for the audit log: a world with an auditor, and bulk appends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshclaw.audit.sink import AuditRecord
from meshclaw.config import AuditSettings, Settings
from meshclaw.platform import Platform


def append_many(platform: Platform, n: int, *, batch: int = 500, org_id: str | None = None) -> None:
    """Append ``n`` varied records, ``batch`` per transaction."""
    done = 0
    while done < n:
        with platform.db.session() as session:
            for _ in range(min(batch, n - done)):
                done += 1
                platform.audit.append(
                    session,
                    AuditRecord(
                        action=("model.invoke", "tool.write", "agent.create", "run.finish")[
                            done % 4
                        ],
                        resource=f"run:r{done}",
                        outcome="ok" if done % 7 else "denied",
                        org_id=org_id,
                        actor_user_id=f"usr_{done % 13}",
                        actor_agent_id=f"agt_{done % 5}",
                        details={"n": done, "text": "é" * (done % 3), "ratio": done / 8},
                    ),
                )


class AuditWorld:
    """A platform on a temp store with org ``acme``: an auditor, an admin and an employee."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        accounts = platform.accounts
        org = accounts.create_org("acme")
        self.org_id = org.id
        self.auditor = accounts.caller_for(accounts.create_user(org.id, "dave", role="auditor"))
        self.admin = accounts.caller_for(
            accounts.create_user(org.id, "root", role="platform_admin")
        )
        self.alice = accounts.caller_for(accounts.create_user(org.id, "alice"))
        self.log = platform.audit_log


@pytest.fixture
def audit_world(tmp_path: Path, world_store: str | None) -> Iterator[Callable[..., AuditWorld]]:
    platforms: list[Platform] = []

    def build(database_url: str | None = None, **audit: Any) -> AuditWorld:
        settings = Settings(
            home=tmp_path / "var",
            database_url=database_url or world_store,
            embedded_model_server=False,
            audit=AuditSettings(**audit),
        )
        platform = Platform(settings)
        platforms.append(platform)
        return AuditWorld(platform)

    yield build
    for platform in platforms:
        platform.close()
