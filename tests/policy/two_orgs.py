"""Two orgs side by side: acme (the make_world org, the oldest) and globex, whose platform
admin mallory tries to reach acme's credentials (vault and connector tests share it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from meshclaw.accounts.service import Caller
from meshclaw.policy.vault import KEY_ENV
from tests.conftest import World


@dataclass
class TwoOrgs:
    world: World
    """Org ``acme`` (the oldest): alice, bob, root (its platform admin)."""
    mallory: Caller
    """Org ``globex``'s platform admin."""

    @property
    def acme(self) -> str:
        return self.world.alice.org_id

    @property
    def globex(self) -> str:
        return self.mallory.org_id


def two_orgs(make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> TwoOrgs:
    """A world with a second org; the vault key comes from the world's key file, not env."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    world = make_world()
    accounts = world.platform.accounts
    globex = accounts.create_org("globex")
    mallory = accounts.caller_for(accounts.create_user(globex.id, "mallory", role="platform_admin"))
    return TwoOrgs(world=world, mallory=mallory)
