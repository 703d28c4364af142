"""``POST /v1/hooks/chat/{org_id}/{connector}``: Slack's Events API for chat triggers.

No bearer token here: Slack proves itself with the app's signing secret
(``triggers.slack_events``). Refusals are 401 problem details and are audited.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from meshclaw.api.deps import PlatformDep
from meshclaw.triggers.slack_events import SlackEventReceiver

router = APIRouter(tags=["triggers"])


@router.post("/v1/hooks/chat/{org_id}/{connector}")
async def chat_events(
    org_id: str, connector: str, request: Request, platform: PlatformDep
) -> dict[str, Any]:
    """A signed Slack event: answers a URL verification, or starts the chat triggers' runs."""
    body = await request.body()
    dispatcher: Any = getattr(request.app.state, "dispatcher", None)
    receiver = SlackEventReceiver(
        platform, dispatch=dispatcher.dispatch if dispatcher is not None else None
    )
    remote = request.client.host if request.client else None
    result: dict[str, Any] = await run_in_threadpool(
        receiver.receive, org_id, connector, request.headers, body, remote
    )
    return result
