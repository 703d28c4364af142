"""Printing for the CLI: JSON for scripts, Rich for people; errors to stderr."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from rich.console import Console

console = Console()
errors = Console(stderr=True)


def _default(value: Any) -> Any:
    from pydantic import BaseModel  # here: importing Pydantic costs every start ~50 ms

    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_default))


def print_json(value: Any) -> None:
    print(json.dumps(value, default=_default, indent=2, ensure_ascii=False))


def money(value: Decimal) -> str:
    return f"${value:.6f}"


def print_code(text: str, lexer: str) -> None:
    """Policy text, a spec or a diff: highlighted on a terminal, verbatim when piped.

    Rich crops code to the console's width, which is 80 columns when stdout is not a
    terminal; a policy copied from a pipe must be the whole policy.
    """
    if console.is_terminal:
        from rich.syntax import Syntax  # here: only a terminal needs the highlighter

        console.print(Syntax(text, lexer, background_color="default"))
    else:
        print(text)
