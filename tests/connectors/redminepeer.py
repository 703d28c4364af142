"""Debian's Redmine for the tests: a throwaway SQLite instance on a loopback port.

``start_redmine`` boots it once per test session (per xdist worker; ~20-60 s: Rails
boots, migrates an empty database and loads Redmine's default data), with the REST API
on, logins required, and the users ``admin``, ``alice`` and ``bob``. Each test makes
its own private project (``Redmine.project``), so tests never see each other's issues.
Needs the Debian packages ``redmine redmine-sqlite`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REDMINE = Path("/usr/share/redmine")
SERVE = Path(__file__).parent / "redmine_serve.rb"
ROLES = {"Manager": 3, "Developer": 4, "Reporter": 5}


def redmine_installed() -> bool:
    return (REDMINE / "config.ru").exists() and shutil.which("ruby") is not None


@dataclass
class Redmine:
    url: str
    keys: dict[str, str]
    """Login -> API key."""

    def as_user(self, login: str) -> dict[str, str]:
        return {"X-Redmine-API-Key": self.keys[login]}

    def user_id(self, login: str) -> int:
        found = httpx.get(f"{self.url}/users/current.json", headers=self.as_user(login))
        found.raise_for_status()
        return int(found.json()["user"]["id"])

    def project(self, members: dict[str, str]) -> str:
        """A new private project; ``members`` maps a login to a role name."""
        identifier = f"p{secrets.token_hex(4)}"
        made = httpx.post(
            f"{self.url}/projects.json",
            headers=self.as_user("admin"),
            json={"project": {"name": identifier, "identifier": identifier, "is_public": False}},
        )
        assert made.status_code == 201, made.text
        for login, role in members.items():
            added = httpx.post(
                f"{self.url}/projects/{identifier}/memberships.json",
                headers=self.as_user("admin"),
                json={"membership": {"user_id": self.user_id(login), "role_ids": [ROLES[role]]}},
            )
            assert added.status_code == 201, added.text
        return identifier

    def file_issue(self, login: str, project: str, subject: str) -> int:
        made = httpx.post(
            f"{self.url}/issues.json",
            headers=self.as_user(login),
            json={"issue": {"project_id": project, "subject": subject}},
        )
        assert made.status_code == 201, made.text
        return int(made.json()["issue"]["id"])


@contextmanager
def start_redmine(folder: Path, timeout: float = 240.0) -> Iterator[Redmine]:
    """Boot Redmine on an empty SQLite database under ``folder``; stop it afterwards."""
    instance = folder / "instance"
    for sub in ("config", "tmp/cache", "log", "files", "public"):
        (instance / sub).mkdir(parents=True, exist_ok=True)
    (instance / "config" / "database.yml").write_text(
        "production:\n  adapter: sqlite3\n"
        f"  database: {instance / 'redmine.sqlite3'}\n  timeout: 10000\n"
    )
    (instance / "config" / "secret_key.txt").write_text(secrets.token_hex(32))
    port_file, keys_file = folder / "port", folder / "keys.json"
    # Redmine finds an instance at <its root>/instances/<REDMINE_INSTANCE>: climbing out
    # with ".." reaches this folder (both lexically and through the symlink).
    env = os.environ | {
        "REDMINE_INSTANCE": "../" * 12 + str(instance).lstrip("/"),
        "RAILS_ENV": "production",
    }
    log = (folder / "redmine.log").open("wb")
    process = subprocess.Popen(
        ["ruby", str(SERVE), str(port_file), str(keys_file)],
        cwd=instance, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if process.poll() is not None:
                tail = (folder / "redmine.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Redmine exited with {process.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redmine did not listen within {timeout:g} s")
            time.sleep(0.1)  # polling a file the child writes; bounded by the deadline
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        yield Redmine(url=url, keys=json.loads(keys_file.read_text()))
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
