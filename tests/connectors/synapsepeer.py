"""Synapse (the Matrix homeserver) for the tests: a throwaway SQLite instance on loopback.

``install_synapse`` puts the pinned ``matrix-synapse`` (``synapse-requirements.txt``) in
its own virtualenv under ``tests/.cache/synapse-venv``, with pip as the machine has it
configured (the same index ``make install`` uses); it is kept between sessions and
reinstalled when the requirements change. ``start_synapse`` generates a config, starts
the homeserver on a free loopback port (a few seconds on an empty SQLite database) and
stops it afterwards. Users are registered through the shared-secret admin API; an
application service (``bridge``) may act as users ``@bridge_*``. Each test makes its own
rooms (``Synapse.room``), so tests never see each other's messages.

A second application service, ``meshclaw``, is interested in the user ``@bot`` (not
exclusively), so Synapse pushes every event of the rooms the bot is in as transactions
(``PUT <url>/_matrix/app/v1/transactions/{txnId}``, ``Authorization: Bearer <hs_token>``).
Its ``url`` is fixed when Synapse boots, but a MeshClaw hook URL names an org that each
test makes anew: so the ``url`` is a ``PushRelay`` on loopback that forwards to the
MeshClaw test server a test names (``Synapse.relay.forwarding``), and answers 200 ``{}``
when no test does (Synapse would otherwise back off, and hold up later transactions).

``python -m tests.connectors.synapsepeer`` installs it ahead of a test run (CI).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

HERE = Path(__file__).parent
REQUIREMENTS = HERE / "synapse-requirements.txt"
CACHE = HERE.parent / ".cache"
VENV = CACHE / "synapse-venv"
SERVER_NAME = "meshclaw.test"
CLIENT = "/_matrix/client/v3"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def install_synapse(venv: Path = VENV, timeout: float = 600.0) -> str | None:
    """Install (or find) Synapse in ``venv``; None when it is there, else why it is not.

    A lock keeps parallel test workers from installing into the same folder at once."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = venv / ".requirements-sha256"
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == wanted and _python(venv).exists():
            return None
        steps = {
            "venv": [sys.executable, "-m", "venv", "--clear", str(venv)],
            "pip install": [str(_python(venv)), "-m", "pip", "install", "--quiet",
                            "-r", str(REQUIREMENTS)],
        }  # fmt: skip
        for what, step in steps.items():
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return f"installing Synapse timed out after {timeout:g} s ({what})"
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines()
                errors = [line[:300] for line in lines if line.startswith("ERROR")]
                return f"cannot install Synapse ({what}): {' '.join(errors or lines[-3:])}"
        stamp.write_text(wanted)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Push:
    """One request Synapse sent the ``meshclaw`` application service, and its answer."""

    method: str
    path: str
    """After the registration's ``url``: ``/_matrix/app/v1/transactions/7``."""
    body: dict[str, Any]
    status: int
    """What Synapse was answered."""
    answer: dict[str, Any]
    """What MeshClaw answered (``{}`` when nothing was forwarded)."""

    def events(self) -> list[str]:
        """The ids of the events a transaction carries."""
        return [str(e.get("event_id")) for e in self.body.get("events") or []]


