"""The integrity review queue: findings with their evidence, confirmed or dismissed with a
reason.

Reviewers (the policy's ``integrity.review``) see the org's queue; anyone else sees the
findings about themselves only (``FindingsService`` decides, through Cedar). Evidence is
shown as tables of ids, times, counts and scores: it never holds raw texts, and a long
string is cut short in case a retained text slipped in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw.errors import ConflictError, PermissionDenied, UserError
from meshclaw.integrity.detectors import DETECTORS
from meshclaw.integrity.findings import (
    MAX_REASON,
    MOVE_TO,
    PENDING,
    PLATFORM_DETECTORS,
    STATUSES,
    FindingView,
    next_statuses,
)
from meshclaw.web._pages import PREFIX, FormDep, Viewer, ViewerDep, query_int, render

router = APIRouter()

PAGE_SIZES = (25, 50, 100)
STATUS_CHOICES = {
    "pending": ("Open or under review", PENDING),
    "open": ("Open", ("open",)),
    "under_review": ("Under review", ("under_review",)),
    "confirmed": ("Confirmed", ("confirmed",)),
    "dismissed": ("Dismissed", ("dismissed",)),
    "all": ("Any status", STATUSES),
}
DECISIONS = {
    "under_review": "Start a review (keeps the credit withheld while you look)",
    "confirmed": "Confirm: the evidence shows gaming",
    "dismissed": "Dismiss: honest use (the credit is restored)",
}
DONE = {
    "under_review": "The review has started.",
    "confirmed": "The finding is confirmed.",
    "dismissed": "The finding is dismissed; the person's credit is restored.",
}
_MAX_TEXT = 120
_LINKS = {"run_": "/runs/", "out_": "/insights/outcomes/"}


# -- evidence as tables ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Cell:
    text: str
    href: str | None = None


@dataclass(kw_only=True)
class EvidenceTable:
    """A list of records in the evidence (clusters, agents, weeks, links...)."""

    title: str
    columns: list[str]
    rows: list[list[list[Cell]]]


@dataclass(kw_only=True)
class Evidence:
    facts: list[tuple[str, list[Cell]]] = field(default_factory=list)
    """Single values and lists of ids: label -> cells."""
    tables: list[EvidenceTable] = field(default_factory=list)


def _label(key: str) -> str:
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _cell(value: Any) -> Cell:
    if isinstance(value, bool):
        return Cell(text="yes" if value else "no")
    if isinstance(value, float):
        return Cell(text=f"{value:,.3f}".rstrip("0").rstrip("."))
    if isinstance(value, int):
        return Cell(text=f"{value:,}")
    if value is None:
        return Cell(text="\N{EN DASH}")
    text = str(value)
    for prefix, path in _LINKS.items():
        if text.startswith(prefix) and " " not in text:
            return Cell(text=text, href=f"{PREFIX}{path}{text}")
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return Cell(text=text)


def _cells(value: Any) -> list[Cell]:
    if isinstance(value, list):
        return [_cell(v) if not isinstance(v, dict | list) else _cell(_flat(v)) for v in value]
    if isinstance(value, dict):
        return [_cell(_flat(value))]
    return [_cell(value)]


def _flat(value: Any) -> str:
    """A nested value in one line (``key: value; ...``), for a table cell."""
    if isinstance(value, dict):
        return "; ".join(f"{_label(k)}: {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    return _cell(value).text


def evidence_view(evidence: dict[str, Any]) -> Evidence:
    """Evidence as a reviewer reads it: facts first, then one table per list of records."""
    out = Evidence()
    for key, value in evidence.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns: list[str] = []
            for item in value:
                columns += [k for k in item if k not in columns]
            out.tables.append(
                EvidenceTable(
                    title=_label(key),
                    columns=[_label(c) for c in columns],
                    rows=[[_cells(item.get(c)) for c in columns] for item in value],
                )
            )
        elif isinstance(value, dict):
            for sub, inner in value.items():
                out.facts.append((f"{_label(key)}: {_label(sub).lower()}", _cells(inner)))
        else:
            out.facts.append((_label(key), _cells(value)))
    return out


# -- pages -------------------------------------------------------------------------------


def _choice(value: str | None, allowed: tuple[str, ...] | dict[str, Any], default: str) -> str:
    return value if value is not None and value in allowed else default


@router.get("/integrity", response_class=HTMLResponse)
def queue(
    request: Request,
    viewer: ViewerDep,
    status: str | None = None,
    detector: str | None = None,
    subject: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
) -> HTMLResponse:
    status_key = _choice(status, STATUS_CHOICES, "pending")
    detector_name = _choice(detector, (*DETECTORS, *PLATFORM_DETECTORS), "")
    size = query_int(limit, 50, PAGE_SIZES)
    start = query_int(offset, 0)
    subject = (subject or "").strip()[:200]
    page = viewer.platform.findings.find(
        viewer.caller,
        statuses=STATUS_CHOICES[status_key][1],
        detector=detector_name or None,
        subject=subject or None,
        limit=size,
        offset=start,
    )
    filters = {"status": status_key, "detector": detector_name, "subject": subject, "limit": size}

    def page_url(new_offset: int) -> str:
        query = {k: v for k, v in filters.items() if v} | {"offset": new_offset}
        return f"{PREFIX}/integrity?{urlencode(query)}"

    return render(
        request,
        "integrity.html",
        viewer,
        page=page,
        filters=filters,
        statuses=STATUS_CHOICES,
        detectors=sorted((*DETECTORS, *PLATFORM_DETECTORS)),
        sizes=PAGE_SIZES,
        next_url=page_url(page.next_offset) if page.next_offset is not None else None,
        prev_url=page_url(max(0, start - size)) if start > 0 else None,
    )


def _detail(
    request: Request,
    viewer: Viewer,
    finding_id: str,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    error: str | None = None,
    flash: str | None = None,
) -> HTMLResponse:
    findings = viewer.platform.findings
    finding = findings.get(viewer.caller, finding_id)
    choices = {s: DECISIONS[s] for s in next_statuses(finding.status)}
    return render(
        request,
        "integrity_finding.html",
        viewer,
        status_code=status_code,
        finding=finding,
        evidence=evidence_view(finding.evidence),
        related=findings.about(viewer.caller, finding_id),
        history=findings.history(viewer.caller, finding_id),
        may_review=bool(choices) and findings.may_review(viewer.caller, finding),
        choices=choices,
        errors=errors or {},
        form=form or {},
        max_reason=MAX_REASON,
        error=error,
        flash=flash,
    )


@router.get("/integrity/{finding_id}", response_class=HTMLResponse)
def finding_page(
    request: Request, viewer: ViewerDep, finding_id: str, done: str | None = None
) -> HTMLResponse:
    return _detail(request, viewer, finding_id, flash=DONE.get(done or ""))


def _check_review(fields: dict[str, str], choices: list[str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    decision, reason = fields.get("decision", ""), fields.get("reason", "").strip()
    if decision not in choices:
        errors["decision"] = "Choose what to do with this finding."
    elif decision != "under_review" and not reason:
        errors["reason"] = (
            "Give the reason for your decision: the person concerned and other reviewers "
            "will read it."
        )
    if len(reason) > MAX_REASON:
        errors["reason"] = f"At most {MAX_REASON} characters, please ({len(reason)} now)."
    return errors


@router.post("/integrity/{finding_id}/review", response_model=None)
def review(
    request: Request, viewer: ViewerDep, fields: FormDep, finding_id: str
) -> HTMLResponse | Response:
    finding: FindingView = viewer.platform.findings.get(viewer.caller, finding_id)
    if not viewer.platform.findings.may_review(viewer.caller, finding):
        raise PermissionDenied(
            "you may not decide this finding: reviewers (auditors and platform admins by "
            "default) decide, never about themselves"
        )
    choices = next_statuses(finding.status)
    if not choices:
        return _detail(
            request, viewer, finding_id, status_code=409,
            error=f"Nothing was recorded: this finding is already {finding.status}.",
        )  # fmt: skip
    errors = _check_review(fields, choices)
    if errors:
        return _detail(
            request, viewer, finding_id, status_code=422, errors=errors, form=fields,
            error="The decision was not recorded: correct the field marked below.",
        )  # fmt: skip
    decision = fields["decision"]
    try:
        viewer.platform.findings.move(
            viewer.caller, finding_id, MOVE_TO[decision], reason=fields.get("reason", "")
        )
    except ConflictError as exc:  # someone else decided first
        return _detail(
            request, viewer, finding_id, status_code=409, form=fields,
            error=f"The decision was not recorded: {exc}.",
        )  # fmt: skip
    except PermissionDenied:
        raise
    except UserError as exc:
        return _detail(
            request, viewer, finding_id, status_code=422, form=fields,
            errors={"reason": str(exc)}, error="The decision was not recorded.",
        )  # fmt: skip
    return RedirectResponse(
        f"{PREFIX}/integrity/{finding_id}?{urlencode({'done': decision})}", status_code=303
    )
