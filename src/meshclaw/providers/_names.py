"""Tool names on the wire: ``connector.tool`` above, ``connector__tool`` below.

OpenAI functions, Anthropic tools and Bedrock tool specs all allow only
``[a-zA-Z0-9_-]`` in names, so the first ``.`` travels as ``__``.
"""

from __future__ import annotations

WIRE_SEPARATOR = "__"


def to_wire_name(name: str) -> str:
    return name.replace(".", WIRE_SEPARATOR, 1)


def from_wire_name(name: str) -> str:
    return name.replace(WIRE_SEPARATOR, ".", 1) if "." not in name else name
