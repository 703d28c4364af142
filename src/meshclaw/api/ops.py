"""``GET /ready``: readiness for load balancers and orchestrators (``/health`` is liveness).

Ready means this replica can do its job now: the store answers and, when a broker is
configured, the broker accepts a connection. No authentication, and no details beyond
which dependency is down.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from meshclaw.api.deps import PlatformDep
from meshclaw.platform import Platform

router = APIRouter(tags=["meta"])


def _checks(platform: Platform) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with platform.db.engine.connect() as conn:
            conn.execute(text("select 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    if platform.settings.broker_url:
        from kombu.connection import Connection

        try:
            with Connection(platform.settings.broker_url, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
                conn.ensure_connection(max_retries=1)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"down: {type(exc).__name__}"
    return checks


@router.get("/ready")
async def ready(platform: PlatformDep) -> JSONResponse:
    checks = await run_in_threadpool(_checks, platform)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503
    )
