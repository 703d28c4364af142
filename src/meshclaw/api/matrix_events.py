"""``/v1/hooks/matrix/{org_id}/{connector}/_matrix/app/v1/...``: a Matrix homeserver's
application-service pushes for chat triggers.

The registration's ``url`` is ``/v1/hooks/matrix/{org_id}/{connector}``; the homeserver
appends the Application Service API's paths. No MeshClaw token here: the homeserver
proves itself with the registration's ``hs_token`` (``triggers.matrix_push``), checked
before the body is read. Refusals are 401 problem details and are audited.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from meshclaw.api.deps import PlatformDep
from meshclaw.errors import NotFoundError, UserError
from meshclaw.platform import Platform
from meshclaw.triggers.matrix_push import APP_API, MAX_BODY, MatrixPushReceiver

router = APIRouter(tags=["triggers"])
HOOK = "/v1/hooks/matrix/{org_id}/{connector}" + APP_API


class MatrixTransactionOut(BaseModel):
    runs: list[str]
    """The runs the transaction started (none when it was seen before)."""


async def _verified(
    org_id: str, connector: str, request: Request, platform: Platform
) -> MatrixPushReceiver:
    dispatcher: Any = getattr(request.app.state, "dispatcher", None)
    receiver = MatrixPushReceiver(
        platform, dispatch=dispatcher.dispatch if dispatcher is not None else None
    )
    remote = request.client.host if request.client else None
    authorization = request.headers.get("authorization")
    await run_in_threadpool(receiver.verify, org_id, connector, authorization, remote)
    return receiver


async def _body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise UserError(f"the transaction is larger than {MAX_BODY // 2**20} MiB")
    return bytes(body)


@router.put(HOOK + "/transactions/{txn_id}")
async def matrix_transaction(
    org_id: str, connector: str, txn_id: str, request: Request, platform: PlatformDep
) -> MatrixTransactionOut:
    """Events the homeserver pushes: each new message starts the chat triggers' runs once;
    a ``txn_id`` processed before is answered from its row (``matrix_transactions``)."""
    receiver = await _verified(org_id, connector, request, platform)
    body = await _body(request)
    runs = await run_in_threadpool(receiver.transaction, org_id, connector, txn_id, body)
    return MatrixTransactionOut(runs=runs)


@router.get(HOOK + "/users/{matrix_user}")
async def matrix_user_query(
    org_id: str, connector: str, matrix_user: str, request: Request, platform: PlatformDep
) -> dict[str, Any]:
    """Whether the application service has this user: MeshClaw makes none on demand."""
    await _verified(org_id, connector, request, platform)
    raise NotFoundError(f"no Matrix user {matrix_user!r} is made on demand here")


@router.get(HOOK + "/rooms/{room_alias}")
async def matrix_room_query(
    org_id: str, connector: str, room_alias: str, request: Request, platform: PlatformDep
) -> dict[str, Any]:
    """Whether the application service has this room alias: MeshClaw makes none on demand."""
    await _verified(org_id, connector, request, platform)
    raise NotFoundError(f"no Matrix room {room_alias!r} is made on demand here")


@router.post(HOOK + "/ping")
async def matrix_ping(
    org_id: str, connector: str, request: Request, platform: PlatformDep
) -> dict[str, Any]:
    """The homeserver checks that it reaches MeshClaw with the right token."""
    await _verified(org_id, connector, request, platform)
    return {}
