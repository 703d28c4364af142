"""The built-in ``mail`` MCP server: a mailbox over IMAP (read, search, move, flag) and SMTP
(send, reply).

Settings come from ``MESHCLAW_MAIL_*`` environment variables (``MailSettings``); the
username and password arrive there from the connector's credential reference. Each tool
call opens its own IMAP connection (no state to go stale between calls).

Mail from outside the org is **untrusted**: a read (list, search, read) whose messages
include one whose sender's domain is not one of the org's (``org_domains``; by default
the mailbox's own domain) carries ``_meta["io.meshclaw/untrusted"] = true``, and
MeshClaw's client marks the result untrusted, so the policy sees
``untrusted_content_seen`` for the rest of the run. Each message also says
``outside_org``. The sender is the ``From`` header, which a sender can forge: the domain
test keeps outside mail from passing as trusted only where the mail server rejects
forged internal senders (SPF/DKIM/DMARC at the org's gateway).

Writes return **evidence** the outcomes capability can verify: the Message-ID of what
was sent (also stored in the Sent folder), the UID and folders of a move, the flags set.
A send is idempotent per run step: the Message-ID is derived from the caller's
idempotency key, and a message whose Message-ID is already in the Sent folder is not
sent again.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import smtplib
import ssl as ssl_lib
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid, parseaddr
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

import anyio
import pydantic_core
from imapclient import IMAPClient
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IDEMPOTENCY_META_KEY = "io.meshclaw/idempotency-key"
UNTRUSTED_META_KEY = "io.meshclaw/untrusted"
"""A result's ``_meta`` flag: it holds content from outside the org (``_mcp_convert``)."""
READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
FLAGS = {"seen": b"\\Seen", "flagged": b"\\Flagged", "answered": b"\\Answered"}
MAX_BODY_CHARS = 100_000

T = TypeVar("T")


