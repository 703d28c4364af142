"""Tickets on GitHub's REST API (or GitHub Enterprise, or anything speaking that shape).

Issues are tickets; workflow states other than open/closed are ``status:<name>`` labels.
Pull requests are read, listed and merged here too: a merge is the ``pr_merged``
outcome, verified by reading the pull request back (``get_pull_request``): merged, with
its author and approving reviewers, and whether a later merged pull request reverted it
(GitHub's "Revert" button opens one whose body is ``Reverts owner/repo#n``).
"""

from __future__ import annotations

from typing import Any, Literal

from meshclaw.connectors.servers._tickets_base import (
    Resolution,
    Status,
    TicketsError,
    TicketsSettings,
    send,
    ticket,
)

MergeMethod = Literal["merge", "squash", "rebase"]


def _status(issue: dict[str, Any]) -> str:
    if issue.get("state") == "closed":
        return "closed"
    labels = [label["name"] for label in issue.get("labels", [])]
    return next((x.removeprefix("status:") for x in labels if x.startswith("status:")), "open")


def _login(user: Any) -> str | None:
    login = user.get("login") if isinstance(user, dict) else None
    return login if isinstance(login, str) and login else None


class GitHubTickets:
    def __init__(self, settings: TicketsSettings) -> None:
        assert settings.repo is not None  # TicketsSettings.check
        self.settings = settings
        self.base = settings.api_url.rstrip("/")
        self.repo = settings.repo
        self.path = f"/repos/{self.repo}"

    def key(self, number: int) -> str:
        return f"{self.repo}#{number}"

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {
            "Authorization": f"Bearer {self.settings.token.get_secret_value()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        response = await send(
            self.settings, method, f"{self.base}{path}", headers=headers, **kwargs
        )
        if response.status_code == 401:
            raise TicketsError(f"the tracker at {self.base} refused the token (Bad credentials)")
        if response.status_code == 404:
            raise TicketsError(
                f"not found in {self.repo}: {path.rsplit('/repos/' + self.repo, 1)[-1] or '/'}"
            )
        if response.status_code >= 400:
            message = response.json().get("message", "") if response.content else ""
            raise TicketsError(f"the tracker answered {response.status_code}: {message}")
        return response.json()

    def evidence(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {
            "key": self.key(issue["number"]),
            "number": issue["number"],
            "url": issue.get("html_url"),
            "status": _status(issue),
        }

    def summary(self, issue: dict[str, Any]) -> dict[str, Any]:
        closed = issue.get("state") == "closed"
        return ticket(
            self.evidence(issue),
            title=issue.get("title"),
            reporter=_login(issue.get("user")),
            resolution=issue.get("state_reason") if closed else None,
            closed_by=_login(issue.get("closed_by")) if closed else None,
            labels=[label["name"] for label in issue.get("labels", [])],
            comments=issue.get("comments", 0),
            updated_at=issue.get("updated_at"),
        )

    # ---- tickets -------------------------------------------------------------------------

    async def search(self, query: str, state: str, limit: int) -> dict[str, Any]:
        terms = [f"repo:{self.repo}", "is:issue", *query.split()]
        if state != "all":
            terms.append(f"is:{state}")
        found = await self.call(
            "GET", "/search/issues", params={"q": " ".join(terms), "per_page": limit}
        )
        return {
            "total": found.get("total_count", 0),
            "tickets": [self.summary(i) for i in found["items"]],
        }

    async def get(self, number: int) -> dict[str, Any]:
        issue = await self.call("GET", f"{self.path}/issues/{number}")
        comments = await self.call("GET", f"{self.path}/issues/{number}/comments")
        return self.summary(issue) | {
            "body": issue.get("body") or "",
            "comment_list": [{"by": _login(c.get("user")), "body": c["body"]} for c in comments],
        }

    async def create(
        self, title: str, body: str, labels: list[str], marker: str | None
    ) -> dict[str, Any]:
        if marker is not None:
            found = await self.call(
                "GET", "/search/issues", params={"q": f'repo:{self.repo} in:body "{marker}"'}
            )
            if found.get("items"):
                return self.evidence(found["items"][0]) | {"duplicate": True}
            body = f"{body}\n\n<!-- {marker} -->" if body else f"<!-- {marker} -->"
        issue = await self.call(
            "POST", f"{self.path}/issues", json={"title": title, "body": body, "labels": labels}
        )
        return self.evidence(issue) | {"duplicate": False}

    async def comment(self, number: int, body: str) -> dict[str, Any]:
        made = await self.call("POST", f"{self.path}/issues/{number}/comments", json={"body": body})
        return {"key": self.key(number), "comment_id": made["id"], "url": made.get("html_url")}

    async def transition(self, number: int, status: Status) -> dict[str, Any]:
        issue = await self.call("GET", f"{self.path}/issues/{number}")
        labels = [x["name"] for x in issue.get("labels", []) if not x["name"].startswith("status:")]
        update: dict[str, Any] = {"labels": [*labels, f"status:{status}"]}
        if issue.get("state") == "closed":
            update |= {"state": "open", "state_reason": "reopened"}
        changed = await self.call("PATCH", f"{self.path}/issues/{number}", json=update)
        return self.evidence(changed)

    async def resolve(
        self, number: int, resolution: Resolution, comment: str | None
    ) -> dict[str, Any]:
        if comment:
            await self.call("POST", f"{self.path}/issues/{number}/comments", json={"body": comment})
        issue = await self.call("GET", f"{self.path}/issues/{number}")
        labels = [x["name"] for x in issue.get("labels", []) if not x["name"].startswith("status:")]
        closed = await self.call(
            "PATCH",
            f"{self.path}/issues/{number}",
            json={"state": "closed", "state_reason": resolution, "labels": labels},
        )
        return self.evidence(closed) | {"resolution": closed.get("state_reason")}

    # ---- pull requests -------------------------------------------------------------------

    def pull_summary(self, pull: dict[str, Any]) -> dict[str, Any]:
        merged = bool(pull.get("merged") or pull.get("merged_at"))
        return {
            "key": self.key(pull["number"]),
            "number": pull["number"],
            "url": pull.get("html_url"),
            "title": pull.get("title"),
            "status": "merged" if merged else str(pull.get("state")),
            "author": _login(pull.get("user")),
            "draft": bool(pull.get("draft")),
            "head": (pull.get("head") or {}).get("ref"),
            "head_sha": (pull.get("head") or {}).get("sha"),
            "base": (pull.get("base") or {}).get("ref"),
            "updated_at": pull.get("updated_at"),
        }

    async def list_pulls(self, state: str, limit: int) -> dict[str, Any]:
        pulls = await self.call(
            "GET", f"{self.path}/pulls", params={"state": state, "per_page": limit}
        )
        return {"pull_requests": [self.pull_summary(p) for p in pulls]}

    async def get_pull(self, number: int) -> dict[str, Any]:
        pull = await self.call("GET", f"{self.path}/pulls/{number}")
        reviews = await self.call(
            "GET", f"{self.path}/pulls/{number}/reviews", params={"per_page": 100}
        )
        latest: dict[str, str] = {}  # a reviewer's last verdict counts; comments are no verdict
        for review in reviews:
            who, verdict = _login(review.get("user")), review.get("state")
            if who and verdict in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
                latest[who] = verdict
        merged = bool(pull.get("merged"))
        return self.pull_summary(pull) | {
            "body": pull.get("body") or "",
            "merged": merged,
            "merged_by": _login(pull.get("merged_by")) if merged else None,
            "merged_at": pull.get("merged_at"),
            "merge_commit_sha": pull.get("merge_commit_sha") if merged else None,
            "approved_by": [who for who, v in latest.items() if v == "APPROVED"],
            "changes_requested_by": [who for who, v in latest.items() if v == "CHANGES_REQUESTED"],
            "reverted_by": await self._reverted_by(number) if merged else None,
        }

    async def _reverted_by(self, number: int) -> str | None:
        """The key of a merged pull request that reverts this one, if any."""
        words = f'"Reverts {self.key(number)}"'
        found = await self.call(
            "GET",
            "/search/issues",
            params={"q": f"repo:{self.repo} is:pr is:merged in:body {words}", "per_page": 10},
        )
        marker = f"reverts {self.key(number)}".lower()
        for item in found.get("items", []):
            lines = (item.get("body") or "").lower().splitlines()
            if any(line.strip() == marker for line in lines):
                return self.key(item["number"])
        return None

    async def merge_pull(
        self, number: int, method: MergeMethod, expected_head_sha: str | None
    ) -> dict[str, Any]:
        pull = await self.call("GET", f"{self.path}/pulls/{number}")
        if pull.get("merged"):
            by = _login(pull.get("merged_by")) or "someone"
            raise TicketsError(f"{self.key(number)} is already merged (by {by})")
        if pull.get("state") == "closed":
            raise TicketsError(f"{self.key(number)} is closed without being merged")
        body: dict[str, Any] = {"merge_method": method}
        if expected_head_sha:
            body["sha"] = expected_head_sha
        merged = await self.call("PUT", f"{self.path}/pulls/{number}/merge", json=body)
        return {
            "key": self.key(number),
            "number": number,
            "url": pull.get("html_url"),
            "status": "merged" if merged.get("merged") else str(pull.get("state")),
            "merge_commit_sha": merged.get("sha"),
            "author": _login(pull.get("user")),
        }
