"""Real mail peers on loopback: Debian's dovecot (IMAP) and aiosmtpd (SMTP).

``start_dovecot`` writes a throwaway config (plain-text auth on 127.0.0.1 only, a
passwd-file user, maildirs in a temporary folder) and runs ``dovecot -F`` in the
foreground; the SMTP server delivers every message it accepts for the dovecot user into
that user's INBOX with IMAP APPEND, so a message sent through SMTP can be read back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from imapclient import IMAPClient

from meshclaw.demo_apps._mail import dovecot_accounts, dovecot_config

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


@dataclass
class ImapAccount:
    host: str
    port: int
    username: str
    password: str


def free_port() -> int:
    # The port is handed to a server that cannot report the one it bound: a tiny race,
    # acceptable on loopback in tests.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dovecot_available() -> bool:
    return Path(DOVECOT).exists()


@contextmanager
def start_dovecot(
    username: str = "alice@acme.test", password: str = "wonderland"
) -> Iterator[ImapAccount]:
    # Outside pytest's tmp_path: its parents are mode 0700, and dovecot's mail processes
    # run as the dovecot user.
    root = Path(tempfile.mkdtemp(prefix="meshclaw-dovecot-"))
    root.chmod(0o755)
    _, _, uid, gid = dovecot_accounts()
    homes = root / "home"
    homes.mkdir()
    os.chown(homes, uid, gid)
    (root / "passwd").write_text(f"{username}:{{PLAIN}}{password}\n")
    port = free_port()
    config = root / "dovecot.conf"
    config.write_text(
        dovecot_config(
            base_dir=root / "run",
            state_dir=root / "state",
            log_path=root / "dovecot.log",
            passwd=root / "passwd",
            homes=homes,
            port=port,
            mailboxes=("Archive",),
        )
    )
    (root / "state").mkdir()
    process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    account = ImapAccount(host="127.0.0.1", port=port, username=username, password=password)
    try:
        _wait_for_login(account, process, root)
        yield account
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_login(account: ImapAccount, process: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 20
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
            raise RuntimeError(f"dovecot exited ({process.returncode}): {output}{log}")
        try:
            client = IMAPClient(account.host, port=account.port, ssl=False, timeout=2)
            client.login(account.username, account.password)
            client.logout()
            return
        except (OSError, IMAPClient.Error) as exc:
            last = exc
            time.sleep(0.05)  # polling a starting server, bounded by the deadline
    raise TimeoutError(f"dovecot did not accept a login within 20 s: {last}")


class _DeliverToImap:
    """aiosmtpd handler: keep every envelope, append mail for the IMAP user to its INBOX."""

    def __init__(self, account: ImapAccount) -> None:
        self.account = account
        self.envelopes: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = (
            envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        )
        self.envelopes.append(
            {"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "data": content}
        )
        if self.account.username in envelope.rcpt_tos:
            client = IMAPClient(self.account.host, port=self.account.port, ssl=False, timeout=5)
            client.login(self.account.username, self.account.password)
            client.append("INBOX", content)
            client.logout()
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    envelopes: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def start_smtp(account: ImapAccount) -> Iterator[SmtpServer]:
    handler = _DeliverToImap(account)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(host="127.0.0.1", port=port, envelopes=handler.envelopes)
    finally:
        controller.stop()


def deliver(
    account: ImapAccount, *, sender: str, subject: str, body: str, folder: str = "INBOX"
) -> None:
    """Put a message into the mailbox directly (as if it had arrived)."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["From"] = sender
    message["To"] = account.username
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="outside.test")
    message.set_content(body)
    client = IMAPClient(account.host, port=account.port, ssl=False, timeout=5)
    client.login(account.username, account.password)
    client.append(folder, message.as_bytes())
    client.logout()
