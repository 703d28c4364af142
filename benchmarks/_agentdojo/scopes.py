"""A least-privilege agent spec per AgentDojo user task, from the task alone.

The builder of an agent for one task grants what the task involves and nothing else:

* only the tools the task's ground truth calls, ``write`` only for write tools;
* the steering arguments (``catalog``: recipients, IBANs, channels, URLs, file ids)
  pinned to the values the task involves, for reads as well as writes;
* date/time arguments pinned to the day the task names (``2024-05-19*``);
* provenance, on every write grant: once untrusted content is in the run, a link
  (``#link``) the task does not itself involve (its prompt or its own calls) needs
  approval. This replaces the blanket "any write after untrusted content needs
  approval" for these grants (``ToolGrant.after_untrusted``).

Everything comes from the user task's prompt and ground truth; nothing is read from
the injection tasks, so no attacker value is known here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from benchmarks._agentdojo.catalog import OUTSIDE_TOOL, tool

from meshclaw.policy.arguments import LINK, flatten_arguments, links_in
from meshclaw.spec.models import AgentSpec, Budget, ModelRef, ToolGrant, ToolScope

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}")
OWNER = "usr_agentdojo"


def plain(arguments: Any) -> dict[str, Any]:
    """JSON-shaped arguments (AgentDojo's may hold pydantic values)."""
    return dict(json.loads(json.dumps(dict(arguments), default=str)))


def spec_for(
    suite: str,
    task_id: str,
    prompt: str,
    calls: list[tuple[str, dict[str, Any]]],
    *,
    allow_list_only: bool = False,
    blanket_gate: bool = False,
    outside_read: bool = False,
    agent_name: str | None = None,
    model: str = "replay",
    max_steps: int = 20,
) -> AgentSpec:
    """The spec an honest builder writes for this task.

    ``allow_list_only``: the baseline, the same tools and scopes with no argument pins
    and no provenance rule (``after_untrusted: {}``), i.e. a tool-level allow-list.
    ``blanket_gate``: the same pins, but write grants declare no ``after_untrusted``, so
    the compiler gives them the default gate: every write after untrusted content waits
    for a person (MeshClaw's only rule before provenance rules existed).
    ``outside_read``: also grant (read) the replay's outside message tool, through which
    a hijacked run's injection arrives (``server``). ``agent_name``, ``model`` and ``max_steps``
    only name the agent and its scripted conversation and give it turns enough; none of
    them is a policy matter.
    """
    order: list[str] = []
    pins: dict[str, dict[str, set[str]]] = {}
    links: dict[str, set[str]] = {}
    prompt_links = set(links_in(prompt))
    for name, arguments in calls:
        declared = tool(suite, name)
        if name not in pins:
            order.append(name)
            pins[name] = {}
            links[name] = set(prompt_links)
        for arg, value in flatten_arguments(arguments):
            if arg == LINK:
                links[name].add(value)
            elif arg in declared.steer:
                pins[name].setdefault(arg, set()).add(value)
            elif arg in declared.when and DAY.match(value):
                pins[name].setdefault(arg, set()).add(value[:10] + "*")
    grants = []
    for name in order:
        declared = tool(suite, name)
        grants.append(
            ToolGrant(
                name=f"{suite}.{name}",
                scope=ToolScope.write if declared.write else ToolScope.read,
                arguments=None
                if allow_list_only
                else {a: sorted(v) for a, v in sorted(pins[name].items())} or None,
                after_untrusted=({} if allow_list_only else {LINK: sorted(links[name])})
                if declared.write and not blanket_gate
                else None,
            )
        )
    if outside_read:
        grants.append(ToolGrant(name=f"{suite}.{OUTSIDE_TOOL}", scope=ToolScope.read))
    return AgentSpec(
        name=agent_name or f"{suite}-{task_id.replace('_', '-')}",
        owner=OWNER,
        model=ModelRef(provider="scripted", model=model),
        instructions=prompt,
        tools=grants,
        budget=Budget(max_steps=max_steps),
    )
