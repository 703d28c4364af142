"""The price table page (``/ui/admin/prices``): a platform admin adds an effective-dated
price through a form checked field by field; it is listed (paged) and priced from its
day on; employees see the table but no form, and a forged or refused post saves nothing.
The same through ``POST /v1/prices`` (422 with each field's path)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from meshclaw.api.app import create_app
from meshclaw.metering.price_models import OrgPrice
from meshclaw.metering.prices import parse_price_table
from meshclaw.store.models import AuditEvent
from tests.web import test_review_audit_admin as review
from tests.web.test_review_audit_admin import Site, main

site = review.site  # the fixture: a platform, its people and signed-in browsers

TOMORROW = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
GOOD = {
    "provider": "openai",
    "model": "gpt-9",
    "input": "2.50",
    "output": "10",
    "cached_input": "",
    "cache_write": "",
    "effective_from": TOMORROW,
}


def saved(site: Site) -> list[OrgPrice]:
    with site.world.platform.db.session() as session:
        return list(session.scalars(select(OrgPrice)))


def added_part(page: str) -> str:
    """The list of added prices (the table above it shows what is in force)."""
    body = main(page)
    return body[body.index('id="added-heading"') :]


def test_an_admin_adds_a_price_and_bad_fields_are_shown_at_their_field(site: Site) -> None:
    root = site.client_for("root")
    page = main(root.get("/ui/admin/prices").text)
    assert "Add a price" in page and "Nobody in your org has added a price" in page

    bad = root.post(
        "/ui/admin/prices",
        GOOD | {"model": "", "input": "cheap", "output": "-2", "effective_from": "soon"},
    )
    assert bad.status_code == 422
    for field in ("model", "input", "output", "effective_from"):
        assert f'id="price-{field}-error"' in bad.text, field
    assert 'id="price-provider-error"' not in bad.text
    assert "Not a number: &#39;cheap&#39;" in bad.text and "Cannot be negative." in bad.text
    # What was typed is kept, and the field is marked invalid.
    assert re.search(
        r'<input id="price-input" [^>]*value="cheap"[^>]*aria-invalid="true"', bad.text
    )
    assert saved(site) == []

    done = root.post("/ui/admin/prices", GOOD)
    assert done.status_code == 303 and "done=price-added" in done.headers["location"]
    after = root.get(done.headers["location"]).text
    assert "Price added." in after
    listing = main(after)
    assert (
        "Prices added by your org, newest first" in listing and "(showing 1\N{EN DASH}1)" in listing
    )
    assert "<code>gpt-9</code>" in listing and "scheduled" in listing  # from tomorrow
    [row] = saved(site)
    assert (row.input, row.output, row.cached_input) == ("2.50", "10", None)
    with site.world.platform.db.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "price.add"))
    assert event.actor_user_id == site.world.admin.user_id
    # The page's download link works with the browser's session.
    assert 'href="/v1/prices/export"' in listing
    download = root.client.get("/v1/prices/export")
    assert download.status_code == 200 and "model: gpt-9" in download.text


def test_employees_see_no_form_and_cannot_add(site: Site) -> None:
    alice = site.client_for("alice")
    page = alice.get("/ui/admin/prices")
    assert page.status_code == 200 and "Add a price" not in page.text
    refused = alice.post("/ui/admin/prices", GOOD)
    assert refused.status_code == 403 and "Nothing was saved" in refused.text
    forged = site.client_for("root").client.post("/ui/admin/prices", data=GOOD | {"csrf": "x"})
    assert forged.status_code == 403
    assert saved(site) == []


def test_added_prices_are_paged_newest_first(site: Site) -> None:
    book, admin = site.world.platform.price_book, site.world.admin
    for n in range(30):
        book.add(admin, GOOD | {"model": f"model-{n}-x"})
    root = site.client_for("root")
    first = added_part(root.get("/ui/admin/prices").text)
    assert (
        "(showing 1\N{EN DASH}25)" in first and "model-29-x" in first and "model-4-x" not in first
    )
    following = re.search(r'<a href="([^"]+)">Next page</a>', first)
    assert following is not None
    second = added_part(root.get(following.group(1).replace("&amp;", "&")).text)
    assert "(showing 26\N{EN DASH}30)" in second and "Next page" not in second
    models = re.findall(r"model-(\d+)-x", first + second)
    assert sorted(map(int, models)) == list(range(30))  # each once


def test_the_api_adds_refuses_and_exports(site: Site) -> None:
    platform = site.world.platform
    root = {
        "Authorization": f"Bearer {platform.accounts.issue_token(site.world.admin.user_id, 't')}"
    }
    alice = {
        "Authorization": f"Bearer {platform.accounts.issue_token(site.world.alice.user_id, 't')}"
    }
    body = {k: v for k, v in GOOD.items() if v}
    with TestClient(create_app(platform)) as client:
        assert client.post("/v1/prices", json=body, headers=alice).status_code == 403
        bad = client.post(
            "/v1/prices", json=body | {"input": "1e999999", "model": "a b"}, headers=root
        )
        assert bad.status_code == 422
        assert {e["path"] for e in bad.json()["errors"]} == {"body.input", "body.model"}
        unknown = client.post("/v1/prices", json=body | {"tier": "gold"}, headers=root)
        assert unknown.status_code == 422
        added = client.post("/v1/prices", json=body, headers=root)
        assert added.status_code == 201, added.text
        assert added.json()["input"] == "2.50" and added.json()["effective_from"] == TOMORROW
        [entry] = client.get("/v1/prices/entries", headers=alice).json()
        assert entry["id"] == added.json()["id"]
        assert (
            client.get("/v1/prices/entries", params={"limit": 501}, headers=alice).status_code
            == 422
        )
        exported = client.get("/v1/prices/export", headers=alice)
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("application/yaml")
        table = parse_price_table(exported.text)
        assert table.version.endswith("+org1") and table.prices[0].model == "gpt-9"
        shown = client.get("/v1/prices", params={"day": TOMORROW}, headers=alice).json()
        assert {"model": "gpt-9", "status": "in force"}.items() <= next(
            p for p in shown["prices"] if p["model"] == "gpt-9"
        ).items()