class PushRelay:
    """The ``meshclaw`` application service's ``url``: forwards each request to ``target``
    (a MeshClaw hook URL, ``http://…/v1/hooks/matrix/{org_id}/{connector}``) and answers
    Synapse with MeshClaw's answer; without a target, 200 ``{}``."""

    def __init__(self) -> None:
        self.target: str | None = None
        self.lose = 0
        """Answers to lose: forwarded to MeshClaw, but Synapse is answered 502, so it sends
        the same transaction again (as after a timeout or a proxy's error)."""
        self.pushes: list[Push] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @contextmanager
    def forwarding(self, target: str) -> Iterator[PushRelay]:
        """Forward to ``target`` for the block; then answer 200 again (Synapse recovers)."""
        self.target = target.rstrip("/")
        try:
            yield self
        finally:
            self.target, self.lose = None, 0

    def wait_for(self, wanted: Callable[[Push], bool], timeout: float = 60.0) -> Push:
        """The first push (since Synapse booted) that ``wanted`` accepts, once it came."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = next((p for p in self.pushes if wanted(p)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"Synapse pushed nothing wanted within {timeout:g} s")
            time.sleep(0.05)  # waiting for Synapse's push; bounded by the deadline

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, bytes]:  # fmt: skip
        target, answer, status, reply = self.target, {}, 200, b"{}"
        if target is not None:
            try:
                got = httpx.request(method, target + path, headers=headers, content=body,
                                    timeout=60)  # fmt: skip
                status, reply = got.status_code, got.content
                with contextlib.suppress(ValueError):
                    answer = got.json()
            except httpx.HTTPError as exc:
                status, reply = 502, json.dumps({"error": type(exc).__name__}).encode()
        with self._lock:
            if self.lose and status == 200:
                self.lose -= 1
                status, reply = 502, b'{"error": "lost on the way back"}'
            sent: dict[str, Any] = {}
            with contextlib.suppress(ValueError):
                sent = json.loads(body or b"{}")
            self.pushes.append(Push(method, path, sent, status, answer))
        return status, reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                keep = ("Authorization", "Content-Type")
                headers = {k: v for k in keep if (v := self.headers.get(k)) is not None}
                status, reply = relay._answer(self.command, self.path, headers, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_PUT = do_POST = _relay

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the pushes are kept in ``relay.pushes``

        return Handler


@dataclass
class Synapse:
    url: str
    shared_secret: str
    as_token: str
    """The ``bridge`` application service's token."""
    relay: PushRelay
    """Where Synapse pushes the ``meshclaw`` application service's transactions."""
    push_as_token: str
    push_hs_token: str
    """The ``meshclaw`` application service's tokens (``hs_token``: what Synapse sends)."""
    tokens: dict[str, str] = field(default_factory=dict)
    """Login -> access token."""

    def user_id(self, login: str) -> str:
        return f"@{login}:{SERVER_NAME}"

    def call(self, login: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[login]}"}
        answer = httpx.request(method, f"{self.url}{path}", headers=headers, **kwargs)
        assert answer.status_code == 200, f"{method} {path}: {answer.text}"
        data: dict[str, Any] = answer.json()
        return data

    def register(self, login: str, admin: bool = False) -> str:
        """A new user through the shared-secret admin API; returns its access token."""
        endpoint = f"{self.url}/_synapse/admin/v1/register"
        nonce = httpx.get(endpoint).json()["nonce"]
        password = secrets.token_hex(8)
        signed = "\x00".join([nonce, login, password, "admin" if admin else "notadmin"])
        mac = hmac.new(self.shared_secret.encode(), signed.encode(), hashlib.sha1).hexdigest()
        body = {"nonce": nonce, "username": login, "password": password, "admin": admin,
                "mac": mac}  # fmt: skip
        made = httpx.post(endpoint, json=body)
        assert made.status_code == 200, made.text
        self.tokens[login] = str(made.json()["access_token"])
        return self.tokens[login]

    def register_bridged(self, login: str) -> str:
        """A user of the ``bridge`` application service (its namespace ``@bridge_*``)."""
        made = httpx.post(
            f"{self.url}{CLIENT}/register",
            headers={"Authorization": f"Bearer {self.as_token}"},
            json={"type": "m.login.application_service", "username": login},
        )
        assert made.status_code == 200, made.text
        return str(made.json()["user_id"])

    def room(self, owner: str, alias: str | None = None, members: tuple[str, ...] = ()) -> str:
        """A private room made by ``owner``, which ``members`` (logins or user ids of
        bridged users, for whom the bridge joins) are invited to and join."""
        body: dict[str, Any] = {"preset": "private_chat", "name": alias or "room"}
        if alias is not None:
            body["room_alias_name"] = alias
        room_id = str(self.call(owner, "POST", f"{CLIENT}/createRoom", json=body)["room_id"])
        for member in members:
            user = member if member.startswith("@") else self.user_id(member)
            self.call(owner, "POST", f"{CLIENT}/rooms/{quote(room_id)}/invite",
                      json={"user_id": user})  # fmt: skip
            if member.startswith("@"):
                joined = httpx.post(
                    f"{self.url}{CLIENT}/rooms/{quote(room_id)}/join",
                    params={"user_id": member},
                    headers={"Authorization": f"Bearer {self.as_token}"},
                    json={},
                )
                assert joined.status_code == 200, joined.text
            else:
                self.call(member, "POST", f"{CLIENT}/rooms/{quote(room_id)}/join", json={})
        return room_id

    def send(self, login: str, room_id: str, text: str, thread: str | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": text}
        if thread is not None:
            content["m.relates_to"] = {"rel_type": "m.thread", "event_id": thread}
        path = f"{CLIENT}/rooms/{quote(room_id)}/send/m.room.message/{secrets.token_hex(8)}"
        return str(self.call(login, "PUT", path, json=content)["event_id"])

    def thread(self, login: str, room_id: str, root: str) -> list[str]:
        """The texts of a thread's replies, oldest first, as the server has them."""
        path = f"/_matrix/client/v1/rooms/{quote(room_id)}/relations/{quote(root)}/m.thread"
        chunk = self.call(login, "GET", path, params={"dir": "f", "limit": 100})["chunk"]
        return [str(e["content"].get("body")) for e in chunk]


def _config(folder: Path, port: int, shared_secret: str) -> str:
    """Settings over the generated config: loopback only, no federation or outside
    look-ups, no rate limits (tests post quickly), registration by shared secret only."""
    lots = {"per_second": 1000, "burst_count": 1000}
    limits = "\n".join(
        f"{name}: {{per_second: 1000, burst_count: 1000}}"
        for name in ("rc_message", "rc_registration", "rc_admin_redaction", "rc_room_creation")
    )
    return f"""
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources: [{{names: [client], compress: false}}]
database:
  name: sqlite3
  args: {{database: {folder / "homeserver.db"}}}
media_store_path: {folder / "media"}
registration_shared_secret: "{shared_secret}"
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
presence: {{enabled: false}}
enable_metrics: false
report_stats: false
app_service_config_files: [{folder / "bridge.yaml"}, {folder / "meshclaw.appservice.yaml"}]
{limits}
rc_login:
  address: {lots}
  account: {lots}
  failed_attempts: {lots}
rc_joins:
  local: {lots}
  remote: {lots}
rc_invites:
  per_room: {lots}
  per_user: {lots}
  per_issuer: {lots}
"""


def _bridge(as_token: str) -> str:
    return f"""id: bridge
url: null
as_token: "{as_token}"
hs_token: "{secrets.token_hex(16)}"
sender_localpart: bridge
rate_limited: false
namespaces:
  users: [{{exclusive: true, regex: "@bridge_.*:{SERVER_NAME.replace(".", "[.]")}"}}]
  aliases: []
  rooms: []
"""


def _meshclaw_appservice(url: str, as_token: str, hs_token: str) -> str:
    """MeshClaw's registration as an operator writes it (``docs/triggers.md``)."""
    return f"""id: meshclaw
url: "{url}"
as_token: "{as_token}"
hs_token: "{hs_token}"
sender_localpart: meshclaw
rate_limited: false
namespaces:
  users: [{{exclusive: false, regex: "@bot:{SERVER_NAME.replace(".", "[.]")}"}}]
  aliases: []
  rooms: []
"""


@contextmanager
def start_synapse(folder: Path, venv: Path = VENV, timeout: float = 120.0) -> Iterator[Synapse]:
    """Boot Synapse on an empty SQLite database under ``folder``; stop it afterwards."""
    python = str(_python(venv))
    generated, extra = folder / "homeserver.yaml", folder / "meshclaw.yaml"
    subprocess.run(
        [python, "-m", "synapse.app.homeserver", "--server-name", SERVER_NAME,
         "--config-path", str(generated), "--data-directory", str(folder),
         "--generate-config", "--report-stats=no"],
        check=True, capture_output=True, cwd=folder,
    )  # fmt: skip
    shared_secret, as_token, port = secrets.token_hex(16), secrets.token_hex(16), _free_port()
    push_as_token, push_hs_token = secrets.token_hex(16), secrets.token_hex(16)
    (folder / "bridge.yaml").write_text(_bridge(as_token))
    relay = PushRelay()
    (folder / "meshclaw.appservice.yaml").write_text(
        _meshclaw_appservice(relay.url, push_as_token, push_hs_token)
    )
    extra.write_text(_config(folder, port, shared_secret))
    log = (folder / "synapse.out").open("wb")
    process = subprocess.Popen(
        [python, "-m", "synapse.app.homeserver", "-c", str(generated), "-c", str(extra)],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                tail = (folder / "synapse.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Synapse exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/_matrix/client/versions", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Synapse did not answer within {timeout:g} s")
            time.sleep(0.1)  # polling a starting server; bounded by the deadline
        yield Synapse(
            url=url, shared_secret=shared_secret, as_token=as_token, relay=relay,
            push_as_token=push_as_token, push_hs_token=push_hs_token,
        )  # fmt: skip
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        relay.close()


if __name__ == "__main__":
    problem = install_synapse()
    if problem is not None:
        sys.exit(problem)
    print(f"Synapse is installed in {VENV}")
