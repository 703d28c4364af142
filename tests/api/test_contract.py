"""The API keeps its contract: schemathesis against ``/openapi.json``, in process.

Every operation gets generated requests, valid and invalid, as org A's platform admin
(``seeded``): nothing may answer 5xx, every answer's status code, content type, headers
and body must be the ones the schema declares (errors are RFC 9457 problem details), and
bad input must be refused with a 4xx. Each request is sent again with its path naming
real rows of org A (agents, runs, outcomes...), so the happy paths are reached too, not
only 404s. (Who may call what, and that nobody may without a token, is
``test_authz_matrix``.) Bugs found and reported but not fixed yet are ``KNOWN_BUGS``.
"""

from __future__ import annotations

import json
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, settings
from schemathesis import Case as GenericCase
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import ignored_auth, use_after_free

from meshclaw.api.app import create_app
from meshclaw.config import Settings
from meshclaw.platform import Platform
from tests.accounts.passwords import cheap_hashing
from tests.api.seeded import Seeded, seed

pytestmark = pytest.mark.slow  # about a minute and a half for some 70 operations

Case = GenericCase[Any]

RESENDING_CHECKS: list[CheckFunction] = [ignored_auth, use_after_free]
MAX_EXAMPLES = 12
"""Generated requests per operation and phase: enough to reach each branch's shape."""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, module_store: str | None) -> Iterator[Seeded]:
    with pytest.MonkeyPatch.context() as patch:
        cheap_hashing(patch)
        world, server = seed(tmp_path_factory.mktemp("contract"), database_url=module_store)
        try:
            yield world
        finally:
            world.platform.close()
            server.stop()


def _openapi() -> dict[str, Any]:
    """The app's OpenAPI document (the data does not change it: an empty store will do)."""
    with tempfile.TemporaryDirectory() as home:
        platform = Platform(Settings(home=Path(home), embedded_model_server=False))
        try:
            document: dict[str, Any] = create_app(platform).openapi()
        finally:
            platform.close()
    return document


# Loaded when the module is: pytest needs the operations to name the tests.
schema = schemathesis.openapi.from_dict(
    _openapi(),
    config=schemathesis.Config.from_dict(
        {
            # The same requests on every run: a failure here is a finding, not flakiness.
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "phases": {
                "stateful": {"enabled": False},
                # FastAPI takes the last of a repeated parameter (see _repeats_a_scalar).
                "coverage": {"generate-duplicate-query-parameters": False},
            },
            "operations": [
                {  # an unreachable connector's server is a gateway error (declared)
                    "include-path": "/v1/connectors/{name}/tools",
                    "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "4xx", "502"]}},
                }
            ],
            "checks": {
                # Refusing a valid request for a rule the schema cannot state (a 404 for an
                # id that does not exist, a 409 for a state) is not a contract breach.
                "positive_data_acceptance": {"enabled": False},
                # A 405's `Allow` names every route's methods on the path (``api.app``), so
                # schemathesis' check that it matches the schema is on.
            },
        }
    ),
).exclude(
    # A run's live stream follows the run until it ends: checked below on a finished one.
    path="/v1/runs/{run_id}/events",
)


def _real_rows(seeded: Seeded) -> dict[str, list[str]]:
    """Path parameter -> rows of org A it may name (a name shared by routes gets them all)."""
    ids = seeded.ids
    return {
        "name": [ids["agent_id"], ids["agent"], ids["connector"]],
        "run_id": [ids["run_id"]],
        "approval_id": [ids["approval_id"]],
        "outcome_id": [ids["outcome_id"]],
        "token_id": [ids["token_id"]],
        "budget_id": [ids["budget_id"]],
        "team_id": [ids["team_id"]],
        "user_id": [ids["user_id"]],
        "user": [ids["user_id"], "alice"],
        "agent_id": [ids["agent_id"]],
        "type_name": [ids["outcome_type"]],
        "token": [ids["feedback_token"]],
        "finding_id": [ids["finding_id"]],
        "notification_id": [ids["notification_id"]],
        "org_id": [ids["org_id"]],
        "connector": [ids["connector"]],
        "txn_id": ["1"],  # a Matrix homeserver's transaction id
        "matrix_user": ["@bot:meshclaw.test"],
        "room_alias": ["ops:meshclaw.test"],  # "#" would start the URL's fragment
    }


