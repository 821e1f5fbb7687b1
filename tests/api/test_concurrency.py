"""Hundreds of clients at once against a real uvicorn server: every request is answered, and the database
connections in use never exceed the requests let in at once (api_threads) plus the upkeep thread. Without the
cap, each waiting request held a connection across its thread hops and the pool timed out (found by
bench/poller_load.py with 200 pollers)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from sqlalchemy import event

from api.app import create_app
from shrinkray.settings import Settings
from tests.conftest import SHARED, SHARED_MODEL, tenant_keys
from tests.fixtures.processes import free_port


@pytest.fixture()
def server(migrated_postgres_url: str, redis_url: str, tmp_path) -> Iterator[tuple[str, str, list[int]]]:
    settings = Settings(home=tmp_path, database_url=migrated_postgres_url, broker_url=redis_url,
                        artifact_url=(tmp_path / "artifacts").as_uri(), auth_required=True, api_threads=4,
                        auth_cache_s=0, model_roots=[str(SHARED)])
    key = tenant_keys(migrated_postgres_url, "many")[0]
    app = create_app(settings, run_maintenance=False)
    in_use, peak = [0], [0]
    pool = app.state.sessions.kw["bind"].pool

    def checked_out(*_: object) -> None:
        in_use[0] += 1
        peak[0] = max(peak[0], in_use[0])

    def checked_in(*_: object) -> None:
        in_use[0] -= 1

    event.listen(pool, "checkout", checked_out)
    event.listen(pool, "checkin", checked_in)
    port = free_port()
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", key, peak
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)


def test_many_clients_at_once_never_exhaust_the_connection_pool(server) -> None:  # type: ignore[no-untyped-def]
    base_url, key, peak = server
    headers = {"Authorization": f"Bearer {key}"}
    job_id = httpx.post(f"{base_url}/v1/jobs", headers=headers, timeout=30,
                        json={"model_uri": SHARED_MODEL.as_uri(), "preset": "w4a16-rtn"}).json()["id"]

    async def poll_together(clients: int, polls: int) -> list[int]:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60,
                                     limits=httpx.Limits(max_connections=clients)) as client:
            async def poller() -> list[int]:
                return [(await client.get(f"/v1/jobs/{job_id}")).status_code for _ in range(polls)]
            return [code for codes in await asyncio.gather(*(poller() for _ in range(clients))) for code in codes]

    codes = asyncio.run(poll_together(clients=120, polls=3))
    assert codes == [200] * 360
    assert peak[0] <= 4 + 1, peak[0]
