"""The labelled org simulator: valid format v1, deterministic, every kind present."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import meshclaw
from meshclaw.events import load_frame, write_events
from meshclaw.events.simulate import (
    GAMING_KINDS,
    HONEST_KINDS,
    SimConfig,
    SimulatedOrg,
    labels_document,
    simulate,
)

SHARED_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "event-format-v1.schema.json"
"""The interchange schema in the shared folder beside the checkout (present in CI)."""
SCHEMA = Path(meshclaw.__file__).parent / "data" / "event-format-v1.schema.json"
"""The copy shipped in the package, so a checkout alone can validate."""
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
SMALL = SimConfig(seed=11, users=90, weeks=2)


@pytest.fixture(scope="module")
def small() -> tuple[list[dict[str, Any]], SimulatedOrg]:
    org = SimulatedOrg()
    return list(simulate(SMALL, org)), org


def test_the_shipped_schema_is_the_shared_one() -> None:
    if not SHARED_SCHEMA.exists():
        pytest.skip(f"no shared folder beside the checkout ({SHARED_SCHEMA})")
    assert json.loads(SCHEMA.read_text()) == json.loads(SHARED_SCHEMA.read_text())


def test_every_event_validates_against_the_shared_schema(
    small: tuple[list[dict[str, Any]], SimulatedOrg],
) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    events, org = small
    kinds: Counter[str] = Counter()
    ids: set[str] = set()
    per_kind: Counter[str] = Counter()
    for n, event in enumerate(events):
        per_kind[event["kind"]] += 1
        # Full schema validation is slow (~1 ms): every 7th event and each kind's first 300.
        if n % 7 == 0 or per_kind[event["kind"]] <= 300:
            errors = list(validator.iter_errors(event))
            assert errors == [], (event, errors[0].message)
        assert RFC3339.match(event["ts"])
        assert event["id"] not in ids
        ids.add(event["id"])
        kinds[event["kind"]] += 1
    assert set(kinds) == {"run", "llm_call", "tool_call", "outcome", "feedback"}
    assert org.events == sum(kinds.values()) > 10_000


def test_labels_cover_everyone_and_every_kind(
    small: tuple[list[dict[str, Any]], SimulatedOrg],
) -> None:
    events, org = small
    users = {e["user"] for e in events}
    assert set(org.labels) == users
    assert set(org.labels.values()) >= set(GAMING_KINDS)
    assert set(org.labels.values()) >= set(HONEST_KINDS)
    assert all(len(ring) >= 3 for ring in org.rings)
    doc = labels_document(SMALL, org)
    assert doc["labels"] == org.labels and doc["seed"] == 11


def test_same_seed_same_bytes_other_seed_other_org(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    config = SimConfig(seed=5, users=40, weeks=1)
    write_events(a, simulate(config))
    write_events(b, simulate(config))
    write_events(c, simulate(SimConfig(seed=6, users=40, weeks=1)))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    frame, report = load_frame(a)
    assert report.skipped == 0 and frame.height == report.events


def test_gamers_work_at_a_subtle_intensity(
    small: tuple[list[dict[str, Any]], SimulatedOrg],
) -> None:
    events, org = small
    runs: Counter[str] = Counter(e["user"] for e in events if e["kind"] == "run")
    normal = sorted(runs[u] for u, k in org.labels.items() if k == "normal")
    median = normal[len(normal) // 2]
    # Volume alone must not give gamers away: most run at most ~3.5x a typical person.
    gamers = [runs[u] / median for u, k in org.labels.items() if k in GAMING_KINDS]
    assert sorted(gamers)[len(gamers) // 2] <= 3.5