@pytest.fixture(scope="module")
def client(seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(seeded.app, follow_redirects=False) as client:
        yield client


def _call(client: TestClient, case: Case, headers: dict[str, str]) -> httpx2.Response:
    """Send the case through Starlette's test client and validate the answer.

    Not ``case.call_and_validate()``: its transport is built on ``requests``, and
    urllib3-future (pulled in by caldav -> niquests) replaces urllib3 in this environment,
    which that transport does not survive. The checks that would send requests again
    (``ignored_auth``...) are left out: ``test_authz_matrix`` checks every route without
    credentials.
    """
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url), headers=headers)
    request: dict[str, Any] = {k: kwargs[k] for k in ("method", "url", "params", "headers")}
    cookies = kwargs.get("cookies") or {}
    if cookies:
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        request["headers"] = {**request["headers"], "Cookie": cookie}
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif isinstance(kwargs.get("data"), (bytes, str)):
        request["content"] = kwargs["data"]
    elif kwargs.get("data") is not None:
        request["data"] = kwargs["data"]
    client.cookies.clear()
    response = client.request(**request)
    case.validate_response(response, headers=headers, excluded_checks=RESENDING_CHECKS)
    return response


@dataclass(frozen=True)
class KnownBug:
    """A reported bug outside these tests' files: its requests are left out of the sweep
    and pinned by ``test_known_bug_is_still_there``. Fixed? Delete its entry."""

    operation: str
    reason: str
    hits: Callable[[Case], bool]
    request: dict[str, Any]
    """One request that shows it (method, url, json or params)."""
    expected: int
    """What the route should answer to ``request``."""


