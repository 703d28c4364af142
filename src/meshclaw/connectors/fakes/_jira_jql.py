"""The small JQL subset the Jira fake understands, parsed into a filter and a sort.

``field op value`` clauses joined by ``AND``, then an optional ``ORDER BY field [ASC|DESC],
...``. Fields: ``project``, ``key``/``issuekey``, ``status``, ``statusCategory``,
``resolution``, ``labels``, ``reporter``, ``assignee``, ``issuetype``/``type`` (``=``,
``!=``, ``IS [NOT] EMPTY``) and ``text``, ``summary``, ``description``, ``comment``
(``~``, ``!~``: every word of the value, case-insensitively). Anything else (``OR``,
parentheses, ``IN``, functions, an unknown field) is a ``JqlError`` whose message reads
like Jira's, with the line and character where it stopped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

EQUALITY = {"project", "key", "issuekey", "status", "statuscategory", "resolution", "labels",
            "reporter", "assignee", "issuetype", "type"}  # fmt: skip
TEXT = {"text", "summary", "description", "comment"}
SORTABLE = {"created", "updated", "key", "issuekey", "status", "summary", "resolutiondate"}
_TOKEN = re.compile(
    r"""\s*(?:(?P<quoted>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<op>!=|!~|=|~|>=|<=|>|<)"""
    r"""|(?P<punct>[(),])|(?P<word>[^\s"'=!~<>(),]+))"""
)


class JqlError(ValueError):
    """JQL the fake does not understand; the message is Jira's ``errorMessages`` entry."""


@dataclass(frozen=True)
class Token:
    text: str
    kind: str
    at: int  # 1-based character


@dataclass(frozen=True)
class Clause:
    field: str
    op: str  # "=", "!=", "~", "!~", "is", "is not"
    value: str | None


@dataclass(frozen=True)
class Query:
    clauses: tuple[Clause, ...]
    order: tuple[tuple[str, bool], ...]  # (field, descending)

    @property
    def bounded(self) -> bool:
        """Jira Cloud's enhanced search refuses a query without any restriction."""
        return bool(self.clauses)


def _tokens(jql: str) -> list[Token]:
    found: list[Token] = []
    at = 0
    while at < len(jql):
        match = _TOKEN.match(jql, at)
        if match is None or match.end() == at:
            if jql[at:].strip():
                raise JqlError(f"Error in the JQL Query: The character '{jql[at]}' is a reserved "
                               f"JQL character. (line 1, character {at + 1})")  # fmt: skip
            break
        kind = match.lastgroup or "word"
        text = match.group(kind)
        start = match.start(kind)
        if kind == "quoted":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        found.append(Token(text, kind, start + 1))
        at = match.end()
    return found


def parse(jql: str) -> Query:
    """A ``Query`` for ``jql``, or a ``JqlError`` saying where it stopped making sense."""
    tokens = _tokens(jql)
    clauses: list[Clause] = []
    order: list[tuple[str, bool]] = []
    i = 0

    def at(index: int) -> Token | None:
        return tokens[index] if index < len(tokens) else None

    def unexpected(token: Token | None, wanted: str) -> JqlError:
        if token is None:
            return JqlError(f"Error in the JQL Query: Expecting {wanted} but reached the end of "
                            "the query.")  # fmt: skip
        return JqlError(f"Error in the JQL Query: Expecting {wanted} but got '{token.text}'. "
                        f"(line 1, character {token.at})")  # fmt: skip

    def keyword(token: Token | None, *words: str) -> bool:
        return token is not None and token.kind == "word" and token.text.upper() in words

    while i < len(tokens) and not keyword(at(i), "ORDER"):
        if clauses:
            if not keyword(at(i), "AND"):
                raise unexpected(at(i), "'AND' (this fake has no 'OR')")
            i += 1
        field_token = at(i)
        if field_token is None or field_token.kind not in ("word", "quoted"):
            raise unexpected(field_token, "a field name")
        field = field_token.text.lower()
        if field not in EQUALITY | TEXT:
            raise JqlError(f"Field '{field_token.text}' does not exist or you do not have "
                           "permission to view it.")  # fmt: skip
        i += 1
        op_token = at(i)
        if keyword(op_token, "IS"):
            negated = keyword(at(i + 1), "NOT")
            i += 2 if negated else 1
            if not keyword(at(i), "EMPTY", "NULL"):
                raise unexpected(at(i), "'EMPTY'")
            clauses.append(Clause(field, "is not" if negated else "is", None))
            i += 1
            continue
        if op_token is None or op_token.kind != "op" or op_token.text not in ("=", "!=", "~", "!~"):
            raise unexpected(op_token, "an operator (=, !=, ~, !~, IS)")
        allowed = ("~", "!~") if field in TEXT else ("=", "!=")
        if op_token.text not in allowed:
            raise JqlError(f"The operator '{op_token.text}' is not supported by the "
                           f"'{field_token.text}' field.")  # fmt: skip
        value_token = at(i + 1)
        if value_token is None or value_token.kind not in ("word", "quoted"):
            raise unexpected(value_token, "a value")
        follows = at(i + 2)
        if follows is not None and follows.kind == "punct" and follows.text == "(":
            raise JqlError(
                f"Error in the JQL Query: this fake knows no JQL function ('{value_token.text}')."
                f" (line 1, character {value_token.at})"
            )
        clauses.append(Clause(field, op_token.text, value_token.text))
        i += 2
    if i < len(tokens):
        if not keyword(at(i + 1), "BY"):
            raise unexpected(at(i + 1), "'BY'")
        i += 2
        while True:
            field_token = at(i)
            if field_token is None or field_token.text.lower() not in SORTABLE:
                raise unexpected(
                    field_token, f"a field to order by ({', '.join(sorted(SORTABLE))})"
                )
            descending = False
            i += 1
            if keyword(at(i), "ASC", "DESC"):
                descending = tokens[i].text.upper() == "DESC"
                i += 1
            order.append((field_token.text.lower(), descending))
            token = at(i)
            if token is None:
                break
            if token.kind != "punct" or token.text != ",":
                raise unexpected(token, "',' or the end of the query")
            i += 1
    return Query(tuple(clauses), tuple(order))


def matches(query: Query, value_of: Callable[[str], list[str] | str | None]) -> bool:
    """Whether one issue passes every clause; ``value_of(field)`` reads the issue: a
    string (or None when empty) for equality fields, a list for ``labels`` and for the
    names a person goes by, the searchable text for text fields."""
    for clause in query.clauses:
        value = value_of(clause.field)
        present = [v.lower() for v in value] if isinstance(value, list) else (
            [value.lower()] if value else []
        )  # fmt: skip
        if clause.op in ("is", "is not"):
            if (clause.op == "is") == bool(present):
                return False
            continue
        wanted = (clause.value or "").lower()
        if clause.op in ("~", "!~"):
            text = " ".join(present)
            words = re.findall(r"\w+", wanted)
            if all(word in text for word in words) != (clause.op == "~"):
                return False
            continue
        if clause.field == "resolution" and wanted in ("unresolved", "empty", "null"):
            hit = not present
        else:
            hit = wanted in present
        if hit != (clause.op == "="):
            return False
    return True
