"""Streaming reader and writer of event format v1 (JSON Lines).

``EventReader`` yields typed events one line at a time, in constant memory. A line that
is not valid JSON, is not an object of format v1, or repeats an earlier ``id`` is
*reported* (``ReadReport.problems``: line number and reason) and skipped; it is never
dropped silently. Blank lines are ignored. Texts become fingerprints (``TextPrint``)
and are dropped unless ``retain_texts`` is set.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from meshclaw.events._fingerprint import fingerprint
from meshclaw.events._models import Event, Feedback, LlmCall, Outcome, Run, ToolCall

MAX_PROBLEMS_KEPT = 1000
"""Problems beyond this many are counted but not kept (a file may be all garbage)."""

_KNOWN_FIELDS = frozenset(
    {"kind"}
    | {f for cls in (Run, LlmCall, ToolCall, Outcome, Feedback) for f in cls.__struct_fields__}
)


@dataclass(frozen=True, kw_only=True)
class LineProblem:
    """One skipped line."""

    line: int
    """1-based line number in the input."""
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(kw_only=True)
class ReadReport:
    """What a read saw: lines, events accepted, and every line skipped with its reason."""

    lines: int = 0
    """Lines read, blank ones included."""
    events: int = 0
    """Events accepted."""
    skipped: int = 0
    """Lines skipped because they were malformed (``problems`` lists the first ones)."""
    problems: list[LineProblem] = field(default_factory=list)

    def add_problem(self, line: int, message: str) -> None:
        self.skipped += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(LineProblem(line=line, message=message))

    def merge(self, other: ReadReport) -> None:
        self.lines += other.lines
        self.events += other.events
        self.skipped += other.skipped
        room = MAX_PROBLEMS_KEPT - len(self.problems)
        self.problems.extend(other.problems[: max(room, 0)])

    def summary(self) -> str:
        text = f"{self.events} events from {self.lines} lines"
        if self.skipped:
            text += f"; {self.skipped} malformed line(s) skipped"
        return text


def _open(source: str | Path | IO[bytes]) -> tuple[IO[bytes], bool]:
    if isinstance(source, str | Path):
        return open(source, "rb"), True
    return source, False


def _decode_error(exc: msgspec.DecodeError) -> str:
    message = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        return message.replace("`$.", "`")
    return f"malformed JSON: {message}"


class EventReader:
    """Iterate the events of a JSON Lines source; ``report`` fills in as you go.

    >>> reader = EventReader("events.jsonl")
    >>> for event in reader: ...
    >>> reader.report.problems   # [LineProblem(line=17, message=...)]
    """

    def __init__(
        self,
        source: str | Path | IO[bytes],
        *,
        retain_texts: bool = False,
        keep_unknown: bool = False,
        fingerprints: bool = True,
    ) -> None:
        self.source = source
        self.retain_texts = retain_texts
        """Keep ``task``/``prompt``/``output`` as well as their fingerprints."""
        self.keep_unknown = keep_unknown
        """Put fields the format does not name into ``event.extra``."""
        self.fingerprints = fingerprints
        """Compute ``TextPrint``s for texts (off: texts are simply dropped)."""
        self.report = ReadReport()

    def __iter__(self) -> Iterator[Event]:
        decoder = msgspec.json.Decoder(Event)
        raw_decoder = msgspec.json.Decoder(dict[str, Any])
        seen: set[str] = set()
        stream, owned = _open(self.source)
        report = self.report
        try:
            for number, line in enumerate(stream, start=1):
                report.lines += 1
                if not line.strip():
                    continue
                try:
                    event = decoder.decode(line)
                except msgspec.DecodeError as exc:
                    report.add_problem(number, _decode_error(exc))
                    continue
                if event.id in seen:
                    report.add_problem(number, f"duplicate id {event.id!r}")
                    continue
                seen.add(event.id)
                if self.keep_unknown:
                    extra = {
                        k: v for k, v in raw_decoder.decode(line).items() if k not in _KNOWN_FIELDS
                    }
                    if extra:
                        event.extra = extra
                self._texts(event)
                report.events += 1
                yield event
        finally:
            if owned:
                stream.close()

    def _texts(self, event: Event) -> None:
        if isinstance(event, Run):
            if event.task is not None:
                if self.fingerprints:
                    event.task_print = fingerprint(event.task)
                if not self.retain_texts:
                    event.task = None
        elif isinstance(event, LlmCall):
            if event.prompt is not None:
                if self.fingerprints:
                    event.prompt_print = fingerprint(event.prompt)
                if not self.retain_texts:
                    event.prompt = None
            if event.output is not None:
                if self.fingerprints:
                    event.output_print = fingerprint(event.output)
                if not self.retain_texts:
                    event.output = None


def read_events(
    source: str | Path | IO[bytes], *, retain_texts: bool = False
) -> tuple[list[Event], ReadReport]:
    """Read a whole (small) source into a list; see ``EventReader`` for streaming."""
    reader = EventReader(source, retain_texts=retain_texts)
    events = list(reader)
    return events, reader.report


_PRINT_FIELDS = ("task_print", "prompt_print", "output_print")


def event_to_dict(event: Event, *, prints: bool = False) -> dict[str, Any]:
    """The wire form of ``event`` (``kind`` included, unset optionals left out)."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    extra = data.pop("extra", None)
    if not prints:
        for name in _PRINT_FIELDS:
            data.pop(name, None)
    if extra:
        for key, value in extra.items():
            data.setdefault(key, value)
    return data


class EventWriter:
    """Write events (typed, or plain dicts already in wire form) as JSON Lines."""

    def __init__(self, dest: str | Path | IO[bytes], *, prints: bool = False) -> None:
        if isinstance(dest, str | Path):
            self._stream: IO[bytes] = open(dest, "wb")  # noqa: SIM115 - closed in close()
            self._owned = True
        else:
            self._stream, self._owned = dest, False
        self._prints = prints
        self._encoder = msgspec.json.Encoder()
        self._buffer = bytearray()
        self.count = 0

    def write(self, event: Event | dict[str, Any]) -> None:
        data = event if isinstance(event, dict) else event_to_dict(event, prints=self._prints)
        self._encoder.encode_into(data, self._buffer, -1)
        self._buffer.extend(b"\n")
        self.count += 1
        if len(self._buffer) > 1 << 20:
            self.flush()

    def write_all(self, events: Iterable[Event | dict[str, Any]]) -> None:
        for event in events:
            self.write(event)

    def flush(self) -> None:
        self._stream.write(self._buffer)
        self._buffer.clear()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._stream.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_events(dest: str | Path | IO[bytes], events: Iterable[Event | dict[str, Any]]) -> int:
    """Write ``events`` to ``dest``; returns how many were written."""
    with EventWriter(dest) as writer:
        writer.write_all(events)
        return writer.count


def loads(text: str | bytes) -> tuple[list[Event], ReadReport]:
    """Read events from an in-memory JSON Lines document (handy in tests)."""
    data = text.encode() if isinstance(text, str) else text
    return read_events(io.BytesIO(data))
