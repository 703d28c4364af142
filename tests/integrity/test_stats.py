"""Robust peer statistics, score combination and near-duplicate clustering."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from meshclaw.integrity import Finding, combine, peer_z
from meshclaw.integrity._stats import strength
from meshclaw.integrity.detectors.repeated_tasks import _clusters


def users(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["user", "team", "role"], orient="row")


def test_peer_z_uses_team_role_median_and_role_wide_scale() -> None:
    people = users(
        [(f"a{i}", "a", "eng") for i in range(6)] + [(f"b{i}", "b", "eng") for i in range(6)]
    )
    values = pl.DataFrame(
        {"user": [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)],
         "x": [1.0, 2, 3, 4, 5, 30, 11, 12, 13, 14, 15, 16]}
    )  # fmt: skip
    z = {r["user"]: r for r in peer_z(people, values, "x").iter_rows(named=True)}
    assert z["a5"]["peer_median"] == 3.5 and z["b0"]["peer_median"] == 13.5
    assert z["a5"]["peer_scale"] == z["b0"]["peer_scale"]  # pooled over the role
    assert z["a5"]["z"] > 10 > abs(z["b0"]["z"])


def test_small_groups_fall_back_to_role_then_org_and_floors_hold() -> None:
    people = users([("x", "tiny", "eng"), ("y", "tiny", "eng")] + [
        (f"s{i}", "s", "sales") for i in range(5)])  # fmt: skip
    values = pl.DataFrame({"user": ["x", "y"], "x": [5.0, 5.0]})
    z = {r["user"]: r for r in peer_z(people, values, "x", floor_abs=2.0).iter_rows(named=True)}
    assert z["x"]["peers"] == 7  # two engineers are too few: the whole org
    assert z["s0"]["x"] == 0.0  # missing values take the fill
    assert z["x"]["peer_scale"] == 2.0  # everyone alike: the floor, not a zero MAD
    assert z["x"]["z"] == pytest.approx(2.5)


def test_strength_and_combination() -> None:
    assert strength(4.0, 4.0) == 0.5 and strength(8.0, 4.0) == 1.0 and strength(99, 4.0) == 1.0
    f = lambda s: Finding(detector="d", user="u", strength=s, evidence={})  # noqa: E731
    assert combine([]) == 0.0
    assert combine([f(0.5)]) == 0.5
    assert combine([f(0.5), f(0.5)]) == 0.75
    assert combine([f(1.0), f(0.6)]) == 1.0


def test_clusters_follow_chains_of_near_duplicates() -> None:
    k = 16
    a = np.arange(k, dtype=np.uint32)
    b = a.copy()
    b[:5] += 100  # 11/16 equal to a
    c = b.copy()
    c[5:10] += 100  # 11/16 equal to b, 6/16 to a
    other = np.arange(1000, 1000 + k, dtype=np.uint32)
    labels = _clusters(np.stack([a, other, b, c]))
    assert labels[0] == labels[2] == labels[3] == 0
    assert labels[1] == 1
