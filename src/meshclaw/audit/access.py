"""Who may do what with the audit log: one small role check, until the Cedar authoriser.

* ``read``: query records, export bundles, fetch proofs. Auditors only: the log holds
  everyone's personal data, including who looked at whose numbers.
* ``verify``: recompute the tree and check signatures, and sign a checkpoint. Auditors
  and platform admins (it reveals no record bodies).
* ``redact``: apply retention (remove old bodies, keep hashes). Platform admins own
  retention (DESIGN.md); the redaction itself is audited.
"""

from __future__ import annotations

from typing import Literal

from meshclaw.accounts.service import Caller
from meshclaw.errors import PermissionDenied

AuditPermission = Literal["read", "verify", "redact"]

_ROLES: dict[str, frozenset[str]] = {
    "read": frozenset({"auditor"}),
    "verify": frozenset({"auditor", "platform_admin"}),
    "redact": frozenset({"platform_admin"}),
}


def require(caller: Caller, permission: AuditPermission) -> None:
    allowed = _ROLES[permission]
    if caller.role not in allowed:
        raise PermissionDenied(
            f"audit {permission} needs the role {' or '.join(sorted(allowed))}; "
            f"{caller.handle} is {caller.role}"
        )
