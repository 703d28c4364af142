"""``POST /v1/hooks/{agent_id}``: webhook triggers, authenticated by their HMAC signature.

No bearer token here: the sender proves itself with the agent's webhook secret
(``triggers.webhook``). Refusals are 401 problem details and are audited.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from meshclaw.api.deps import PlatformDep
from meshclaw.api.schemas import RunOut
from meshclaw.triggers.secrets import LocalSecretStore
from meshclaw.triggers.webhook import WebhookReceiver

router = APIRouter(tags=["triggers"])


@router.post("/v1/hooks/{agent_id}", status_code=202)
async def webhook(agent_id: str, request: Request, platform: PlatformDep) -> RunOut:
    """Start a run of the agent with the request body as its input (signed deliveries only)."""
    body = await request.body()
    dispatcher: Any = getattr(request.app.state, "dispatcher", None)
    receiver = WebhookReceiver(
        platform,
        LocalSecretStore(platform.settings.home),
        dispatch=dispatcher.dispatch if dispatcher is not None else None,
    )
    remote = request.client.host if request.client else None
    info = await run_in_threadpool(receiver.receive, agent_id, request.headers, body, remote)
    return RunOut.model_validate(info)
