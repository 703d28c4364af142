"""``meshclaw audit ...`` end to end on a real store, and offline bundle verification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from meshclaw.cli.main import app
from tests.conftest import store_url_of


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world_store: str | None) -> CliRunner:
    """The runner; ``world_store`` puts the test's store under ``_env`` (``store_url_of``)."""
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def _env(tmp_path: Path, token: str | None = None) -> dict[str, str | None]:
    return {
        "MESHCLAW_HOME": str(tmp_path / "var"),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": store_url_of(tmp_path),
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": token,
        "MESHCLAW_AUDIT__CHECKPOINT_EVERY": "4",
    }


def _run(cli: CliRunner, tmp_path: Path, *args: str, token: str | None = None) -> Result:
    return cli.invoke(app, list(args), env=_env(tmp_path, token))


def _offline_verify(fresh: Path, bundle: Path, key: Path) -> subprocess.CompletedProcess[str]:
    """Run the verifier in a fresh directory with no store and no settings: only two files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCLAW_")}
    env["MESHCLAW_HOME"] = str(fresh / "home")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "meshclaw.cli",
            "audit",
            "verify",
            "--bundle",
            bundle.name,
            "--public-key",
            key.name,
            "--json",
        ],
        cwd=fresh,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_export_then_verify_offline_with_only_the_public_key(
    cli: CliRunner, tmp_path: Path
) -> None:
    assert _run(cli, tmp_path, "demo", "seed").exit_code == 0
    token = _run(cli, tmp_path, "token", "create", "--user", "dave", "--org", "acme").stdout.strip()
    alice = (tmp_path / "var" / "cli-token").read_text().strip()

    # an employee may not read the log; the auditor may
    denied = _run(cli, tmp_path, "audit", "log", "--json", token=alice)
    assert denied.exit_code == 2 and "auditor" in denied.stderr
    page = json.loads(_run(cli, tmp_path, "audit", "log", "--json", token=token).stdout)
    assert page["entries"] and {"seq", "action", "actor_user_id"} <= set(page["entries"][0])

    verified = _run(cli, tmp_path, "audit", "verify", "--json", token=token)
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["ok"] is True

    key = tmp_path / "meshclaw-audit.pub"
    assert _run(cli, tmp_path, "audit", "public-key", "-o", str(key)).exit_code == 0
    full = _run(cli, tmp_path, "audit", "export", token=token)
    assert full.exit_code == 0, full.output
    part = _run(
        cli, tmp_path, "audit", "export", "--since-seq", "3", "-o", "part.jsonl", token=token
    )
    assert part.exit_code == 0, part.output
    past = _run(cli, tmp_path, "audit", "export", "--since-seq", "999999", token=token)
    assert past.exit_code == 2 and "past the end of the log" in past.stderr

    fresh = tmp_path / "auditor-laptop"
    fresh.mkdir()
    (fresh / "bundle.jsonl").write_text(full.stdout)
    (fresh / "part.jsonl").write_text((tmp_path / "part.jsonl").read_text())
    (fresh / "key.pub").write_text(key.read_text())
    for name in ("bundle.jsonl", "part.jsonl"):
        done = _offline_verify(fresh, fresh / name, fresh / "key.pub")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["ok"] and report["checkpoints"] >= 1 and report["records"] > 0
    assert not (fresh / "home").exists()  # no store, no key, nothing was created

    # one altered byte in a record's details: exit 1, and the record is named
    lines = (fresh / "bundle.jsonl").read_text().splitlines()
    victim = next(i for i, ln in enumerate(lines) if '"body":"present"' in ln and '"n' in ln)
    seq = json.loads(lines[victim])["seq"]
    lines[victim] = lines[victim].replace('"details":{', '"details":{"x":1,', 1)
    (fresh / "bad.jsonl").write_text("\n".join(lines) + "\n")
    done = _offline_verify(fresh, fresh / "bad.jsonl", fresh / "key.pub")
    assert done.returncode == 1
    problem = json.loads(done.stdout)["problem"]
    assert problem["seq"] == seq and "body" in problem["message"]

    # a different key does not verify the bundle
    other = tmp_path / "other"
    other_env = _env(other)
    result = cli.invoke(app, ["audit", "public-key", "-o", str(fresh / "other.pub")], env=other_env)
    assert result.exit_code == 0
    done = _offline_verify(fresh, fresh / "bundle.jsonl", fresh / "other.pub")
    assert done.returncode == 1 and "key" in json.loads(done.stdout)["problem"]["message"]


def test_verify_bad_input_is_exit_2(cli: CliRunner, tmp_path: Path) -> None:
    no_key = _run(cli, tmp_path, "audit", "verify", "--bundle", "x.jsonl")
    assert no_key.exit_code == 2 and "--public-key" in no_key.stderr
    (tmp_path / "x.jsonl").write_text('{"format": "something-else"}\n')
    bad = _run(cli, tmp_path, "audit", "verify", "--bundle", "x.jsonl", "--public-key", "a+b+c")
    assert bad.exit_code == 2
    prove = _run(cli, tmp_path, "audit", "prove")
    assert prove.exit_code == 2 and "--seq" in prove.stderr
