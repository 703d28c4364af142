"""Verifying a bundle with several processes finds exactly what one pass finds.

A 3,000-record bundle (a checkpoint every 500 records, a third of the records another
org's and so withheld) is exported once; each case tampers with a copy of its lines, and
the copy is verified in one pass and by two worker processes over ~16 KB byte ranges
(about 40 records each, so problems sit at range edges too). The reports must be equal
field for field, or both passes must refuse the same line with the same message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from meshclaw.audit import _parallel, bundle
from meshclaw.audit.bundle import BundleError, verify_bundle
from meshclaw.audit.canonical import Body, Header, body_hash
from meshclaw.config import AuditSettings, Settings
from meshclaw.platform import Platform
from tests.audit.conftest import AuditWorld, append_many

N = 3_000
EVERY = 500
SPAN = 16 << 10

Lines = list[str]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lines, AuditWorld]]:
    home = tmp_path_factory.mktemp("bundle")
    platform = Platform(
        Settings(
            home=home / "var",
            embedded_model_server=False,
            audit=AuditSettings(checkpoint_every=EVERY, checkpoint_seconds=0),
        )
    )
    world = AuditWorld(platform)
    other = platform.accounts.create_org("other").id
    while world.log.head()[0] < N:
        append_many(platform, 200, batch=200, org_id=world.org_id)
        append_many(platform, 100, batch=100, org_id=other)
    with (home / "bundle.jsonl").open("w", encoding="utf-8") as out:
        world.log.export(world.auditor, out)
    yield (home / "bundle.jsonl").read_text(encoding="utf-8").splitlines(), world
    platform.close()


def _record_at(lines: Lines, seq: int) -> int:
    return next(
        i
        for i, line in enumerate(lines)
        if line.startswith('{"type":"record"') and json.loads(line)["seq"] == seq
    )


def _present_at_or_after(lines: Lines, seq: int) -> int:
    i = _record_at(lines, seq)
    while '"body":"present"' not in lines[i]:
        i += 1
    return i


def _edit(lines: Lines, i: int, change: Callable[[dict[str, Any]], None]) -> None:
    obj = json.loads(lines[i])
    change(obj)
    lines[i] = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _flip(key: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        value = str(obj[key])
        obj[key] = chr(ord(value[0]) ^ 1) + value[1:]

    return change


def _rehash(obj: dict[str, Any]) -> None:
    """Alter the body and re-hash the record: only the signed roots can tell."""
    obj["details"] = {"n": -1}
    obj["body_sha256"] = body_hash(
        Body(
            actor_user_id=obj["actor_user_id"],
            actor_agent_id=obj["actor_agent_id"],
            resource=obj["resource"],
            details=obj["details"],
            salt=obj["salt"],
        )
    )
    obj["leaf_hash"] = (
        Header(
            seq=obj["seq"],
            id=obj["id"],
            ts=obj["ts"],
            org_id=obj["org_id"],
            action=obj["action"],
            outcome=obj["outcome"],
            body_sha256=obj["body_sha256"],
        )
        .leaf_hash()
        .hex()
    )


def _withheld_leaf(obj: dict[str, Any]) -> None:
    obj["leaf_hash"] = "ab" * 32


def _span_first_seq(lines: Lines, path: Path, which: int) -> int:
    """The seq of the first record of the ``which``-th byte range the workers get."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    first = next(i for i, line in enumerate(lines) if line.startswith('{"type":"record"'))
    offset = len(("\n".join(lines[:first]) + "\n").encode())
    start, _ = bundle._spans(path, offset, SPAN)[which]
    line = path.read_bytes()[start:].split(b"\n", 1)[0]
    return int(json.loads(line)["seq"])


