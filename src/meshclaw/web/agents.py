"""Dashboard pages: agents, their versions and diffs, the builder form and test runs.

The builder (``/ui/agents/new``, ``/ui/agents/{name}/edit``) turns its fields into a spec
(``_agent_form``), validates it like ``meshclaw agent validate`` and saves it as a new
version through ``platform.agents.save``. On any problem nothing is saved and the form
comes back with the user's input and each message next to its field.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw.errors import NotFoundError, PermissionDenied, SpecError
from meshclaw.spec.models import OUTCOME_TYPES
from meshclaw.spec.registry import AgentInfo
from meshclaw.web._agent_form import AgentForm, FormErrors, field_label
from meshclaw.web._pages import PREFIX, FormDep, Viewer, ViewerDep, render

router = APIRouter()

RECENT_RUNS = 10
MAX_INPUT = 20_000
"""Characters of test-run input (a prompt, not a document upload)."""


@router.get("/agents", response_class=HTMLResponse)
def agent_list(request: Request, viewer: ViewerDep, archived: str | None = None) -> HTMLResponse:
    show_archived = archived == "1"
    agents = viewer.platform.agents.list_agents(viewer.caller, include_archived=show_archived)
    return render(request, "agents.html", viewer, agents=agents, show_archived=show_archived)


@router.get("/agents/new", response_class=HTMLResponse)
def new_agent(request: Request, viewer: ViewerDep) -> HTMLResponse:
    return _form_page(request, viewer, AgentForm.blank(viewer.caller.handle))


@router.post("/agents/new", response_class=HTMLResponse)
def create_agent(request: Request, viewer: ViewerDep, fields: FormDep) -> Response:
    return _save(request, viewer, fields, None)


@router.get("/agents/{name}", response_class=HTMLResponse)
def agent_page(
    request: Request,
    viewer: ViewerDep,
    name: str,
    old: str | None = None,
    new: str | None = None,
    saved: str | None = None,
) -> HTMLResponse:
    flash = _SAVED.get(saved) if saved is not None else None
    return _agent_view(request, viewer, name, old, new, flash=flash)


_SAVED = {
    "unchanged": "Nothing changed: the spec is the same as the latest version.",
    "new": "Saved as a new version.",
    "archived": "Archived: it starts no runs and its triggers stop. Its history stays.",
    "restored": "Restored: it runs again and its triggers fire.",
}


@router.post("/agents/{name}/archive")
def archive_agent(request: Request, viewer: ViewerDep, name: str, _: FormDep) -> Response:
    agent = viewer.platform.agents.archive(viewer.caller, name)
    return RedirectResponse(f"{PREFIX}/agents/{agent.name}?saved=archived", status_code=303)


@router.post("/agents/{name}/restore")
def restore_agent(request: Request, viewer: ViewerDep, name: str, _: FormDep) -> Response:
    agent = viewer.platform.agents.restore(viewer.caller, name)
    return RedirectResponse(f"{PREFIX}/agents/{agent.name}?saved=restored", status_code=303)


@router.get("/agents/{name}/edit", response_class=HTMLResponse)
def edit_agent(request: Request, viewer: ViewerDep, name: str) -> HTMLResponse:
    agent = viewer.platform.agents.get(viewer.caller, name)
    form = AgentForm.from_spec(agent.spec).with_spare_rows()
    return _form_page(request, viewer, form, agent)


@router.post("/agents/{name}/edit", response_class=HTMLResponse)
def update_agent(request: Request, viewer: ViewerDep, name: str, fields: FormDep) -> Response:
    agent = viewer.platform.agents.get(viewer.caller, name)
    return _save(request, viewer, fields, agent)


@router.post("/agents/{name}/runs")
def test_run(request: Request, viewer: ViewerDep, name: str, fields: FormDep) -> Response:
    """Start a run of the latest version by hand, then watch it on the run page."""
    platform = viewer.platform
    user_input = fields.get("input", "").replace("\r\n", "\n")
    if len(user_input) > MAX_INPUT:
        error = f"The input is too long: at most {MAX_INPUT:,} characters."
        return _agent_view(request, viewer, name, run_input=user_input, input_error=error)
    run = platform.runs.create(viewer.caller, name, user_input, trigger="manual")
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.dispatch(run.id)
    return RedirectResponse(f"{PREFIX}/runs/{run.id}", status_code=303)


# -- helpers ----------------------------------------------------------------------------


def _save(
    request: Request, viewer: Viewer, fields: dict[str, str], existing: AgentInfo | None
) -> Response:
    form = AgentForm.from_fields(fields)
    if existing is not None:
        form.name = existing.name  # an agent's name is its identity: not editable
    if fields.get("add") == "rows":
        return _form_page(request, viewer, form.with_spare_rows(), existing)
    platform, caller = viewer.platform, viewer.caller
    status = 422
    try:
        spec = form.to_spec()
        if existing is None and _exists(viewer, spec.name):
            errors = FormErrors()
            errors.add("name", f"an agent named {spec.name!r} exists already; edit it instead")
            raise errors
        agent, changed = platform.agents.save(caller, spec)
    except FormErrors as exc:
        errors = exc
    except SpecError as exc:  # checks that need the store, e.g. an unknown owner
        errors = form.errors_for(exc.issues)
    except PermissionDenied as exc:
        errors, status = FormErrors(), 403
        errors.add(None, str(exc).capitalize() + ".")
    else:
        saved = "new" if changed else "unchanged"
        diff = (
            f"&old={agent.version - 1}&new={agent.version}" if changed and agent.version > 1 else ""
        )
        url = f"{PREFIX}/agents/{agent.name}?saved={saved}{diff}"
        return RedirectResponse(url, status_code=303)
    return _form_page(request, viewer, form, existing, errors, status)


def _exists(viewer: Viewer, name: str) -> bool:
    try:
        viewer.platform.agents.get(viewer.caller, name)
    except NotFoundError:
        return False
    return True


def _form_page(
    request: Request,
    viewer: Viewer,
    form: AgentForm,
    agent: AgentInfo | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    errors = errors or FormErrors()
    action = f"{PREFIX}/agents/{agent.name}/edit" if agent else f"{PREFIX}/agents/new"
    return render(
        request,
        "agents_form.html",
        viewer,
        status_code=status,
        form=form,
        agent=agent,
        action=action,
        errors=errors.fields,
        labels={name: field_label(name) for name in errors.fields},
        general=errors.general,
        error_count=errors.count(),
        providers=sorted(viewer.platform.provider_configs),
        outcome_types=OUTCOME_TYPES,
    )


def _version_number(text: str | None, numbers: list[int]) -> int | None:
    if text is None or not (text.isascii() and text.strip().isdigit()):
        return None
    number = int(text)
    return number if number in numbers else None


def _agent_view(
    request: Request,
    viewer: Viewer,
    name: str,
    old: str | None = None,
    new: str | None = None,
    *,
    flash: str | None = None,
    run_input: str = "",
    input_error: str | None = None,
) -> HTMLResponse:
    platform, caller = viewer.platform, viewer.caller
    agent = platform.agents.get(caller, name)
    versions = platform.agents.versions(caller, agent.id)
    numbers = [v.version for v in versions]
    diff, diff_error = None, None
    old_v, new_v = _version_number(old, numbers), _version_number(new, numbers)
    if old is not None or new is not None:
        if old_v is None or new_v is None:
            diff_error = f"Choose two versions between 1 and {agent.version}."
        else:
            diff = platform.agents.diff(caller, agent.id, old_v, new_v)
    return render(
        request,
        "agents_view.html",
        viewer,
        status_code=422 if input_error else 200,
        agent=agent,
        versions=list(reversed(versions)),
        spec_yaml=versions[-1].spec_yaml,
        old=old_v or max(agent.version - 1, 1),
        new=new_v or agent.version,
        diff=diff,
        diff_lines=diff.splitlines() if diff else [],
        diff_error=diff_error,
        runs=platform.runs.find(caller, agent=agent.id, limit=RECENT_RUNS),
        flash=flash,
        run_input=run_input,
        input_error=input_error,
        max_input=MAX_INPUT,
    )
