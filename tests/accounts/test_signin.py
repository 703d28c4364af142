"""Dashboard sign-in: argon2id passwords, server-side sessions, audit, org disambiguation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from meshclaw.accounts import signin as signin_module
from meshclaw.accounts.models import UserPassword, WebSession
from meshclaw.accounts.service import hash_token
from meshclaw.accounts.signin import MIN_PASSWORD_LENGTH
from meshclaw.clock import utcnow
from meshclaw.errors import AuthError, NotFoundError, UserError
from meshclaw.platform import Platform
from meshclaw.store.models import AuditEvent
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World

PASSWORD = "correct horse battery staple"
BAD_LOGIN = "unknown user or wrong password"


@pytest.fixture(autouse=True)
def _fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_hashing(monkeypatch)


def _world(make_world: Callable[..., World], database_url: str | None = None) -> World:
    world = make_world(database_url=database_url)
    world.platform.signin.set_password(world.alice.user_id, PASSWORD)
    return world


def _login_events(platform: Platform) -> list[tuple[str, str, str | None, str]]:
    with platform.db.session() as session:
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.in_(["auth.login", "auth.logout", "auth.password_set"]))
            .order_by(AuditEvent.seq)
        ).all()
        return [(r.action, r.outcome, r.actor_user_id, r.resource) for r in rows]


def _stored_hash(platform: Platform, user_id: str) -> str:
    with platform.db.session() as session:
        row = session.get(UserPassword, user_id)
        assert row is not None
        return row.password_hash


# -- passwords ----------------------------------------------------------------------------


def test_a_password_needs_the_minimum_length_and_is_stored_as_argon2id(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    signin = world.platform.signin
    with pytest.raises(UserError, match=f"at least {MIN_PASSWORD_LENGTH} characters"):
        signin.set_password(world.alice.user_id, "x" * (MIN_PASSWORD_LENGTH - 1))
    with world.platform.db.session() as session:
        assert session.get(UserPassword, world.alice.user_id) is None  # nothing half-saved
    signin.set_password(world.alice.user_id, "x" * MIN_PASSWORD_LENGTH)
    stored = _stored_hash(world.platform, world.alice.user_id)
    assert stored.startswith("$argon2id$") and "x" * MIN_PASSWORD_LENGTH not in stored
    with pytest.raises(NotFoundError):
        signin.set_password("usr_nobody", PASSWORD)


def test_login_opens_a_session_whose_secret_is_stored_only_as_a_hash(
    make_world: Callable[..., World], database_url: str
) -> None:
    world = _world(make_world, database_url)
    signin = world.platform.signin
    signed_in = signin.login("alice", PASSWORD)
    assert signed_in.caller == world.alice
    assert signed_in.expires_at > utcnow() + timedelta(hours=11)
    with world.platform.db.session() as session:
        (row,) = session.scalars(select(WebSession)).all()
        assert row.secret_hash == hash_token(signed_in.secret) != signed_in.secret
        assert (row.method, row.user_id, row.org_id) == ("password", world.alice.user_id,
                                                         world.alice.org_id)  # fmt: skip
    again = signin.authenticate(signed_in.secret)
    assert again.caller == world.alice and again.csrf_token == signed_in.csrf_token
    other = signin.login("alice", PASSWORD)
    assert other.secret != signed_in.secret and other.csrf_token != signed_in.csrf_token


def test_wrong_password_and_unknown_user_fail_alike_and_only_real_users_are_audited(
    make_world: Callable[..., World],
) -> None:
    world = _world(make_world)
    signin = world.platform.signin
    failures = []
    for handle, password in [
        ("alice", "not the password at all"),
        ("nobody", PASSWORD),  # no such user
        ("bob", PASSWORD),  # a user without a password
        ("ALICE", PASSWORD),  # handles are exact
        ("alice", ""),
    ]:
        with pytest.raises(AuthError) as caught:
            signin.login(handle, password)
        failures.append(str(caught.value))
    assert set(failures) == {BAD_LOGIN}
    signin.login("alice", PASSWORD)
    alice = world.alice.user_id
    assert _login_events(world.platform) == [
        ("auth.password_set", "ok", alice, f"user:{alice}"),
        ("auth.login", "denied", alice, f"user:{alice}"),
        ("auth.login", "denied", world.bob.user_id, f"user:{world.bob.user_id}"),
        ("auth.login", "denied", alice, f"user:{alice}"),
        ("auth.login", "ok", alice, f"user:{alice}"),
    ]
    with world.platform.db.session() as session:
        ok = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "auth.login", AuditEvent.outcome == "ok")
        ).one()
        assert ok.details["method"] == "password" and ok.details["session"].startswith("ses")
        # A failed sign-in opens nothing.
        assert len(session.scalars(select(WebSession)).all()) == 1


def test_an_old_hash_is_upgraded_on_the_next_successful_login(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signin_module, "_hasher", PasswordHasher())  # the real parameters
    world = _world(make_world)
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    with world.platform.db.session() as session:
        row = session.get(UserPassword, world.alice.user_id)
        assert row is not None
        row.password_hash = weak
    with pytest.raises(AuthError):
        world.platform.signin.login("alice", "wrong password, long enough")
    assert _stored_hash(world.platform, world.alice.user_id) == weak  # not on a failure
    world.platform.signin.login("alice", PASSWORD)
    upgraded = _stored_hash(world.platform, world.alice.user_id)
    assert upgraded != weak and not PasswordHasher().check_needs_rehash(upgraded)
    assert PasswordHasher().verify(upgraded, PASSWORD)
    world.platform.signin.login("alice", PASSWORD)  # and the new hash works


def test_a_garbled_stored_hash_refuses_the_login_instead_of_crashing(
    make_world: Callable[..., World],
) -> None:
    world = _world(make_world)
    with world.platform.db.session() as session:
        row = session.get(UserPassword, world.alice.user_id)
        assert row is not None
        row.password_hash = "not-a-phc-string"
    with pytest.raises(AuthError, match=BAD_LOGIN):
        world.platform.signin.login("alice", PASSWORD)


# -- sessions -----------------------------------------------------------------------------


def test_a_session_ends_when_it_expires(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(make_world)
    signin = world.platform.signin
    signed_in = signin.login("alice", PASSWORD)
    just_before = signed_in.expires_at - timedelta(seconds=1)
    monkeypatch.setattr(signin_module, "utcnow", lambda: just_before)
    assert signin.authenticate(signed_in.secret).caller == world.alice
    at_expiry: datetime = signed_in.expires_at
    monkeypatch.setattr(signin_module, "utcnow", lambda: at_expiry)
    with pytest.raises(AuthError, match="session has ended"):
        signin.authenticate(signed_in.secret)


def test_logout_revokes_the_session_once_and_is_audited(
    make_world: Callable[..., World], database_url: str
) -> None:
    world = _world(make_world, database_url)
    signin = world.platform.signin
    first = signin.login("alice", PASSWORD)
    second = signin.login("alice", PASSWORD)
    signin.logout(first.secret)
    with pytest.raises(AuthError, match="session has ended"):
        signin.authenticate(first.secret)
    # Only that browser is signed out.
    assert signin.authenticate(second.secret).caller == world.alice
    signin.logout(first.secret)  # again: nothing more happens
    signin.logout("never-issued")
    logouts = [e for e in _login_events(world.platform) if e[0] == "auth.logout"]
    assert logouts == [("auth.logout", "ok", world.alice.user_id, f"user:{world.alice.user_id}")]
    with pytest.raises(AuthError):
        signin.authenticate("never-issued")


def test_a_new_password_ends_every_session_of_that_person_only(
    make_world: Callable[..., World],
) -> None:
    world = _world(make_world)
    signin = world.platform.signin
    signin.set_password(world.bob.user_id, "bob's own long password")
    alice_sessions = [signin.login("alice", PASSWORD) for _ in range(2)]
    bob_session = signin.login("bob", "bob's own long password")
    signin.set_password(world.alice.user_id, "a brand new long password")
    for signed_in in alice_sessions:
        with pytest.raises(AuthError):
            signin.authenticate(signed_in.secret)
    assert signin.authenticate(bob_session.secret).caller == world.bob
    with pytest.raises(AuthError, match=BAD_LOGIN):
        signin.login("alice", PASSWORD)
    assert signin.login("alice", "a brand new long password").caller == world.alice


# -- orgs ---------------------------------------------------------------------------------


def test_a_handle_in_two_orgs_needs_the_org_name(
    make_world: Callable[..., World], database_url: str
) -> None:
    world = _world(make_world, database_url)
    accounts, signin = world.platform.accounts, world.platform.signin
    other_org = accounts.create_org("globex")
    other_alice = accounts.create_user(other_org.id, "alice", role="platform_admin")
    signin.set_password(other_alice.id, PASSWORD)
    with pytest.raises(AuthError, match=BAD_LOGIN):
        signin.login("alice", PASSWORD)  # ambiguous: refused like any failure
    assert signin.login("alice", PASSWORD, "acme").caller == world.alice
    globex = signin.login("alice", PASSWORD, "globex").caller
    assert (globex.user_id, globex.org_id, globex.role) == (other_alice.id, other_org.id,
                                                            "platform_admin")  # fmt: skip
    with pytest.raises(AuthError, match=BAD_LOGIN):
        signin.login("alice", PASSWORD, "initech")
    with pytest.raises(AuthError, match=BAD_LOGIN):
        signin.login("bob", PASSWORD, "globex")  # bob is only in acme
