"""What every chat backend shares: settings, the error the agent sees, the result shape.

A backend (``_chat_slack``, ``_chat_matrix``) turns one chat system's API into the same
tool results, so an agent and its spec do not change with the chat system:

- a channel is named by its id (Slack ``C…``, Matrix ``!room:server``) or a name (Slack
  ``general`` / ``#general``, Matrix ``#alias:server`` or a bare ``general`` for
  ``#general:<the bot's server>``); results name it by id;
- a message is named by its ``ts`` (Slack's timestamp id, a Matrix event id); a thread by
  its first message's ``ts`` (``thread_ts``);
- a read message is ``{ts, user, text, thread_ts?, reply_count?, reactions?}`` (Matrix
  adds ``outside_org: true`` for a sender of another homeserver);
- a write returns evidence: ``{channel, ts, thread_ts?, duplicate}`` for a post,
  ``{channel, ts, reaction}`` for a reaction.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from meshclaw.errors import ConfigError

Kind = Literal["slack", "matrix"]
SLACK_API = "https://slack.com/api/"
UNTRUSTED_META_KEY = "io.meshclaw/untrusted"


class ChatSettings(BaseSettings):
    """Which chat system, where, and the bot's token (``MESHCLAW_CHAT_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESHCLAW_CHAT_")

    kind: Kind = "slack"
    """``slack`` (Slack's Web API or anything speaking it) or ``matrix`` (the Matrix
    Client-Server API)."""
    token: SecretStr
    """Slack: the bot token (``xoxb-…``). Matrix: an access token (or an application
    service's ``as_token`` together with ``user_id``)."""
    base_url: str = SLACK_API
    """Slack's Web API root; for Matrix the homeserver's base URL (``https://matrix.example``)."""
    user_id: str | None = None
    """Matrix: the user to act as with an application service's token (the spec's
    identity assertion, ``?user_id=``); unset, the token's own user."""
    org_servers: Annotated[list[str], NoDecode] = []
    """Matrix: the homeservers whose users are the org's, comma-separated. Messages from
    users of any other server (federation) are untrusted. Empty: the bot's own server."""
    timeout_seconds: int = 30

    @field_validator("org_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [str(s).strip().lower() for s in value if str(s).strip()]
        return value

    def check(self) -> None:
        """What each kind needs; a clear error instead of a failing first call."""
        if self.kind == "matrix":
            if self.base_url.rstrip("/") == SLACK_API.rstrip("/"):
                raise ConfigError(
                    "MESHCLAW_CHAT_BASE_URL (the Matrix homeserver) is required for matrix"
                )
            if self.user_id is not None and not _matrix_user(self.user_id):
                raise ConfigError(
                    f"MESHCLAW_CHAT_USER_ID must be a Matrix user id (@name:server), "
                    f"not {self.user_id!r}"
                )


def _matrix_user(value: str) -> bool:
    local, sep, server = value.removeprefix("@").partition(":")
    return value.startswith("@") and bool(local) and bool(sep) and bool(server)


class ChatError(ToolError):
    """A chat operation failed; the text reaches the agent (never the token)."""


class Backend(Protocol):
    """One chat system behind the chat tools."""

    async def channels(self) -> list[dict[str, Any]]: ...

    async def history(self, channel: str, limit: int) -> list[dict[str, Any]]: ...

    async def thread(self, channel: str, ts: str) -> list[dict[str, Any]]: ...

    async def post(
        self, channel: str, text: str, thread_ts: str | None, key: str | None
    ) -> dict[str, Any]: ...

    async def react(self, channel: str, ts: str, emoji: str) -> dict[str, Any]: ...


def message(
    *,
    ts: str | None,
    user: str | None,
    text: str,
    thread_ts: str | None = None,
    reply_count: int = 0,
    reactions: dict[str, int] | None = None,
    outside_org: bool = False,
) -> dict[str, Any]:
    """One read message, the same for every backend; empty parts are left out."""
    out: dict[str, Any] = {
        "ts": ts,
        "user": user,
        "text": text,
        "thread_ts": thread_ts,
        "reply_count": reply_count,
        "reactions": reactions or {},
        "outside_org": outside_org,
    }
    return {k: v for k, v in out.items() if v not in (None, {}, 0, False) or k == "text"}
