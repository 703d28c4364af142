"""The dashboard's policy page saves the org's own policies, as ``PUT /v1/policy``."""

from __future__ import annotations

from tests.web.test_review_audit_admin import Site, main, site

__all__ = ["site"]  # the fixture used below

NO_RUNS = '@id("org.no-runs")\nforbid (principal, action == Action::"run.start", resource);\n'
BAD = NO_RUNS + '\n@id("org.bad")\npermit (principal, action == Action::"no.such", resource);\n'


def test_the_policy_page_saves_a_version_into_the_org(site: Site) -> None:
    root, platform = site.client_for("root"), site.world.platform
    page = main(root.get("/ui/admin/policies").text)
    assert "no org policies yet (version 0)" in page and 'value="save"' in page

    checked = root.post("/ui/admin/policies", {"policies": NO_RUNS, "intent": "check"})
    assert checked.status_code == 200 and "not saved" in checked.text
    assert platform.org_policies.current(site.world.admin).version == 0

    saved = root.post(
        "/ui/admin/policies",
        {"policies": NO_RUNS, "intent": "save", "version": "0", "note": "freeze"},
    )
    assert saved.status_code == 303
    assert saved.headers["location"].endswith("/admin/policies?done=policy-saved")
    page = main(root.get("/ui/admin/policies?done=policy-saved").text)
    assert "Saved: the new version applies" in page
    assert "version 1, saved by root" in page and "freeze" in page

    invalid = root.post("/ui/admin/policies", {"policies": BAD, "intent": "save", "version": "1"})
    assert invalid.status_code == 422
    body = main(invalid.text)
    assert "Nothing was saved" in body and "<strong>4 (error)</strong>" in body
    stale = root.post("/ui/admin/policies", {"policies": "", "intent": "save", "version": "0"})
    assert stale.status_code == 409 and "not 0" in stale.text
    assert platform.org_policies.current(site.world.admin).text == NO_RUNS

    # Org B's admin sees and saves org B's policies, never org A's.
    eve = site.client_for("eve")
    assert "org.no-runs" not in main(eve.get("/ui/admin/policies").text)
    assert platform.org_policies.current(site.eve).version == 0
    # An auditor may read the policies but not manage them: no page (policy.manage).
    assert (
        site.client_for("dave")
        .post("/ui/admin/policies", {"policies": "", "intent": "save"})
        .status_code
        == 403
    )
