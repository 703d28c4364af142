"""Where each policy of a Cedar text starts: for error locations and ``explain``.

Cedar numbers the policies of a text ``policy0``, ``policy1``, ... in order, and its
parse errors carry no position. This scanner splits a text into statements the same
way (a ``;`` outside strings and comments ends one), so an error can name the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r'@id\(\s*"((?:[^"\\]|\\.)*)"\s*\)')


@dataclass(frozen=True, kw_only=True)
class Statement:
    index: int
    """Position in the text: Cedar's ``policy<index>``."""
    line: int
    """1-based line where the statement (including its annotations) starts."""
    text: str
    annotation_id: str | None
    """The ``@id("...")`` annotation, if any."""

    @property
    def label(self) -> str:
        return self.annotation_id or f"policy{self.index}"


def split_statements(text: str) -> list[Statement]:
    statements: list[Statement] = []
    start: int | None = None
    line = 1
    start_line = 1
    i = 0
    in_string = False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
            elif ch == "\n":
                line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif ch == "\n":
            line += 1
        elif not ch.isspace():
            if start is None:
                start, start_line = i, line
            if ch == '"':
                in_string = True
            elif ch == ";":
                body = text[start : i + 1]
                found = _ID.search(body)
                statements.append(
                    Statement(
                        index=len(statements),
                        line=start_line,
                        text=body,
                        annotation_id=found.group(1) if found else None,
                    )
                )
                start = None
        i += 1
    if start is not None:
        found = _ID.search(text[start:])
        statements.append(
            Statement(
                index=len(statements),
                line=start_line,
                text=text[start:],
                annotation_id=found.group(1) if found else None,
            )
        )
    return statements
