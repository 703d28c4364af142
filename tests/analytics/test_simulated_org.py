"""The analytics on a simulated org: cached and uncached agree, and an independent
event-by-event implementation of the rules (the benchmark's baseline) gives the same scores."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from benchmarks.analytics_bench import baseline_scores

from meshclaw.analytics import build_report, compute_credit, leaderboard, load_history
from meshclaw.events import write_events
from meshclaw.events.simulate import SimConfig, SimulatedOrg, simulate


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulatedOrg]:
    path = tmp_path_factory.mktemp("sim") / "org.jsonl"
    org = SimulatedOrg()
    write_events(
        path, itertools.islice(simulate(SimConfig(seed=3, users=60, weeks=2), org), 40_000)
    )
    return path, org


def test_cached_uncached_and_baseline_agree(sim: tuple[Path, SimulatedOrg], tmp_path: Path) -> None:
    path, _ = sim
    plain = load_history(path, use_cache=False)
    cold = load_history(path, cache_dir=tmp_path)
    warm = load_history(path, cache_dir=tmp_path)
    assert warm.cached and not cold.cached
    boards = [
        {e.id: e.score for e in leaderboard(compute_credit(h.tables)).entries}
        for h in (plain, cold, warm)
    ]
    assert boards[0] == boards[1] == boards[2]
    assert boards[0] == baseline_scores(path)
    assert len(boards[0]) > 20


def test_report_on_a_simulated_org(sim: tuple[Path, SimulatedOrg], tmp_path: Path) -> None:
    path, org = sim
    history = load_history(path, cache_dir=tmp_path)
    report = build_report(history.tables, compute_credit(history.tables), history.report)
    totals = report.totals
    assert 0 < totals["people"] <= len(org.labels)
    assert 0 < totals["acceptance_rate"] < 1 and 0 < totals["durability_rate"] < 1
    assert totals["credited"] <= totals["durable"] <= totals["accepted"] <= totals["eligible"]
    assert sum(t["credited"] for t in report.teams) == totals["credited"]
    assert all(0 <= (w["adoption_rate"] or 0) <= 1 for w in report.weeks)
