"""Mail for the demo: Debian's dovecot (IMAP) and ``aiosmtpd`` (SMTP) on loopback.

The built-in ``mail`` server needs both: it sends through SMTP and keeps a copy of what
it sent in the IMAP Sent folder (which is also how it never sends a step's mail twice).
Dovecot is a Debian package (``dovecot-imapd``) that a fresh machine may not have; then
the demo runs without mail and says so. ``aiosmtpd`` is a development dependency,
imported only here.

Dovecot runs in the foreground with a throwaway config: plain-text login on 127.0.0.1
only, one passwd-file user (the shared ``platform@acme.example`` mailbox), maildirs
under the demo home. The SMTP server keeps every message it accepts in
``outgoing.mbox`` and delivers mail for the shared mailbox into its INBOX.
"""

from __future__ import annotations

import grp
import hashlib
import importlib.util
import mailbox
import os
import pwd
import shutil
import stat
import tempfile
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from meshclaw.demo_apps._base import ChildProcess, PortBook, Secrets, StandIn, StandInError

MAILBOX = "platform@acme.example"
ORG_DOMAIN = "acme.example"
SEED_MAIL = [
    ("bob@acme.example", "Checkout API returns 502 since 06:40",
     "Customers cannot pay. Can someone from platform look at it now?"),
    ("news@vendor.example", "Your weekly cloud digest",
     "Ten tips for cheaper storage, and our spring webinar."),
]  # fmt: skip


def dovecot_binary() -> str | None:
    found = shutil.which("dovecot") or "/usr/sbin/dovecot"
    return found if Path(found).exists() else None


def _reachable(folder: Path, uid: int, gid: int) -> bool:
    """Whether user ``uid`` (group ``gid``) may search every folder down to ``folder``."""
    for path in [folder, *folder.parents]:
        st = path.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def dovecot_accounts() -> tuple[str, str, int, int]:
    """(internal user, login user, uid, gid) dovecot's processes and mail run as."""
    if os.geteuid() == 0:
        user = pwd.getpwnam("dovecot")
        return "dovecot", "dovenull", user.pw_uid, user.pw_gid
    me = pwd.getpwuid(os.getuid())
    return me.pw_name, me.pw_name, me.pw_uid, grp.getgrgid(os.getgid()).gr_gid


def dovecot_config(
    *,
    base_dir: Path,
    state_dir: Path,
    log_path: Path,
    passwd: Path,
    homes: Path,
    port: int,
    mailboxes: tuple[str, ...] = (),
) -> str:
    """A throwaway IMAP-only dovecot on 127.0.0.1:``port``: plain logins from a
    passwd-file, maildirs under ``homes``, a Sent folder and ``mailboxes`` created on
    first login. (Also what the tests' mail server runs.)"""
    internal, login, uid, gid = dovecot_accounts()
    extra = "".join(f"  mailbox {name} {{\n    auto = create\n  }}\n" for name in mailboxes)
    return f"""
base_dir = {base_dir}
state_dir = {state_dir}
log_path = {log_path}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(gid).gr_name}
default_login_user = {login}
first_valid_uid = {uid}
first_valid_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={homes}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    auto = create
    special_use = \\Sent
  }}
{extra}}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


class _Deliver:
    """aiosmtpd handler: keep every message, deliver the shared mailbox's into its INBOX."""

    def __init__(self, outgoing: Path, imap_port: int, password: str) -> None:
        self._outgoing = outgoing
        self._imap_port = imap_port
        self._password = password

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        box = mailbox.mbox(self._outgoing)
        try:
            box.add(data)
            box.flush()
        finally:
            box.close()
        if MAILBOX in envelope.rcpt_tos:
            client = IMAPClient("127.0.0.1", port=self._imap_port, ssl=False, timeout=5)
            client.login(MAILBOX, self._password)
            client.append("INBOX", data)
            client.logout()
        return "250 OK"