class MailSettings(BaseSettings):
    """Where the mailbox is and who to log in as (``MESHCLAW_MAIL_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESHCLAW_MAIL_")

    imap_host: str
    imap_port: int = 993
    imap_ssl: bool = True
    """Implicit TLS (port 993). Off: plain IMAP, upgraded if ``imap_starttls``."""
    imap_starttls: bool = False
    smtp_host: str | None = None
    """Defaults to ``imap_host``."""
    smtp_port: int = 587
    smtp_ssl: bool = False
    smtp_starttls: bool = True
    smtp_auth: bool = True
    username: str
    password: SecretStr
    from_address: str | None = None
    """Defaults to ``username`` when that is an address."""
    sent_folder: str = "Sent"
    timeout_seconds: float = 30.0
    org_domains: Annotated[list[str], NoDecode] = []
    """The org's mail domains, comma-separated (``acme.com,acme.de``); their subdomains
    count too. Mail from any other sender domain is untrusted. Empty: the domain of
    ``from_address`` (or of ``username``); with neither, all mail is untrusted."""

    @field_validator("org_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            domains = [str(d).strip().lower().lstrip("@").rstrip(".") for d in value]
            bad = [d for d in domains if d and ("@" in d or "." not in d.strip("."))]
            if bad:
                raise ValueError(f"not a mail domain: {', '.join(bad)}")
            return [d for d in domains if d]
        return value

    def trusted_domains(self) -> tuple[str, ...]:
        if self.org_domains:
            return tuple(self.org_domains)
        own = self.from_address or self.username
        return (own.rsplit("@", 1)[1].lower(),) if "@" in own else ()


class MailError(ToolError):
    """A mailbox operation failed; the message is shown to the agent (never the password).

    The SDK's ``ToolError``: its text reaches the client, unlike an unexpected crash's.
    """


def _sender(settings: MailSettings) -> str:
    address = settings.from_address or settings.username
    if "@" not in address:
        raise MailError("set MESHCLAW_MAIL_FROM_ADDRESS: the username is not a mail address")
    return address


class Mailbox:
    """Blocking IMAP/SMTP operations; the MCP tools run them in worker threads."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    # -- IMAP ---------------------------------------------------------------------------

    def _imap(self) -> IMAPClient:
        s = self.settings
        try:
            client = IMAPClient(
                s.imap_host, port=s.imap_port, ssl=s.imap_ssl, timeout=s.timeout_seconds
            )
            if s.imap_starttls and not s.imap_ssl:
                client.starttls(ssl_lib.create_default_context())
            client.login(s.username, s.password.get_secret_value())
        except IMAPClient.Error as exc:
            raise MailError(f"IMAP login to {s.imap_host}:{s.imap_port} failed: {exc}") from None
        except OSError as exc:
            raise MailError(f"cannot reach IMAP {s.imap_host}:{s.imap_port}: {exc}") from None
        return client

    def _with_folder(self, folder: str, readonly: bool, work: Callable[[IMAPClient], T]) -> T:
        client = self._imap()
        try:
            try:
                client.select_folder(folder, readonly=readonly)
            except IMAPClient.Error:
                raise MailError(f"no folder {folder!r}") from None
            return work(client)
        finally:
            with contextlib.suppress(IMAPClient.Error, OSError):
                client.logout()

    def list_messages(self, folder: str, limit: int, unseen_only: bool) -> list[dict[str, Any]]:
        def work(client: IMAPClient) -> list[dict[str, Any]]:
            uids = client.search(["UNSEEN"] if unseen_only else ["ALL"])
            return _summaries(client, sorted(uids)[-limit:])

        return self._with_folder(folder, True, work)

    def search(self, query: str, folder: str, limit: int) -> list[dict[str, Any]]:
        def work(client: IMAPClient) -> list[dict[str, Any]]:
            uids = client.search(["TEXT", query], charset="UTF-8")
            return _summaries(client, sorted(uids)[-limit:])

        return self._with_folder(folder, True, work)

    def arrivals(
        self, folder: str, after_uid: int, limit: int
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """For mail triggers (``triggers.mail``): the folder's UIDVALIDITY, the UID below
        which every message already arrived (UIDNEXT - 1), and the headers of up to
        ``limit`` messages above ``after_uid``, oldest first."""

        def work(client: IMAPClient) -> tuple[int, int, list[dict[str, Any]]]:
            status = client.select_folder(folder, readonly=True)
            validity, next_uid = int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"])
            # ``UID n:*`` always names the last message, even one below n: filter again.
            uids = client.search(["UID", f"{after_uid + 1}:*"])
            newer = sorted(uid for uid in uids if uid > after_uid)[:limit]
            return validity, next_uid - 1, _summaries(client, newer)[::-1]

        return self._with_folder(folder, True, work)

    def read_message(self, uid: int, folder: str) -> dict[str, Any]:
        def work(client: IMAPClient) -> dict[str, Any]:
            message, flags = _fetch(client, uid)
            body = _text_body(message)
            return _summary(uid, message, flags) | {
                "cc": _addresses(message, "Cc"),
                "body": body[:MAX_BODY_CHARS],
            }

        return self._with_folder(folder, True, work)

    def move(self, uid: int, to_folder: str, folder: str) -> dict[str, Any]:
        def work(client: IMAPClient) -> dict[str, Any]:
            message, _ = _fetch(client, uid)
            if not client.folder_exists(to_folder):
                raise MailError(f"no folder {to_folder!r}")
            client.move([uid], to_folder)
            return {
                "message_id": message.get("Message-ID"),
                "uid": uid,
                "from_folder": folder,
                "to_folder": to_folder,
            }

        return self._with_folder(folder, False, work)

    def flag(self, uid: int, flag: str, value: bool, folder: str) -> dict[str, Any]:
        def work(client: IMAPClient) -> dict[str, Any]:
            message, _ = _fetch(client, uid)
            change = client.add_flags if value else client.remove_flags
            change([uid], [FLAGS[flag]])
            flags = client.get_flags([uid]).get(uid, ())
            return {
                "message_id": message.get("Message-ID"),
                "uid": uid,
                "folder": folder,
                "flags": sorted(_flag_names(flags)),
            }

        return self._with_folder(folder, False, work)

    # -- SMTP ---------------------------------------------------------------------------

    def send(self, message: EmailMessage, recipients: list[str]) -> dict[str, Any]:
        """Send once per Message-ID: a copy kept in the Sent folder marks it as sent."""
        message_id = str(message["Message-ID"])
        if self._already_sent(message_id):
            return {"message_id": message_id, "recipients": recipients, "duplicate": True}
        s = self.settings
        host = s.smtp_host or s.imap_host
        try:
            smtp_cls = smtplib.SMTP_SSL if s.smtp_ssl else smtplib.SMTP
            with smtp_cls(host, s.smtp_port, timeout=s.timeout_seconds) as smtp:
                if s.smtp_starttls and not s.smtp_ssl:
                    smtp.starttls(context=ssl_lib.create_default_context())
                if s.smtp_auth:
                    smtp.login(s.username, s.password.get_secret_value())
                refused = smtp.send_message(message, to_addrs=recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(
                f"SMTP login to {host}:{s.smtp_port} failed ({exc.smtp_code})"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise MailError(f"every recipient was refused: {sorted(exc.recipients)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(f"SMTP {host}:{s.smtp_port} failed: {exc}") from None
        self._keep_sent(message)
        delivered = [r for r in recipients if r not in refused]
        return {
            "message_id": message_id,
            "recipients": delivered,
            "refused": sorted(refused),
            "duplicate": False,
        }

    def _already_sent(self, message_id: str) -> bool:
        def work(client: IMAPClient) -> bool:
            return bool(client.search(["HEADER", "Message-ID", message_id]))

        try:
            return self._with_folder(self.settings.sent_folder, True, work)
        except MailError as exc:
            if "no folder" in str(exc):
                return False
            raise

    def _keep_sent(self, message: EmailMessage) -> None:
        client = self._imap()
        try:
            folder = self.settings.sent_folder
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, message.as_bytes(), flags=[b"\\Seen"])
        finally:
            client.logout()

    def original(self, uid: int, folder: str) -> EmailMessage:
        def work(client: IMAPClient) -> EmailMessage:
            message, _ = _fetch(client, uid)
            return message

        return self._with_folder(folder, True, work)

    def mark_answered(self, uid: int, folder: str) -> None:
        self._with_folder(folder, False, lambda c: c.add_flags([uid], [FLAGS["answered"]]))


# -- message helpers ----------------------------------------------------------------------


def _fetch(client: IMAPClient, uid: int) -> tuple[EmailMessage, tuple[bytes, ...]]:
    data = client.fetch([uid], ["BODY.PEEK[]", "FLAGS"]).get(uid)
    if not data or b"BODY[]" not in data:
        raise MailError(f"no message with UID {uid}")
    message = email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message, tuple(data.get(b"FLAGS", ()))


def _summaries(client: IMAPClient, uids: list[int]) -> list[dict[str, Any]]:
    if not uids:
        return []
    fetched = client.fetch(uids, ["BODY.PEEK[HEADER]", "FLAGS"])
    found = []
    for uid in sorted(fetched, reverse=True):
        data = fetched[uid]
        header = email.message_from_bytes(data[b"BODY[HEADER]"], policy=email.policy.default)
        assert isinstance(header, EmailMessage)
        found.append(_summary(uid, header, tuple(data.get(b"FLAGS", ()))))
    return found


def _summary(uid: int, message: EmailMessage, flags: tuple[bytes, ...]) -> dict[str, Any]:
    return {
        "uid": uid,
        "message_id": message.get("Message-ID"),
        "from": str(message.get("From", "")),
        "to": _addresses(message, "To"),
        "subject": str(message.get("Subject", "")),
        "date": str(message.get("Date", "")),
        "flags": sorted(_flag_names(flags)),
    }


def _outside(sender: str, domains: tuple[str, ...]) -> bool:
    """Whether a ``From`` value is not an address in one of the org's domains."""
    _, address = parseaddr(sender)
    domain = address.rpartition("@")[2].lower().rstrip(".")
    if not domain or "@" not in address:
        return True
    return not any(domain == d or domain.endswith("." + d) for d in domains)


def _marked(payload: dict[str, Any], messages: list[dict[str, Any]], domains: tuple[str, ...]
            ) -> CallToolResult:  # fmt: skip
    """The tool's result, each message saying ``outside_org``, and the whole result
    flagged untrusted when any message is from outside."""
    for message in messages:
        message["outside_org"] = _outside(str(message.get("from", "")), domains)
    untrusted = any(m["outside_org"] for m in messages)
    text = pydantic_core.to_json(payload, fallback=str, indent=2).decode()
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=payload,
        _meta={UNTRUSTED_META_KEY: True} if untrusted else None,
    )


def _flag_names(flags: Any) -> set[str]:
    names = {v.decode() if isinstance(v, bytes) else str(v) for v in flags}
    # \Recent belongs to one IMAP session, not to the message (gone in IMAP4rev2).
    return {n.lstrip("\\").lower() for n in names} - {"recent"}


def _addresses(message: EmailMessage, header: str) -> list[str]:
    return [addr for _, addr in getaddresses([str(v) for v in message.get_all(header, [])])]


def _text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else ""


def _message_id(ctx: Context[Any, Any], domain: str) -> str:
    meta = ctx.request_context.meta or {}
    key = meta.get(IDEMPOTENCY_META_KEY) if isinstance(meta, dict) else None
    if not isinstance(key, str) or not key:
        return make_msgid(domain=domain)
    if not key.replace("_", "").isalnum():  # e.g. ``notification:<id>``: same key, same id
        key = "idem_" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{key}@{domain}>"


def _compose(
    sender: str, to: list[str], cc: list[str], subject: str, body: str, message_id: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    message.set_content(body)
    return message


def _check_addresses(addresses: list[str]) -> None:
    for address in addresses:
        _, parsed = parseaddr(address)
        if "@" not in parsed:
            raise MailError(f"not a mail address: {address!r}")


async def _run(call: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(call)


# -- the MCP server -----------------------------------------------------------------------


def build(settings: MailSettings | None = None) -> MCPServer:
    cfg = settings or MailSettings()  # read from the environment
    box = Mailbox(cfg)
    server = MCPServer(
        "meshclaw-mail",
        instructions="A mailbox: list, search and read messages; move, flag, send and reply.",
        log_level="WARNING",
    )

    domains = cfg.trusted_domains()

    # Reads return a ``CallToolResult`` (to carry ``_meta``) annotated with the same
    # output schema as before, so the tools' approved definitions do not change.
    @server.tool(description="List the newest messages in a folder.", annotations=READ)
    async def list_messages(
        folder: str = "INBOX", limit: int = 20, unseen_only: bool = False
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        messages = await _run(
            partial(box.list_messages, folder, max(1, min(limit, 200)), unseen_only)
        )
        return _marked({"folder": folder, "messages": messages}, messages, domains)

    @server.tool(description="Find messages whose text contains the query.", annotations=READ)
    async def search(
        query: str, folder: str = "INBOX", limit: int = 20
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        messages = await _run(partial(box.search, query, folder, max(1, min(limit, 200))))
        return _marked({"folder": folder, "query": query, "messages": messages}, messages, domains)

    @server.tool(description="Read one message (headers and text body) by UID.", annotations=READ)
    async def read_message(
        uid: int, folder: str = "INBOX"
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        message = await _run(partial(box.read_message, uid, folder))
        return _marked(message, [message], domains)

    @server.tool(description="Move a message to another folder.", annotations=WRITE)
    async def move_message(uid: int, to_folder: str, folder: str = "INBOX") -> dict[str, Any]:
        evidence = await _run(partial(box.move, uid, to_folder, folder))
        return {"evidence": evidence}

    @server.tool(description="Set or clear a flag: seen, flagged or answered.", annotations=WRITE)
    async def flag_message(
        uid: int,
        flag: Literal["seen", "flagged", "answered"],
        value: bool = True,
        folder: str = "INBOX",
    ) -> dict[str, Any]:
        evidence = await _run(partial(box.flag, uid, flag, value, folder))
        return {"evidence": evidence}

    @server.tool(description="Send a new message.", annotations=WRITE)
    async def send(
        to: list[str], subject: str, body: str, ctx: Context[Any, Any], cc: list[str] | None = None
    ) -> dict[str, Any]:
        sender = _sender(cfg)
        _check_addresses([*to, *(cc or [])])
        if not to:
            raise MailError("'to' needs at least one address")
        message_id = _message_id(ctx, sender.rsplit("@", 1)[1])
        message = _compose(sender, to, cc or [], subject, body, message_id)
        evidence = await _run(partial(box.send, message, [*to, *(cc or [])]))
        return {"evidence": evidence}

    @server.tool(description="Reply to a message (to its sender, or to all).", annotations=WRITE)
    async def reply(
        uid: int, body: str, ctx: Context[Any, Any], folder: str = "INBOX", reply_all: bool = False
    ) -> dict[str, Any]:
        sender = _sender(cfg)
        original = await _run(partial(box.original, uid, folder))
        reply_to = _addresses(original, "Reply-To") or _addresses(original, "From")
        to = list(reply_to)
        cc: list[str] = []
        if reply_all:
            others = _addresses(original, "To") + _addresses(original, "Cc")
            cc = [a for a in dict.fromkeys(others) if a.lower() != sender.lower() and a not in to]
        subject = str(original.get("Subject", ""))
        if not subject.lower().startswith("re:"):
            subject = f"Re: {subject}"
        message = _compose(
            sender, to, cc, subject, body, _message_id(ctx, sender.rsplit("@", 1)[1])
        )
        parent = original.get("Message-ID")
        if parent:
            message["In-Reply-To"] = parent
            references = str(original.get("References", "")).split()
            message["References"] = " ".join([*references, str(parent)])
        evidence = await _run(partial(box.send, message, [*to, *cc]))
        await _run(partial(box.mark_answered, uid, folder))
        return {"evidence": evidence | {"in_reply_to": parent, "uid": uid, "folder": folder}}

    return server
