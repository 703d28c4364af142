"""What every demo stand-in shares: its description, ports, secrets, child processes."""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

BUILTIN_SERVERS = ("-m", "meshclaw.connectors.servers")
"""``python -m meshclaw.connectors.servers NAME``: how a connector starts a built-in server."""


class StandInError(Exception):
    """A stand-in could not start; the message says why and what to do (no secrets)."""


@dataclass(frozen=True, kw_only=True)
class StandIn:
    """One running stand-in and the connector that points a built-in server at it."""

    connector: str
    """The connector (and built-in server) name: ``tickets``, ``chat``, ..."""
    title: str
    """What runs, for the startup output: ``GitHub REST fake``."""
    address: str
    """Where it listens (a URL, or ``host:port`` pairs)."""
    detail: str = ""
    """What is in it, for the startup output: ``repo acme/ops``."""
    env: dict[str, str] = field(default_factory=dict)
    """The built-in server's settings (``MESHCLAW_<NAME>_*``), never a secret."""
    credential: dict[str, str] = field(default_factory=dict)
    """The vault entry's fields (secrets): stored in the demo org's vault, never printed."""
    credential_env: dict[str, str] = field(default_factory=dict)
    """Environment variable -> credential field, for the connector."""
    targets: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per tool: argument -> target kind (policy target globs)."""
    untrusted: bool = False

    def connector_config(self, python: str) -> dict[str, Any]:
        """The ``ConnectorConfig`` fields of a stdio connector running the built-in server."""
        return {
            "transport": "stdio",
            "command": python,
            "args": [*BUILTIN_SERVERS, self.connector],
            "env": dict(sorted(self.env.items())),
            "credentials": self.connector,
            "credential_env": dict(sorted(self.credential_env.items())),
            "targets": self.targets,
            "untrusted": self.untrusted,
        }


class App(Protocol):
    name: str

    def start(self) -> StandIn: ...

    def stop(self) -> None: ...


class PortBook:
    """Loopback ports by stand-in, kept in a file so a restart reuses last time's ports.

    Reusing them keeps the demo org's connector settings (and so their approvals) the
    same from one ``make run`` to the next; a port now taken is replaced by a free one.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ports: dict[str, int] = read_json(path)

    def port(self, key: str) -> int:
        wanted = self._ports.get(key)
        if not isinstance(wanted, int) or not _bindable(wanted):
            wanted = free_port()
            self._ports[key] = wanted
            write_json(self._path, self._ports)
        return wanted


class Secrets:
    """Random demo secrets, made once per demo home and kept there (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._values: dict[str, str] = read_json(path)

    def get(self, key: str) -> str:
        if key not in self._values:
            self._values[key] = secrets.token_urlsafe(18)
            write_json(self._path, self._values, mode=0o600)
        return self._values[key]


def free_port() -> int:
    """A port the OS says is free now (handed to servers that cannot report theirs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers do: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any], *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)


_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a function for ``preexec_fn`` that has the kernel send the child SIGTERM
    when the process that started it dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``):
    a killed ``make run`` leaves no stand-in holding its port. Resolved here, before any
    fork, so the child only calls into libc. (The signal follows the *thread* that
    forked: stand-ins are started from the main thread, which lives as long as the
    process.) None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return die_with_parent


_DIE_WITH_PARENT = _parent_death_signal()


class ChildProcess:
    """A stand-in run as a child process, its output in a log file under the demo home.

    It dies with the process that started it (``_parent_death_signal``)."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file: IO[bytes] = open(log, "ab")  # noqa: SIM115 (closed in stop)
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_DIE_WITH_PARENT,  # only calls prctl (see _parent_death_signal)
            )
        except OSError as exc:
            self._log_file.close()
            raise StandInError(f"cannot start {name}: {exc}") from None

    def wait_until(self, ready: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll ``ready`` until it holds; a child that exits or a deadline is an error."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self._process.poll() is not None:
                self.stop()
                raise StandInError(
                    f"{self.name} exited with status {self._process.returncode} (see {self.log})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise StandInError(f"{self.name} was not ready within {timeout:.0f} s ({self.log})")
            time.sleep(0.05)  # polling a starting server, bounded by the deadline

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log_file.close()