def _numeric(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


_NOT_YAML_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _control_chars(value: object) -> bool:
    """Characters YAML does not allow in a document (ruamel's reader refuses them)."""
    return isinstance(value, str) and _NOT_YAML_PRINTABLE.search(value) is not None


def _huge(case: Case, *names: str) -> bool:
    """A number past what the store's integer columns hold (32-bit on PostgreSQL)."""
    query = case.query or {}
    return any(isinstance(query.get(n), int) and query[n] > 2**31 - 1 for n in names)


HUGE = str(2**63)
OVERFLOW = "an unbounded integer query parameter reaches the database: past 64 bits it is a 500"
REGRESSIONS = (
    KnownBug(
        "POST /v1/agents",
        "spec/loader.parse_spec lets ruamel's ReaderError (a YAMLError, not a MarkedYAMLError) "
        "escape: a control character in spec_yaml is a 500",
        lambda case: isinstance(case.body, dict) and _control_chars(case.body.get("spec_yaml")),
        {"method": "POST", "url": "/v1/agents", "json": {"spec_yaml": "\x1f"}},
        422,
    ),
    KnownBug(
        "GET /v1/usage",
        "app.py reads since/until as datetime: a number is taken for seconds since 1970 "
        "(use deps.Timestamp)",
        lambda case: any(_numeric((case.query or {}).get(k)) for k in ("since", "until")),
        {"method": "GET", "url": "/v1/usage", "params": {"until": "0.5"}},
        422,
    ),
    KnownBug(
        "GET /v1/prices",
        "api/directory.py reads day as a date: a number is taken for a day since 1970 "
        "(use deps.Day)",
        lambda case: _numeric((case.query or {}).get("day")),
        {"method": "GET", "url": "/v1/prices", "params": {"day": "0"}},
        422,
    ),
    KnownBug("GET /v1/runs", f"app.py offset: {OVERFLOW}", lambda c: _huge(c, "offset"),
             {"method": "GET", "url": "/v1/runs", "params": {"offset": HUGE}}, 422),
    KnownBug("GET /v1/runs/{run_id}/steps", f"app.py after: {OVERFLOW}",
             lambda c: _huge(c, "after"),
             {"method": "GET", "url": "/v1/runs/{run_id}/steps", "params": {"after": HUGE}}, 422),
    KnownBug("GET /v1/agents/{name}/diff", f"app.py old/new: {OVERFLOW}",
             lambda c: _huge(c, "old", "new"),
             {"method": "GET", "url": "/v1/agents/{agent_id}/diff",
              "params": {"old": "1", "new": HUGE}}, 422),
    KnownBug("GET /v1/integrity/findings", f"api/integrity.py offset: {OVERFLOW}",
             lambda c: _huge(c, "offset"),
             {"method": "GET", "url": "/v1/integrity/findings", "params": {"offset": HUGE}}, 422),
    KnownBug("GET /v1/users", f"api/directory.py offset: {OVERFLOW}",
             lambda c: _huge(c, "offset"),
             {"method": "GET", "url": "/v1/users", "params": {"offset": HUGE}}, 422),
)  # fmt: skip
"""Bugs this test found, fixed since: each request must keep its expected answer."""

KNOWN_BUGS: tuple[KnownBug, ...] = ()
"""Bugs found and not fixed yet: generated cases that hit one are skipped, and
``test_known_bug_is_still_there`` fails once the bug is gone (then move it to
``REGRESSIONS``)."""


def _repeats_a_scalar(case: Case) -> bool:
    """A list (or object) for a one-value query parameter goes on the wire as the parameter
    repeated, and FastAPI (like most servers) takes the last: nothing is left to refuse."""
    arrays = {p.name for p in case.operation.query if '"array"' in json.dumps(p.definition)}
    return any(
        isinstance(v, list | dict) and k not in arrays for k, v in (case.query or {}).items()
    )


def _known_bug(case: Case) -> KnownBug | None:
    label = f"{case.method.upper()} {case.path}"
    return next((b for b in KNOWN_BUGS if b.operation == label and b.hits(case)), None)


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip
def test_every_operation_keeps_the_contract(case: Case, seeded: Seeded, client: TestClient) -> None:
    """As generated, then again with the path naming real rows (the happy paths)."""
    assume(_known_bug(case) is None and not _repeats_a_scalar(case))
    headers = seeded.headers("platform_admin")
    _call(client, case, headers)
    if not case.path_parameters:
        return
    rows = _real_rows(seeded)
    for name in case.path_parameters:
        options = rows.get(name)
        assert options, f"no real row for path parameter {name!r}: add one to _real_rows"
        case.path_parameters[name] = options[zlib.crc32(repr(case.query).encode()) % len(options)]
    _call(client, case, headers)


def _answer(bug: KnownBug, seeded: Seeded) -> int:
    request = {**bug.request, "url": bug.request["url"].format_map(seeded.ids)}
    with TestClient(seeded.app, raise_server_exceptions=False) as client:
        response = client.request(**request, headers=seeded.headers("platform_admin"))
    return response.status_code


@pytest.mark.parametrize("bug", KNOWN_BUGS, ids=[b.operation for b in KNOWN_BUGS])
@pytest.mark.xfail(strict=True, raises=AssertionError)
def test_known_bug_is_still_there(bug: KnownBug, seeded: Seeded) -> None:
    assert _answer(bug, seeded) == bug.expected, bug.reason


@pytest.mark.parametrize("bug", REGRESSIONS, ids=[b.operation for b in REGRESSIONS])
def test_fixed_bug_stays_fixed(bug: KnownBug, seeded: Seeded) -> None:
    assert _answer(bug, seeded) == bug.expected, bug.reason


def test_a_finished_runs_event_stream_keeps_the_contract(
    seeded: Seeded, client: TestClient
) -> None:
    """A finished run's stream ends at once: checked here with the same checks."""
    operation = schema["/v1/runs/{run_id}/events"]["GET"]
    case = operation.Case(path_parameters={"run_id": seeded.ids["run_id"]})
    response = _call(client, case, seeded.headers("platform_admin"))
    assert response.status_code == 200
    assert "event: end" in response.text