def _case(name: str, lines: Lines, path: Path) -> bytes | None:
    """Tamper with ``lines`` (in place) as case ``name``; or return raw bytes to write."""
    if name == "untouched":
        pass
    elif name == "flip a byte mid-bundle":
        _edit(lines, _present_at_or_after(lines, 1234), _flip("resource"))
    elif name == "flip a range's first record":
        seq = _span_first_seq(lines, path, 7)
        _edit(lines, _record_at(lines, seq), _flip("leaf_hash"))
    elif name == "delete a range's first record":
        del lines[_record_at(lines, _span_first_seq(lines, path, 9))]
    elif name == "delete a few ranges":
        del lines[_record_at(lines, 1100) : _record_at(lines, 1300)]
    elif name == "swap two records":
        i = _record_at(lines, 2001)
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    elif name == "alter and re-hash":
        _edit(lines, _present_at_or_after(lines, 2222), _rehash)
    elif name == "a withheld leaf changed":
        i = _record_at(lines, 1700)
        while '"body":"withheld"' not in lines[i]:
            i += 1
        _edit(lines, i, _withheld_leaf)
    elif name == "a damaged line":
        lines[_record_at(lines, 1500)] = lines[_record_at(lines, 1500)][:-7]
    elif name == "re-hashed, then a damaged line after it":
        # The checkpoint after the re-hashed record fails before the damaged line is
        # reached: that is the finding, in either pass.
        _edit(lines, _present_at_or_after(lines, 410), _rehash)
        lines[_record_at(lines, 2600)] = "{not json"
    elif name == "a damaged line, then a bad record":
        lines[_record_at(lines, 900)] = "[1, 2]"
        _edit(lines, _present_at_or_after(lines, 950), _flip("resource"))
    elif name == "a checkpoint among the records":
        lines.insert(_record_at(lines, 2500), lines[1])
    elif name == "blank lines":
        for seq in (10, 1000, 2999):
            lines.insert(_record_at(lines, seq), "")
    elif name == "truncated":
        del lines[_record_at(lines, 1801) :]
    elif name == "cut mid-line":
        return ("\n".join(lines[: _record_at(lines, 2400)]) + "\n" + lines[-1][:50]).encode()
    elif name == "not UTF-8":
        raw = ("\n".join(lines) + "\n").encode()
        at = raw.index(b'"seq":1600,')
        return raw[:at] + b"\xff" + raw[at + 1 :]
    else:
        raise AssertionError(name)
    return None


CASES = [
    "untouched",
    "flip a byte mid-bundle",
    "flip a range's first record",
    "delete a range's first record",
    "delete a few ranges",
    "swap two records",
    "alter and re-hash",
    "a withheld leaf changed",
    "a damaged line",
    "re-hashed, then a damaged line after it",
    "a damaged line, then a bad record",
    "a checkpoint among the records",
    "blank lines",
    "truncated",
    "cut mid-line",
    "not UTF-8",
]


def _outcome(path: Path, world: AuditWorld, workers: int) -> dict[str, Any] | str:
    try:
        report = verify_bundle(path, world.log.verifier(), workers=workers, span_bytes=SPAN)
    except BundleError as exc:
        return f"refused: {exc}"
    return asdict(report)


@pytest.mark.parametrize("case", CASES)
def test_parallel_bundle_findings_equal_the_serial_ones(
    case: str, exported: tuple[Lines, AuditWorld], tmp_path: Path
) -> None:
    lines, world = list(exported[0]), exported[1]
    path = tmp_path / "bundle.jsonl"
    raw = _case(case, lines, path)
    path.write_bytes(raw if raw is not None else ("\n".join(lines) + "\n").encode())
    assert len(bundle._spans(path, 0, SPAN)) > 40  # many ranges, two workers
    serial = _outcome(path, world, 1)
    parallel = _outcome(path, world, 2)
    assert parallel == serial
    ok = isinstance(serial, dict) and serial["ok"]
    assert ok == (case in ("untouched", "blank lines")), serial
    print(f"{case}: {serial if isinstance(serial, str) else serial['problem'] or 'ok'}")


def test_big_bundles_go_parallel_small_ones_do_not(
    exported: tuple[Lines, AuditWorld], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines, world = exported
    path = tmp_path / "bundle.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    started: list[int] = []
    real = _parallel.run_jobs

    def counted(jobs: list[Any], workers: int, **kw: Any) -> Any:
        started.append(workers)
        return real(jobs, workers, **kw)

    monkeypatch.setattr(bundle, "run_jobs", counted)
    monkeypatch.setattr(bundle, "default_workers", lambda: 2)
    assert verify_bundle(path, world.log.verifier()).ok  # ~1 MB: one pass
    assert started == []
    monkeypatch.setattr(bundle, "PARALLEL_MIN_BYTES", 1 << 10)
    report = verify_bundle(path, world.log.verifier())
    records = sum(line.startswith('{"type":"record"') for line in lines)
    assert started == [2] and report.ok and report.records == records >= N
    with pytest.raises(Exception, match="workers must be >= 1"):
        verify_bundle(path, world.log.verifier(), workers=0)
