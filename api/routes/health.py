"""/healthz: is the database, the broker and the artifact store reachable from the API?"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import CeleryDep, SessionDep, StoreDep
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(session: SessionDep, store: StoreDep, celery: CeleryDep) -> JSONResponse:
    checks = {"database": _probe(lambda: session.execute(text("SELECT 1"))),
              "broker": _probe(lambda: _ping_broker(celery)),
              "store": _probe(store.check)}
    healthy = all(value == "ok" for value in checks.values())
    body = Health(status="ok" if healthy else "degraded", checks=checks)
    return JSONResponse(status_code=200 if healthy else 503, content=body.model_dump())


def _ping_broker(celery) -> None:  # type: ignore[no-untyped-def]
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def _probe(check) -> str:  # type: ignore[no-untyped-def]
    try:
        check()
    except Exception as exc:  # reported, not raised: health must answer even when a part is down
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"
