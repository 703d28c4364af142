"""The built-in ``calendar`` MCP server: a CalDAV calendar (list, free/busy, create, update,
cancel, invite) through the ``caldav`` client.

Settings come from ``MESHCLAW_CALENDAR_*`` (``CalendarSettings``). Times are ISO 8601;
a time without an offset is taken as UTC. Writes return **evidence**: the event's UID,
its URL, and its SEQUENCE after the change. Creating is idempotent per run step: the UID
is derived from the caller's idempotency key, and an event that already exists is
returned instead of created twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, TypeVar
from uuid import uuid4

import anyio
import icalendar
from caldav.collection import Calendar
from caldav.davclient import DAVClient
from caldav.lib.error import DAVError, NotFoundError
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

IDEMPOTENCY_META_KEY = "io.meshclaw/idempotency-key"
READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
CANCEL = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True)

T = TypeVar("T")


class CalendarSettings(BaseSettings):
    """Which CalDAV server and calendar, as whom (``MESHCLAW_CALENDAR_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESHCLAW_CALENDAR_")

    url: str
    """The CalDAV server (or the principal's URL)."""
    username: str
    password: SecretStr
    calendar: str = "Work"
    """Display name of the default calendar."""
    create_calendar: bool = False
    """Create the default calendar if it does not exist."""
    organizer: str | None = None
    """ORGANIZER of new events; defaults to the username when that is an address."""
    timeout_seconds: float = 30.0


class CalendarError(ToolError):
    """A calendar operation failed; the text reaches the agent (never the password)."""


def _time(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CalendarError(f"{name} is not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise CalendarError(f"unexpected time value {value!r}")


def _event_dict(component: Any, url: str | None = None) -> dict[str, Any]:
    attendees = component.get("attendee") or []
    if not isinstance(attendees, list):
        attendees = [attendees]
    end = component.get("dtend")
    return {
        "uid": str(component.get("uid")),
        "summary": str(component.get("summary", "")),
        "start": _iso(component.decoded("dtstart")),
        "end": _iso(component.decoded("dtend")) if end is not None else None,
        "location": str(component.get("location", "")),
        "description": str(component.get("description", "")),
        "status": str(component.get("status", "CONFIRMED")),
        "sequence": int(component.get("sequence", 0)),
        "attendees": [str(a).removeprefix("mailto:") for a in attendees],
        **({"url": url} if url else {}),
    }


class Calendars:
    """Blocking CalDAV operations; the MCP tools run them in worker threads."""

    def __init__(self, settings: CalendarSettings) -> None:
        self.settings = settings
        self._urls: dict[str, str] = {}
        """Calendar display name -> URL, found once."""

    def _client(self) -> Any:
        s = self.settings
        return DAVClient(
            url=s.url,
            username=s.username,
            password=s.password.get_secret_value(),
            timeout=int(s.timeout_seconds),
        )

    def _run(self, work: Callable[[Any], T]) -> T:
        s = self.settings
        try:
            with self._client() as client:
                return work(client)
        except CalendarError:
            raise
        except NotFoundError:
            self._urls.clear()  # a calendar may have gone: look it up again next time
            raise CalendarError("not found on the calendar server") from None
        except DAVError as exc:
            reason = getattr(exc, "reason", "") or type(exc).__name__
            if "401" in str(exc) or "Unauthorized" in str(reason):
                raise CalendarError(f"CalDAV login to {s.url} failed") from None
            raise CalendarError(f"CalDAV {s.url}: {reason}") from None
        except OSError as exc:
            raise CalendarError(f"cannot reach CalDAV {s.url}: {exc}") from None

    def _calendar(self, client: Any, name: str | None) -> Any:
        wanted = name or self.settings.calendar
        if wanted in self._urls:
            # Display names change rarely; finding one costs discovery round trips.
            return Calendar(client=client, url=self._urls[wanted], name=wanted)
        principal = client.principal()
        found = None
        for calendar in principal.get_calendars():
            if calendar.get_display_name() == wanted:
                found = calendar
                break
        if found is None and name is None and self.settings.create_calendar:
            found = principal.make_calendar(name=wanted)
        if found is None:
            raise CalendarError(f"no calendar named {wanted!r}")
        self._urls[wanted] = str(found.url)
        return found

    def _event(self, calendar: Any, uid: str) -> Any:
        try:
            return calendar.get_event_by_uid(uid)
        except NotFoundError:
            raise CalendarError(f"no event with UID {uid!r}") from None

    def list_calendars(self) -> list[dict[str, Any]]:
        def work(client: Any) -> list[dict[str, Any]]:
            return [
                {"name": c.get_display_name(), "url": str(c.url)}
                for c in client.principal().get_calendars()
            ]

        return self._run(work)

    def events(self, start: datetime, end: datetime, name: str | None) -> list[dict[str, Any]]:
        def work(client: Any) -> list[dict[str, Any]]:
            calendar = self._calendar(client, name)
            found = calendar.search(start=start, end=end, event=True, expand=True)
            events = [_event_dict(e.icalendar_component, str(e.url)) for e in found]
            return sorted(events, key=lambda e: e["start"])

        return self._run(work)

    def create(
        self, uid: str, fields: dict[str, Any], attendees: list[str], name: str | None
    ) -> dict[str, Any]:
        def work(client: Any) -> dict[str, Any]:
            calendar = self._calendar(client, name)
            try:
                existing = calendar.get_event_by_uid(uid)
            except NotFoundError:
                existing = None
            if existing is not None:
                return _evidence(existing, calendar) | {"duplicate": True}
            event = icalendar.Event()
            event.add("uid", uid)
            event.add("dtstamp", datetime.now(UTC))
            event.add("sequence", 0)
            event.add("status", "CONFIRMED")
            for key, value in fields.items():
                if value not in (None, ""):
                    event.add(key, value)
            organizer = self._organizer()
            if organizer:
                event.add("organizer", icalendar.vCalAddress(f"mailto:{organizer}"))
            for address in attendees:
                event.add("attendee", _attendee(address))
            wrapper = icalendar.Calendar()
            wrapper.add("prodid", "-//MeshClaw//calendar//EN")
            wrapper.add("version", "2.0")
            wrapper.add_component(event)
            # A new event starts at SEQUENCE 0; no_overwrite guards a UID taken meanwhile.
            ical = wrapper.to_ical().decode()
            saved = calendar.add_event(ical, no_overwrite=True, increase_seqno=False)
            return _evidence(saved, calendar) | {"duplicate": False}

        return self._run(work)

    def _organizer(self) -> str | None:
        organizer = self.settings.organizer or self.settings.username
        return organizer if "@" in organizer else None

    def change(
        self, uid: str, name: str | None, apply: Callable[[Any], list[str]]
    ) -> dict[str, Any]:
        """Apply ``apply`` to the event's VEVENT and save it (SEQUENCE goes up); evidence back."""

        def work(client: Any) -> dict[str, Any]:
            calendar = self._calendar(client, name)
            event = self._event(calendar, uid)
            component = event.icalendar_component
            changed = apply(component)
            event.save(increase_seqno=True)  # RFC 5545: a significant change bumps SEQUENCE
            return _evidence(event, calendar) | {"changed": changed}

        return self._run(work)


def _attendee(address: str) -> Any:
    if "@" not in address:
        raise CalendarError(f"not a mail address: {address!r}")
    attendee = icalendar.vCalAddress(f"mailto:{address}")
    attendee.params["PARTSTAT"] = icalendar.vText("NEEDS-ACTION")
    attendee.params["RSVP"] = icalendar.vText("TRUE")
    attendee.params["ROLE"] = icalendar.vText("REQ-PARTICIPANT")
    return attendee


def _evidence(event: Any, calendar: Any) -> dict[str, Any]:
    component = event.icalendar_component
    return {
        "uid": str(component.get("uid")),
        "url": str(event.url),
        "calendar": calendar.name or calendar.get_display_name(),
        "sequence": int(component.get("sequence", 0)),
        "status": str(component.get("status", "CONFIRMED")),
    }


def _uid(ctx: Context[Any, Any]) -> str:
    meta = ctx.request_context.meta or {}
    key = meta.get(IDEMPOTENCY_META_KEY) if isinstance(meta, dict) else None
    if isinstance(key, str) and key.replace("_", "").isalnum():
        return f"{key}@meshclaw"
    return f"{uuid4()}@meshclaw"


def _set(component: Any, key: str, value: Any) -> None:
    component.pop(key, None)
    component.add(key, value)


async def _run(call: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(call)


def build(settings: CalendarSettings | None = None) -> MCPServer:
    cfg = settings or CalendarSettings()  # read from the environment
    cals = Calendars(cfg)
    server = MCPServer(
        "meshclaw-calendar",
        instructions="A CalDAV calendar: events, free/busy, create, update, cancel, invite.",
        log_level="WARNING",
    )

    @server.tool(description="The calendars of this account.", annotations=READ)
    async def list_calendars() -> dict[str, Any]:
        return {"calendars": await _run(cals.list_calendars)}

    @server.tool(description="Events between two ISO 8601 times.", annotations=READ)
    async def list_events(start: str, end: str, calendar: str | None = None) -> dict[str, Any]:
        span = _time(start, "start"), _time(end, "end")
        return {"events": await _run(partial(cals.events, *span, calendar))}

    @server.tool(
        description="Busy and free intervals between two ISO 8601 times.", annotations=READ
    )
    async def free_busy(start: str, end: str, calendar: str | None = None) -> dict[str, Any]:
        lo, hi = _time(start, "start"), _time(end, "end")
        events = await _run(partial(cals.events, lo, hi, calendar))
        busy: list[tuple[datetime, datetime]] = []
        for event in events:
            if event["status"] == "CANCELLED" or event["end"] is None:
                continue
            a = max(_as_datetime(datetime.fromisoformat(event["start"])), lo)
            b = min(_as_datetime(datetime.fromisoformat(event["end"])), hi)
            if a < b:
                busy.append((a, b))
        merged: list[list[datetime]] = []
        for a, b in sorted(busy):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        free, cursor = [], lo
        for a, b in merged:
            if cursor < a:
                free.append({"start": cursor.isoformat(), "end": a.isoformat()})
            cursor = max(cursor, b)
        if cursor < hi:
            free.append({"start": cursor.isoformat(), "end": hi.isoformat()})
        return {
            "busy": [{"start": a.isoformat(), "end": b.isoformat()} for a, b in merged],
            "free": free,
        }

    @server.tool(description="Create an event, optionally inviting attendees.", annotations=WRITE)
    async def create_event(
        summary: str,
        start: str,
        end: str,
        ctx: Context[Any, Any],
        description: str = "",
        location: str = "",
        attendees: list[str] | None = None,
        calendar: str | None = None,
    ) -> dict[str, Any]:
        lo, hi = _time(start, "start"), _time(end, "end")
        if hi <= lo:
            raise CalendarError("end must be after start")
        fields = {
            "summary": summary,
            "dtstart": lo,
            "dtend": hi,
            "description": description,
            "location": location,
        }
        for address in attendees or []:
            _attendee(address)  # reject bad addresses before anything is written
        evidence = await _run(partial(cals.create, _uid(ctx), fields, attendees or [], calendar))
        return {"evidence": evidence}

    @server.tool(description="Change an event's title, time, place or notes.", annotations=WRITE)
    async def update_event(
        uid: str,
        summary: str | None = None,
        start: str | None = None,
        end: str | None = None,
        description: str | None = None,
        location: str | None = None,
        calendar: str | None = None,
    ) -> dict[str, Any]:
        updates: dict[str, Any] = {
            "summary": summary,
            "dtstart": _time(start, "start") if start else None,
            "dtend": _time(end, "end") if end else None,
            "description": description,
            "location": location,
        }
        updates = {k: v for k, v in updates.items() if v is not None}
        if not updates:
            raise CalendarError("nothing to change")

        def apply(component: Any) -> list[str]:
            for key, value in updates.items():
                _set(component, key, value)
            return sorted(updates)

        return {"evidence": await _run(partial(cals.change, uid, calendar, apply))}

    @server.tool(description="Cancel an event (it stays, marked CANCELLED).", annotations=CANCEL)
    async def cancel_event(uid: str, calendar: str | None = None) -> dict[str, Any]:
        def apply(component: Any) -> list[str]:
            _set(component, "status", "CANCELLED")
            return ["status"]

        return {"evidence": await _run(partial(cals.change, uid, calendar, apply))}

    @server.tool(description="Invite more attendees to an event.", annotations=WRITE)
    async def invite(uid: str, attendees: list[str], calendar: str | None = None) -> dict[str, Any]:
        new = [_attendee(a) for a in attendees]

        def apply(component: Any) -> list[str]:
            present = component.get("attendee") or []
            present = present if isinstance(present, list) else [present]
            known = {str(a).lower() for a in present}
            for attendee in new:
                if str(attendee).lower() not in known:
                    component.add("attendee", attendee)
            return ["attendee"]

        evidence = await _run(partial(cals.change, uid, calendar, apply))
        return {"evidence": evidence | {"invited": attendees}}

    return server