class MailApp:
    """The mail stand-in: dovecot for the shared mailbox, aiosmtpd for outgoing mail."""

    name = "mail"

    def __init__(self, folder: Path, ports: PortBook, secrets: Secrets) -> None:
        self._folder = (folder / "mail").resolve()
        self._ports = ports
        self._password = secrets.get("mail-password")
        self._child: ChildProcess | None = None
        self._smtp: Any = None
        self._run_dir: Path | None = None
        self._data = self._folder
        self.data_note = ""
        """Where mail is kept when that is not under the demo home (said at start)."""

    def start(self) -> StandIn:
        binary = dovecot_binary()
        if binary is None:
            raise StandInError(
                "dovecot is not installed (Debian: apt-get install dovecot-imapd), "
                "and the mail connector needs IMAP even to send"
            )
        if importlib.util.find_spec("aiosmtpd") is None:
            raise StandInError(
                "the SMTP stand-in needs the Python package 'aiosmtpd', a development "
                "dependency: `.venv/bin/pip install -r requirements.lock`"
            )
        imap_port = self._ports.port("mail-imap")
        smtp_port = self._ports.port("mail-smtp")
        config = self._configure(imap_port)
        seeded = self._data / "seeded"
        child = ChildProcess("dovecot", [binary, "-F", "-c", str(config)], self._folder / "log")
        self._child = child
        try:
            child.wait_until(self._can_login(imap_port), timeout=15)
            if not seeded.exists():
                self._seed(imap_port)
                seeded.touch()
            self._smtp = self._start_smtp(smtp_port, imap_port)
        except BaseException:
            self.stop()
            raise
        return StandIn(
            connector=self.name,
            title="dovecot IMAP + aiosmtpd SMTP",
            address=f"imap 127.0.0.1:{imap_port}, smtp 127.0.0.1:{smtp_port}",
            detail=f"mailbox {MAILBOX}; mail sent is copied to {self._folder / 'outgoing.mbox'}"
            + (f"; {self.data_note}" if self.data_note else ""),
            env={
                "MESHCLAW_MAIL_IMAP_HOST": "127.0.0.1",
                "MESHCLAW_MAIL_IMAP_PORT": str(imap_port),
                "MESHCLAW_MAIL_IMAP_SSL": "false",
                "MESHCLAW_MAIL_SMTP_HOST": "127.0.0.1",
                "MESHCLAW_MAIL_SMTP_PORT": str(smtp_port),
                "MESHCLAW_MAIL_SMTP_STARTTLS": "false",
                "MESHCLAW_MAIL_SMTP_AUTH": "false",
                "MESHCLAW_MAIL_FROM_ADDRESS": MAILBOX,
                "MESHCLAW_MAIL_ORG_DOMAINS": ORG_DOMAIN,
            },
            credential={"username": MAILBOX, "password": self._password},
            credential_env={
                "MESHCLAW_MAIL_USERNAME": "username",
                "MESHCLAW_MAIL_PASSWORD": "password",
            },
            targets={
                "send": {"to": "mail", "cc": "mail"},
                # Folders are ``folder:`` targets, so grants (and mail triggers) can be
                # held to some mailboxes; recipients are ``mail:`` targets.
                **{
                    tool: {"folder": "folder"}
                    for tool in ("list_messages", "search", "read_message", "flag_message")
                },
                "move_message": {"folder": "folder", "to_folder": "folder"},
            },
        )

    def stop(self) -> None:
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None
        if self._child is not None:
            self._child.stop()
            self._child = None
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def _configure(self, port: int) -> Path:
        _, _, uid, gid = dovecot_accounts()
        self._folder.mkdir(parents=True, exist_ok=True)
        (self._folder / "state").mkdir(exist_ok=True)
        data = self._data = self._data_folder(uid, gid)
        homes = data / "home"
        homes.mkdir(parents=True, exist_ok=True)
        os.chown(homes, uid, gid)
        passwd = data / "passwd"
        passwd.touch(mode=0o600)
        passwd.write_text(f"{MAILBOX}:{{PLAIN}}{self._password}\n")
        os.chown(passwd, uid, gid)  # read by dovecot's auth process, as that user
        # Dovecot's sockets live here; a short path keeps them under the length limit.
        self._run_dir = Path(tempfile.mkdtemp(prefix="meshclaw-dovecot-"))
        self._run_dir.chmod(0o755)
        config = self._folder / "dovecot.conf"
        config.write_text(
            dovecot_config(
                base_dir=self._run_dir,
                state_dir=self._folder / "state",
                log_path=self._folder / "log",
                passwd=passwd,
                homes=homes,
                port=port,
                mailboxes=("later",),  # the folder examples/mail-triage.yaml files into
            )
        )
        return config

    def _data_folder(self, uid: int, gid: int) -> Path:
        """Where the passwd file and maildirs go: under the demo home, unless dovecot's
        own user (root runs mail as ``dovecot``) cannot reach it there (a parent folder
        that is not world-searchable); then in a folder of its own under the system's
        temporary directory, named after the demo home, so mail still outlives a restart.
        """
        if _reachable(self._folder, uid, gid):
            return self._folder
        digest = hashlib.sha256(str(self._folder).encode()).hexdigest()[:12]
        data = Path(tempfile.gettempdir()) / f"meshclaw-demo-mail-{digest}"
        data.mkdir(mode=0o755, exist_ok=True)
        self.data_note = f"maildirs in {data}: the dovecot user cannot reach {self._folder}"
        return data

    def _can_login(self, port: int) -> Any:
        def ready() -> bool:
            try:
                client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=2)
                client.login(MAILBOX, self._password)
                client.logout()
            except (OSError, IMAPClient.Error):
                return False
            return True

        return ready

    def _seed(self, port: int) -> None:
        client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=5)
        client.login(MAILBOX, self._password)
        try:
            for sender, subject, body in SEED_MAIL:
                message = EmailMessage()
                message["From"] = sender
                message["To"] = MAILBOX
                message["Subject"] = subject
                message["Date"] = formatdate(usegmt=True)
                message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[1])
                message.set_content(body)
                client.append("INBOX", message.as_bytes())
        finally:
            client.logout()

    def _start_smtp(self, port: int, imap_port: int) -> Any:
        from aiosmtpd.controller import Controller

        handler = _Deliver(self._folder / "outgoing.mbox", imap_port, self._password)
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        try:
            controller.start()
        except Exception as exc:  # aiosmtpd raises several kinds when the port is taken
            raise StandInError(f"the SMTP stand-in did not start on port {port}: {exc}") from None
        return controller
