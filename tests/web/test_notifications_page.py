"""The notifications page (``/ui/notifications``), through the real app on a temp store,
signed in like a browser: one's own notifications, the org's for admins and auditors,
status filter and paging as plain links and a GET form (no JavaScript)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World
from tests.notify.test_notification_reading import add, seeded

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


def csrf_of(client: TestClient) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/notifications").text)
    assert match, "no CSRF field on the page"
    return match.group(1)


def nav(html: str) -> str:
    return html[html.index('<nav aria-label="Main">') : html.index("</nav>")]


def test_unread_is_bold_counted_in_the_nav_and_marked_read_with_a_form(site: Site) -> None:
    alice, ids = site.open_as(site.world.alice), site.ids
    page = alice.get("/ui/notifications").text
    assert '<span class="badge">3<span class="visually-hidden"> unread</span></span>' in nav(page)
    body = main(page)
    assert '<strong><span class="visually-hidden">Unread: </span>alice new</strong>' in body
    assert "You have 3 unread notifications." in body and "Mark all read" in body
    action = f'action="/ui/notifications/{ids["alice_new"]}/read"'
    assert action in body
    form = body[body.index(action) : body.index("</form>", body.index(action))]
    csrf = csrf_of(alice)
    assert f'name="csrf" value="{csrf}"' in form and 'name="read" value="yes"' in form
    assert ">Mark read</button>" in form

    # Without the session's CSRF token nothing changes.
    forged = alice.post(f"/ui/notifications/{ids['alice_new']}/read", data={"csrf": "nope"})
    assert forged.status_code == 403
    back = "scope=mine&status=all&unread=yes&limit=25&offset=0"
    done = alice.post(f"/ui/notifications/{ids['alice_new']}/read",
                      data={"csrf": csrf, "read": "yes", "back": back})  # fmt: skip
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui/notifications?{back}&done=read"
    after = alice.get(done.headers["location"]).text
    assert "Marked read." in after
    assert '<span class="badge">2<span class="visually-hidden"> unread</span></span>' in nav(after)
    listed = main(after)  # the unread filter: alice new is read now
    assert "2 notifications" in listed and "alice new" not in listed
    shown = main(alice.get("/ui/notifications").text)
    assert "<td>alice new" in shown  # not bold any more
    assert "Unread: </span>alice new" not in shown and ">Mark unread</button>" in shown

    unmarked = alice.post(f"/ui/notifications/{ids['alice_new']}/read",
                          data={"csrf": csrf, "read": "no"})  # fmt: skip
    assert unmarked.status_code == 303 and unmarked.headers["location"].endswith("done=unread")
    assert site.world.platform.notifications.unread_count(site.world.alice) == 3

    everything = alice.post("/ui/notifications/read-all", data={"csrf": csrf, "back": back})
    assert everything.status_code == 303 and everything.headers["location"].endswith("done=all")
    cleared = alice.get("/ui/notifications").text
    assert 'class="badge"' not in nav(cleared) and "Mark all read" not in main(cleared)
    assert site.world.platform.notifications.unread_count(site.world.bob) == 2  # bob's are his


def test_the_way_back_is_rebuilt_from_known_filters_only(site: Site) -> None:
    alice, ids = site.open_as(site.world.alice), site.ids
    csrf = csrf_of(alice)
    odd = "scope=mine&limit=999&offset=-4&next=https://evil.example/&status=lost"
    done = alice.post(f"/ui/notifications/{ids['alice_new']}/read",
                      data={"csrf": csrf, "back": odd})  # fmt: skip
    assert done.headers["location"] == (
        "/ui/notifications?scope=mine&status=all&limit=50&offset=0&done=read"
    )


def test_nobody_marks_someone_elses_from_the_dashboard(site: Site) -> None:
    ids = site.ids
    for who in (site.world.bob, site.auditor, site.world.admin):
        client = site.open_as(who)
        answer = client.post(f"/ui/notifications/{ids['alice_new']}/read",
                             data={"csrf": csrf_of(client)})  # fmt: skip
        assert answer.status_code == 404 and "addressed to you" in answer.text
    assert site.world.platform.notifications.unread_count(site.world.alice) == 3


def test_an_auditor_filters_the_org_by_recipient(site: Site) -> None:
    client = site.open_as(site.auditor)
    own = main(client.get("/ui/notifications").text)
    assert '<input id="q-recipient" name="recipient"' in own and "Mark all read" not in own
    bobs = main(client.get("/ui/notifications", params={"recipient": "bob"}).text)
    assert "2 notifications" in bobs and "bob only" in bobs and "alice new" not in bobs
    assert '<option value="org" selected>' in bobs  # a recipient means the org view
    assert "not addressed to you" in bobs and "Mark read" not in bobs
    unknown = client.get("/ui/notifications", params={"scope": "org", "recipient": "zed"})
    assert unknown.status_code == 422
    body = main(unknown.text)
    assert 'aria-invalid="true"' in body and "Nobody in your org has the handle or user id" in body
    assert "correct the field marked below" in body and "<table" not in body
    # An employee who may not read the org's is refused, not told who exists.
    alice = site.open_as(site.world.alice)
    assert alice.get("/ui/notifications", params={"recipient": "zed"}).status_code == 403


def read_all_form(body: str) -> dict[str, str]:
    """The hidden fields of the page's "mark all read" form."""
    start = body.index('action="/ui/notifications/read-all"')
    form = body[start : body.index("</form>", start)]
    found = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form)
    return {name: html.unescape(value) for name, value in found}


