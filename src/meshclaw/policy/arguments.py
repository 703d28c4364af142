"""Tool-call arguments as Cedar sees them: flat ``name = value`` pairs and targets.

Nested objects become dotted names (``recipient.address``); every element of a list
is its own value under the list's name, so a constraint holds for *each* recipient.

Every link written inside any text value is also a value of its own, under the name
``#link`` (``LINK``): a message to an allowed recipient can still carry a phishing
link, so "links only to these sites" is a constraint like any other.
"""

from __future__ import annotations

import json
import re
from typing import Any

SUMMARY_CHARS = 500

LINK = "#link"
"""The pseudo-argument whose values are the links written in the call's arguments."""

_LINK = re.compile(
    r"(?<![\w@.-])(?:[a-z][a-z0-9+.-]*://[^\s<>\"'`]+|www\.[^\s<>\"'`]+"
    r"|(?:[a-z0-9-]+\.)+[a-z]{2,}/[^\s<>\"'`]*)",
    re.IGNORECASE,
)
"""A URL with a scheme, a ``www.`` host, or ``host.tld/path``; e-mail addresses and
file names (``notes.docx``) are not links."""


def links_in(text: str) -> list[str]:
    """The links written in ``text``, without trailing punctuation."""
    return [m.group(0).rstrip(".,;:!?)]}'\"") for m in _LINK.finditer(text)]


def flatten_arguments(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{name}.{key}" if name else str(key), item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(name, item)
        elif value is None:
            return
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        else:
            pairs.append((name, str(value)))
            if isinstance(value, str):
                links.extend(links_in(value))

    links: list[str] = []
    walk("", arguments)
    pairs.extend((LINK, link) for link in sorted(set(links)))
    return pairs


def call_targets(target_arguments: dict[str, str], arguments: dict[str, Any]) -> list[str]:
    """``kind:value`` for every value of the arguments a tool says name its targets.

    ``target_arguments`` maps an argument name (dotted for nested) to the target
    kind, e.g. ``{"ticket": "ticket"}`` turns ``{"ticket": "OPS-12"}`` into
    ``["ticket:OPS-12"]``.
    """
    targets: list[str] = []
    for name, value in flatten_arguments(arguments):
        kind = target_arguments.get(name)
        if kind is not None:
            targets.append(f"{kind}:{value}")
    return sorted(set(targets))


def summarize_arguments(arguments: dict[str, Any]) -> str:
    """Canonical JSON of the arguments, cut to ``SUMMARY_CHARS`` (for people and logs)."""
    text = json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
