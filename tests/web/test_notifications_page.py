"""The notifications page (``/ui/notifications``), through the real app on a temp store,
signed in like a browser: one's own notifications, the org's for admins and auditors,
status filter and paging as plain links and a GET form (no JavaScript)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World
from tests.notify.test_notification_reading import seeded

PASSWORD = "a long test password"


@dataclass
class Site:
    world: World
    auditor: Caller
    ids: dict[str, str]
    open_as: Callable[[Caller], TestClient]


def main(html: str) -> str:
    return html[html.index("<main") : html.index("</main>")]


@pytest.fixture
def site(make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    cheap_hashing(monkeypatch)
    world = make_world()
    auditor, _, ids = seeded(world)
    app = create_app(world.platform)
    clients: list[TestClient] = []

    def open_as(who: Caller) -> TestClient:
        world.platform.signin.set_password(who.user_id, PASSWORD)
        client = TestClient(app, follow_redirects=False)
        client.__enter__()
        clients.append(client)
        signed = client.post(
            "/ui/login", data={"handle": who.handle, "password": PASSWORD, "next": "/ui/"}
        )
        assert signed.status_code == 303, signed.text
        return client

    yield Site(world=world, auditor=auditor, ids=ids, open_as=open_as)
    for client in clients:
        client.__exit__(None, None, None)


def test_an_employee_sees_her_own_with_why_not_sent_and_no_org_switch(site: Site) -> None:
    alice = site.open_as(site.world.alice)
    page = alice.get("/ui/notifications")
    assert page.status_code == 200
    assert 'href="/ui/notifications" aria-current="page"' in page.text  # in the nav
    body = main(page.text)
    assert "<h1>Notifications</h1>" in body and "3 notifications" in body
    assert body.index("alice new") < body.index("both") < body.index("alice old")
    assert "bob only" not in body
    assert "Why not sent: no channel" in body
    assert 'name="scope"' not in body  # she may not read the org's
    assert alice.get("/ui/notifications", params={"scope": "org"}).status_code == 403

    sent = main(alice.get("/ui/notifications", params={"status": "sent"}).text)
    assert "1 notification" in sent and "alice old" in sent and "alice new" not in sent
    paged = main(alice.get("/ui/notifications", params={"limit": "25", "offset": "2"}).text)
    assert "alice old" in paged and "alice new" not in paged
    assert escape("/ui/notifications?scope=mine&status=all&limit=25&offset=0") in paged
    # Nonsense in the query falls back to the defaults, never a traceback.
    odd = alice.get("/ui/notifications", params={"status": "lost", "limit": "x", "offset": "-3"})
    assert odd.status_code == 200 and "3 notifications" in main(odd.text)


def test_an_auditor_switches_to_the_whole_org(site: Site) -> None:
    client = site.open_as(site.auditor)
    own = main(client.get("/ui/notifications").text)
    assert 'name="scope"' in own and "No notifications match." in own
    org = main(client.get("/ui/notifications", params={"scope": "org", "status": "failed"}).text)
    assert "1 notification" in org and "bob only" in org
    assert "Why not sent: ConnectError: chat down" in org
    assert '<th scope="col">For</th>' in org and "<td>bob</td>" in org
    everything = main(client.get("/ui/notifications", params={"scope": "org"}).text)
    assert "4 notifications" in everything and "globex" not in everything
