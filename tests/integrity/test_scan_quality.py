"""End to end on simulated orgs the detectors were not tuned on (seeds 1-3 were used)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from meshclaw.events import write_events
from meshclaw.events.simulate import GAMING_KINDS, SimConfig, SimulatedOrg, simulate
from meshclaw.integrity import scan_file


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4242])
def test_recall_and_false_positives_on_a_held_out_org(tmp_path: Path, seed: int) -> None:
    config = SimConfig(seed=seed, users=160, weeks=4)
    org = SimulatedOrg()
    path = tmp_path / "org.jsonl"
    write_events(path, simulate(config, org))
    result = scan_file(path)
    assert result.report.skipped == 0
    assert {u.user for u in result.users} == set(org.labels)
    flagged = set(result.flagged)
    gamers = {u for u, k in org.labels.items() if k in GAMING_KINDS}
    honest = set(org.labels) - gamers
    recall = len(flagged & gamers) / len(gamers)
    false_positive_rate = len(flagged & honest) / len(honest)
    missed = Counter(org.labels[u] for u in gamers - flagged)
    assert recall >= 0.9, missed
    assert false_positive_rate <= 0.02, sorted(flagged & honest)
    # The honest heavy users in particular.
    heavy = {u for u in honest if org.labels[u] != "normal"}
    assert len(flagged & heavy) <= 1
