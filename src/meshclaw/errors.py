"""The MeshClaw error tree.

Catch the narrowest class you can handle. User mistakes (``UserError``) map to exit
code 2 on the CLI and to HTTP 4xx on the API; everything else is a runtime failure.

    MeshClawError
    ├── UserError                 the caller can fix it (exit 2, HTTP 4xx)
    │   ├── SpecError             an agent spec is invalid; carries every issue with its path
    │   ├── NotFoundError         an id that does not exist (HTTP 404)
    │   ├── ConflictError         state does not allow the request (HTTP 409)
    │   ├── AuthError             missing or bad credentials (HTTP 401)
    │   ├── PermissionDenied      authenticated, but not allowed (HTTP 403)
    │   ├── PolicyError           a Cedar policy set is invalid; carries every issue with its line
    │   └── ConfigError           a setting, provider or price table entry is wrong
    └── RuntimeFailure            something failed while doing valid work
        ├── ProviderError         a model provider call failed
        │   └── ProviderUnavailable  unreachable, or it kept failing after retries
        ├── ToolError             a tool raised or returned an error
        ├── BudgetExceeded        a hard cap refused the call before it was made
        ├── PolicyDenied          the authoriser refused a model or tool call
        └── RunCancelled          the run was cancelled while this call was pending
"""

from __future__ import annotations

from dataclasses import dataclass


class MeshClawError(Exception):
    """Root of every error MeshClaw raises on purpose."""


class UserError(MeshClawError):
    """The caller can fix this; shown without a traceback."""

    http_status = 400


@dataclass(frozen=True, kw_only=True)
class SpecIssue:
    """One problem in a spec: where it is and what is wrong."""

    path: str
    """Dotted field path, e.g. ``tools[1].scope``; empty for the document itself."""
    message: str
    line: int | None = None
    """1-based line in the YAML source, when the spec came from text."""

    def __str__(self) -> str:
        where = self.path or "<document>"
        if self.line is not None:
            where = f"line {self.line}: {where}"
        return f"{where}: {self.message}"


class SpecError(UserError):
    """An agent spec failed validation; ``issues`` lists every problem found."""

    http_status = 422

    def __init__(self, issues: list[SpecIssue], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{head}invalid agent spec ({len(issues)} problem(s)):\n{lines}")


class NotFoundError(UserError):
    http_status = 404


class ConflictError(UserError):
    http_status = 409


class AuthError(UserError):
    http_status = 401

    def __init__(self, message: str, *, challenge: str = 'Bearer realm="meshclaw"') -> None:
        super().__init__(message)
        self.challenge = challenge
        """The ``WWW-Authenticate`` value a 401 carries: the scheme that would succeed."""


class PermissionDenied(UserError):
    http_status = 403


class ConfigError(UserError):
    http_status = 400


@dataclass(frozen=True, kw_only=True)
class PolicyIssue:
    """One problem in a policy text: which policy, where, and Cedar's message."""

    policy: str
    """The policy's ``@id``, or Cedar's positional ``policy<N>``; empty if unknown."""
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        name = f"{self.policy}: " if self.policy else ""
        return f"{where}{name}{self.message}"


class PolicyError(UserError):
    """A policy set failed to parse or to validate against the schema."""

    http_status = 422

    def __init__(self, issues: list[PolicyIssue], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{head}invalid policy set ({len(issues)} problem(s)):\n{lines}")


class RuntimeFailure(MeshClawError):
    """Valid work that failed while being done."""


class ProviderError(RuntimeFailure):
    """A model provider call failed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or kept failing after retries."""


class ToolError(RuntimeFailure):
    """A tool raised, or reported an error result."""


class BudgetExceeded(RuntimeFailure):
    """A hard budget cap refused a call before it was made."""


class PolicyDenied(RuntimeFailure):
    """The authoriser refused a model or tool call."""


class RunCancelled(RuntimeFailure):
    """The run was cancelled."""
