"""The whole service on real parts: Postgres, Redis, an S3 endpoint over HTTP, a worker and the API, with API keys
required as in production (one tenant's key, which the client and the CLI send)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shrinkray.migrate import upgrade_database
from tests.conftest import SHARED, temporary_postgres_database, temporary_redis_database, tenant_keys
from tests.fixtures.processes import ServiceProcess, free_port, wait_for_http

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    api: httpx.Client  # sends the tenant's key
    api_key: str
    api_process: ServiceProcess
    worker: ServiceProcess
    env: dict[str, str]

    @property
    def processes(self) -> tuple[ServiceProcess, ServiceProcess]:
        return self.api_process, self.worker


@pytest.fixture(scope="module")
def s3_stack(moto_s3, tmp_path_factory) -> Iterator[Stack]:
    """API and one CPU worker against Postgres, Redis and moto's S3 server, as in production."""
    home = tmp_path_factory.mktemp("s3-stack")
    with temporary_postgres_database() as database_url, temporary_redis_database() as broker_url:
        upgrade_database(database_url)
        env = {
            "SHRINKRAY_AUTH_REQUIRED": "true",
            "SHRINKRAY_API_KEY": tenant_keys(database_url, "ci-team")[0],
            # the shared models and texts, and the models tests build under pytest's temporary folder
            "SHRINKRAY_MODEL_ROOTS": f"{SHARED},{tmp_path_factory.getbasetemp()}",
            "SHRINKRAY_HOME": str(home),
            "SHRINKRAY_DATABASE_URL": database_url,
            "SHRINKRAY_BROKER_URL": broker_url,
            "SHRINKRAY_ARTIFACT_URL": f"s3://{moto_s3.bucket}",
            "SHRINKRAY_S3_ENDPOINT_URL": moto_s3.endpoint_url,
            "SHRINKRAY_S3_ACCESS_KEY_ID": "testing",
            "SHRINKRAY_S3_SECRET_ACCESS_KEY": "testing",
            "SHRINKRAY_DEVICE": "cpu",
        }
        yield from _run_stack(env, home, ["worker", "--queues", "cpu"])


def _run_stack(env: dict[str, str], home: Path, worker_args: list[str]) -> Iterator[Stack]:
    port = free_port()
    worker = ServiceProcess(worker_args, env, home / "worker.log")
    api = ServiceProcess(["serve", "--port", str(port)], env, home / "api.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", api)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Authorization": f"Bearer {env['SHRINKRAY_API_KEY']}"}) as client:
            yield Stack(api=client, api_key=env["SHRINKRAY_API_KEY"], api_process=api, worker=worker, env=env)
    finally:
        api.stop()
        worker.stop()
