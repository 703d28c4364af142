"""Agent specs compiled to Cedar: least privilege as policies, not code.

For each grant of a spec this emits permits scoped to ``principal == Agent::"<id>"``:

* the model the spec names (``model.invoke``);
* the tool or connector (``tool.read``; also ``tool.write`` with a ``write`` grant);
* ``tool.argument`` permits: one for the values of unconstrained arguments, one per
  constrained argument (each value must match one of its globs), and one for targets
  (each target must match one of the grant's ``targets`` globs). Targets are what the
  connector's tool definition says its arguments name (``ToolDefinition.targets``);
  a tool that names none is limited by its grant's name, scope and arguments only.

An exact grant wins over a wildcard grant of the same connector (``mail.send`` write
beside ``mail.*`` read), so the wildcard's policies exclude the tools granted exactly.

Provenance (``after_untrusted``) compiles to *approval gates*: forbids whose ``@id``
starts with ``approval.``, on ``tool.argument``, that apply only while
``context.untrusted_content_seen``. A value outside the grant's globs then makes the
call need approval instead of being denied. A write grant that declares no
``after_untrusted`` gets the blanket gate ``approval.write-after-untrusted``: every
write after untrusted content needs approval (safe by default; a spec narrows it).
"""

from __future__ import annotations

from meshclaw.policy.roles import APPROVAL_PREFIX
from meshclaw.spec.models import AgentSpec, ToolGrant

ANY = "*"

WRITE_GATE = "approval.write-after-untrusted"


def _escape(value: str) -> str:
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(f"\\u{{{ord(ch):x}}}")
    return "".join(out)


def cedar_string(value: str) -> str:
    """A Cedar string literal."""
    return f'"{_escape(value)}"'


def like_pattern(glob: str) -> str:
    """A ``like`` pattern literal for a glob where ``*`` is the only wildcard.

    Every ``*`` stays a wildcard; any other character, quotes and backslashes
    included, matches itself.
    """
    return f'"{_escape(glob)}"'


def _matches_any(expr: str, globs: list[str]) -> str | None:
    """A condition that ``expr`` matches one of ``globs``; None when ``*`` matches all."""
    if ANY in globs:
        return None
    return "(" + " || ".join(f"{expr} like {like_pattern(g)}" for g in globs) + ")"


def _uid(kind: str, ident: str) -> str:
    return f"{kind}::{cedar_string(ident)}"


def _policy(
    ident: str,
    principal: str,
    action: str,
    scope: str,
    *conditions: str | None,
    effect: str = "permit",
) -> str:
    head = (
        f'@id({cedar_string(ident)})\n{effect} ({principal}, action == Action::"{action}", {scope})'
    )
    kept = [c for c in conditions if c]
    return head + (f"\nwhen {{ {' && '.join(kept)} }};" if kept else ";")


def _resource_scope(grant: ToolGrant, exact_siblings: list[str]) -> tuple[str, str | None]:
    """(scope clause, extra condition) for the tools this grant covers."""
    connector, tool = grant.name.split(".", 1)
    if tool != ANY:
        return f"resource == {_uid('Tool', grant.name)}", None
    if not exact_siblings:
        return f"resource in {_uid('Connector', connector)}", None
    names = ", ".join(cedar_string(n) for n in sorted(exact_siblings))
    return f"resource in {_uid('Connector', connector)}", f"!([{names}].contains(resource.name))"


def compile_spec(agent_id: str, spec: AgentSpec) -> str:
    """The Cedar policies that grant exactly what ``spec`` declares to ``agent_id``."""
    principal = f"principal == {_uid('Agent', agent_id)}"
    model = f"{spec.model.provider}/{spec.model.model}"
    out = [
        _policy(
            f"spec.model {model}", principal, "model.invoke", f"resource == {_uid('Model', model)}"
        )
    ]
    exact: dict[str, list[str]] = {}
    for grant in spec.tools:
        connector, tool = grant.name.split(".", 1)
        if tool != ANY:
            exact.setdefault(connector, []).append(tool)
    for grant in spec.tools:
        connector, tool = grant.name.split(".", 1)
        siblings = exact.get(connector, []) if tool == ANY else []
        scope, extra = _resource_scope(grant, siblings)
        tag = f"spec.grant {grant.name}"
        out.append(_policy(f"{tag} read", principal, "tool.read", scope, extra))
        if grant.scope == "write":
            out.append(_policy(f"{tag} write", principal, "tool.write", scope, extra))
        constrained = sorted((grant.arguments or {}).keys())
        names = ", ".join(cedar_string(n) for n in constrained)
        free = f"!([{names}].contains(context.name))" if constrained else None
        is_argument = 'context.kind == "argument"'
        out.append(
            _policy(f"{tag} arguments", principal, "tool.argument", scope, extra, is_argument, free)
        )
        for name in constrained:
            globs = (grant.arguments or {})[name]
            out.append(
                _policy(
                    f"{tag} argument {name}",
                    principal,
                    "tool.argument",
                    scope,
                    extra,
                    is_argument,
                    f"context.name == {cedar_string(name)}",
                    _matches_any("context.value", globs),
                )
            )
        out.append(
            _policy(
                f"{tag} targets",
                principal,
                "tool.argument",
                scope,
                extra,
                'context.kind == "target"',
                _matches_any("context.value", grant.targets),
            )
        )
        out.extend(_provenance_gates(grant, principal, scope, extra))
    return "\n\n".join(out) + "\n"


UNTRUSTED = "context.untrusted_content_seen && !context.approved"


def _provenance_gates(grant: ToolGrant, principal: str, scope: str, extra: str | None) -> list[str]:
    """Approval gates of one grant: what needs a person once untrusted content is in."""
    if grant.after_untrusted is None:
        if grant.scope == "write":
            return [
                _policy(
                    WRITE_GATE, principal, "tool.write", scope, extra, UNTRUSTED, effect="forbid"
                )
            ]
        return []
    gates = []
    for name, globs in sorted(grant.after_untrusted.items()):
        if ANY in globs:
            continue
        outside = (
            "!(" + " || ".join(f"context.value like {like_pattern(g)}" for g in globs) + ")"
            if globs
            else None
        )
        gates.append(
            _policy(
                f"{APPROVAL}spec.grant {grant.name} after-untrusted {name}",
                principal,
                "tool.argument",
                scope,
                extra,
                'context.kind == "argument"',
                f"context.name == {cedar_string(name)}",
                UNTRUSTED,
                outside,
                effect="forbid",
            )
        )
    return gates


APPROVAL = APPROVAL_PREFIX


def constrained_arguments(spec: AgentSpec, tool: str) -> frozenset[str]:
    """Argument names the grant covering ``tool`` constrains, for good or until untrusted."""
    grant = spec.grant_for(tool)
    if grant is None:
        return frozenset()
    return frozenset((grant.arguments or {}).keys()) | frozenset(
        (grant.after_untrusted or {}).keys()
    )
