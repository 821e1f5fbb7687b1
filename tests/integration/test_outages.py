"""Backing services that go away mid-job and come back: Redis restarted empty, PostgreSQL restarted, the S3 endpoint
down for 30 s during publish. Each test runs the API and a slowed worker against private instances it can stop
(tests/fixtures/outages.py); every job must end succeeded after recovery, with each artifact published once. The
figures (how long each job took to finish after the service came back) go to bench/results/outages-<date>.json."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from shrinkray.migrate import upgrade_database
from tests.conftest import REPO, SHARED_MODEL, temporary_postgres_database, temporary_redis_database
from tests.fixtures.outages import PrivatePostgres, PrivateRedis, PrivateS3
from tests.fixtures.processes import FAST_RECIPE, ServiceProcess, free_port, wait_for_http, wait_until
from tests.integration.checkpoint_checks import download_artifacts

pytestmark = pytest.mark.integration

STAGE_DELAY_S = 2.0
FIGURES: list[dict] = []


@contextmanager
def _stack(tmp_path: Path, *, database_url: str, broker_url: str, s3: PrivateS3) -> Iterator[httpx.Client]:
    env = {"SHRINKRAY_HOME": str(tmp_path / "home"), "SHRINKRAY_DATABASE_URL": database_url,
           "SHRINKRAY_BROKER_URL": broker_url, "SHRINKRAY_ARTIFACT_URL": f"s3://{s3.bucket}",
           "SHRINKRAY_S3_ENDPOINT_URL": s3.endpoint_url, "SHRINKRAY_S3_ACCESS_KEY_ID": "testing",
           "SHRINKRAY_S3_SECRET_ACCESS_KEY": "testing", "SHRINKRAY_DEVICE": "cpu", "SHRINKRAY_AUTH_REQUIRED": "false",
           "SHRINKRAY_LEASE_S": "4", "SHRINKRAY_HEARTBEAT_S": "1", "SHRINKRAY_RETRY_BACKOFF_S": "2",
           "SHRINKRAY_TEST_STAGE_DELAY_S": str(STAGE_DELAY_S)}
    (tmp_path / "home").mkdir()
    port = free_port()
    api = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "api.log")
    worker = ServiceProcess(["worker", "--queues", "cpu"], env, tmp_path / "worker.log",
                            module="tests.fixtures.slow_worker")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", api)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        worker.stop()
        api.stop()
        logs = {p.name: p.read_text(errors="replace")[-4000:] for p in tmp_path.glob("*.log")}
        (tmp_path / "logs.json").write_text(json.dumps(logs))


def _submit(client: httpx.Client) -> str:
    response = client.post("/v1/jobs", json={"model_uri": SHARED_MODEL.as_uri(), "recipe": FAST_RECIPE})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _outage(client: httpx.Client, jobs: list[str], stage: str, down_s: float, stop: Callable[[], None],
            start: Callable[[], None], tmp_path: Path, what: str) -> dict:
    """Take the service down while the first job runs `stage`, bring it back after `down_s`, and check that
    every job ends succeeded with its artifacts listed once."""
    wait_until(client, jobs[0], lambda job: job["stage"] == stage and job["status"] == "running")
    time.sleep(STAGE_DELAY_S / 4)
    stop()
    time.sleep(down_s)
    start()
    back = time.monotonic()
    ended = [wait_until(client, job_id, lambda job: job["status"] in ("succeeded", "failed", "cancelled"), 300)
             for job_id in jobs]
    recovered_s = time.monotonic() - back
    logs = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    assert [job["status"] for job in ended] == ["succeeded"] * len(jobs), (ended, logs)
    for job in ended:
        assert all(run["status"] != "running" for run in job["stages"]), job["stages"]
        manifest = download_artifacts(client, job["id"], tmp_path / job["id"])
        names = [item["name"] for item in client.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]]
        assert len(names) == len(set(names)) and set(manifest["files"]) <= set(names)
    figure = {"outage": what, "during_stage": stage, "down_s": down_s, "jobs": len(jobs),
              "succeeded": len(ended), "attempts_of_first_job": max(run["attempt"] for run in ended[0]["stages"]),
              "seconds_from_recovery_to_all_done": round(recovered_s, 1)}
    FIGURES.append(figure)
    _write_figures()
    print(f"\n{what}: {figure}")
    return figure


def _write_figures() -> None:
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {"suite": "backing services down mid-job", "date": date, "stage_delay_s": STAGE_DELAY_S,
              "lease_s": 4, "retry_backoff_s": 2, "outages": FIGURES}
    (REPO / "bench" / "results" / f"outages-{date[:10]}.json").write_text(json.dumps(result, indent=2))


@pytest.fixture()
def private_s3() -> Iterator[PrivateS3]:
    s3 = PrivateS3("outage-artifacts")
    try:
        import boto3

        boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        s3.stop()


def test_redis_restarted_empty_mid_job(tmp_path: Path, private_s3: PrivateS3) -> None:
    """The running job's next messages wait in the outbox; the queued job's message died with Redis and is
    sent again when the API notices the restart."""
    redis_server = PrivateRedis(tmp_path)
    try:
        with temporary_postgres_database() as database_url:
            upgrade_database(database_url)
            with _stack(tmp_path, database_url=database_url, broker_url=redis_server.url, s3=private_s3) as client:
                jobs = [_submit(client), _submit(client)]
                _outage(client, jobs, "calibrate", 5, redis_server.stop, redis_server.start, tmp_path,
                        "Redis restarted without persistence")
    finally:
        redis_server.stop()


def test_postgres_restarted_mid_job(tmp_path: Path, private_s3: PrivateS3) -> None:
    database = PrivatePostgres()
    try:
        upgrade_database(database.url)
        with temporary_redis_database() as broker_url:
            with _stack(tmp_path, database_url=database.url, broker_url=broker_url, s3=private_s3) as client:
                jobs = [_submit(client)]
                _outage(client, jobs, "compress", 5, database.stop, database.start, tmp_path,
                        "PostgreSQL restarted")
    finally:
        database.remove()


def test_s3_down_for_30_seconds_during_publish(tmp_path: Path, private_s3: PrivateS3) -> None:
    with temporary_postgres_database() as database_url, temporary_redis_database() as broker_url:
        upgrade_database(database_url)
        with _stack(tmp_path, database_url=database_url, broker_url=broker_url, s3=private_s3) as client:
            jobs = [_submit(client)]
            figure = _outage(client, jobs, "publish", 30, private_s3.stop, private_s3.start, tmp_path,
                             "S3 endpoint down for 30 s")
    assert figure["attempts_of_first_job"] > 1  # it really failed and came back through retries