def test_mark_all_read_leaves_what_arrived_after_the_page_was_drawn(site: Site) -> None:
    world, ids = site.world, site.ids
    alice = site.open_as(world.alice)
    drawn = main(alice.get("/ui/notifications").text)  # the page alice is looking at
    fields = read_all_form(drawn)
    assert fields["through"] == ids["alice_new"]  # the newest it showed
    assert "You have 3 unread notifications." in drawn
    arrived = add(world, world.alice.org_id, [world.alice.user_id], "arrived since", 5)

    done = alice.post("/ui/notifications/read-all", data=fields)
    assert done.status_code == 303 and done.headers["location"].endswith("done=all")
    assert world.platform.notifications.unread_count(world.alice) == 1
    after = alice.get(done.headers["location"]).text
    assert "any that arrived after the page was shown stay unread" in after
    assert '<strong><span class="visually-hidden">Unread: </span>arrived since</strong>' in after
    assert "Unread: </span>alice new" not in after
    assert read_all_form(main(after))["through"] == arrived
    assert "You have 1 unread notification." in main(after)


def test_a_filtered_page_still_bounds_mark_all_read_by_the_newest_unread(site: Site) -> None:
    world, ids = site.world, site.ids
    alice = site.open_as(world.alice)
    # Filtered or paged past the newest: the form still says 3 unread and bounds them
    # by the newest unread one of all, not by the newest this page happens to list.
    for query in ({"status": "sent"}, {"limit": "25", "offset": "1"}):
        body = main(alice.get("/ui/notifications", params=query).text)
        assert "alice old" in body and "alice new" not in body
        fields = read_all_form(body)
        assert fields["through"] == ids["alice_new"], query
        assert "You have 3 unread notifications." in body
    world.platform.notifications.mark_read(world.alice, ids["alice_new"])
    body = main(alice.get("/ui/notifications").text)
    assert read_all_form(body)["through"] == ids["both"]  # the newest still unread


def test_mark_all_read_through_someone_elses_is_not_found(site: Site) -> None:
    world, ids = site.world, site.ids
    alice = site.open_as(world.alice)
    fields = read_all_form(main(alice.get("/ui/notifications").text))
    answer = alice.post("/ui/notifications/read-all", data=fields | {"through": ids["bob"]})
    assert answer.status_code == 404 and "addressed to you" in answer.text
    assert world.platform.notifications.unread_count(world.alice) == 3
