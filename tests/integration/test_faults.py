"""kill -9 of the worker inside each stage, on real Postgres, Redis, moto's S3 server and worker processes.

Each stage is killed at a random point (before or after its work, before the outcome is committed). The API's
reaper sees the lease expire, queues the stage again under a new attempt, and a fresh worker finishes the job:
every job must end succeeded, nothing may stay running, the published manifest must list each artifact once
and match the artifact rows, and the killed attempt's stage run must be closed. The figures (time from the kill
to the stage's next attempt and to the job's end) go to bench/results/faults-<date>.json."""

from __future__ import annotations

import datetime
import json
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shrinkray.migrate import upgrade_database
from tests.conftest import REPO, SHARED_MODEL, temporary_postgres_database, temporary_redis_database
from tests.fixtures.processes import FAST_RECIPE, ServiceProcess, free_port, wait_for_http, wait_until
from tests.integration.checkpoint_checks import download_artifacts

pytestmark = pytest.mark.integration

STAGES = ["fetch", "calibrate", "compress", "validate", "publish"]
KILLS_PER_STAGE = 2
STAGE_DELAY_S = 2.0
LEASE_S = 3
MAX_ATTEMPTS = 3
POISON = "poison-model"
OOM = "oom-model"


class FaultStack:
    """The API (with its reaper) and one slowed worker at a time, which the test kills and replaces."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, home
        self.worker: ServiceProcess | None = None
        self.workers_started = 0

    def start_worker(self) -> None:
        self.workers_started += 1
        log = self.home / f"worker-{self.workers_started}.log"
        self.worker = ServiceProcess(["worker", "--queues", "cpu"], self.env, log, module="tests.fixtures.slow_worker")


@pytest.fixture(scope="module")
def fault_stack(moto_s3, tmp_path_factory) -> Iterator[tuple[FaultStack, httpx.Client]]:
    home = tmp_path_factory.mktemp("fault-stack")
    with temporary_postgres_database() as database_url, temporary_redis_database() as broker_url:
        upgrade_database(database_url)
        env = {"SHRINKRAY_HOME": str(home), "SHRINKRAY_DATABASE_URL": database_url,
               "SHRINKRAY_BROKER_URL": broker_url, "SHRINKRAY_ARTIFACT_URL": f"s3://{moto_s3.bucket}",
               "SHRINKRAY_S3_ENDPOINT_URL": moto_s3.endpoint_url, "SHRINKRAY_S3_ACCESS_KEY_ID": "testing",
               "SHRINKRAY_S3_SECRET_ACCESS_KEY": "testing", "SHRINKRAY_DEVICE": "cpu",
               "SHRINKRAY_LEASE_S": str(LEASE_S), "SHRINKRAY_HEARTBEAT_S": "1",
               "SHRINKRAY_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
               "SHRINKRAY_TEST_STAGE_DELAY_S": str(STAGE_DELAY_S), "SHRINKRAY_TEST_POISON_MARKER": POISON,
               "SHRINKRAY_TEST_OOM_MARKER": OOM,
               "SHRINKRAY_AUTH_REQUIRED": "false"}  # one team: tenancy is tests/api/test_tenancy.py's
        port = free_port()
        api = ServiceProcess(["serve", "--port", str(port)], env, home / "api.log")
        stack = FaultStack(env, home)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", api)
            stack.start_worker()
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                yield stack, client
        finally:
            api.stop()
            if stack.worker is not None:
                stack.worker.stop()


def _kill_inside(stack: FaultStack, client: httpx.Client, stage: str, rng: random.Random,
                 tmp_path: Path) -> dict:
    response = client.post("/v1/jobs", json={"model_uri": SHARED_MODEL.as_uri(), "recipe": FAST_RECIPE})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    wait_until(client, job_id, lambda job: job["stage"] == stage and job["status"] == "running")
    time.sleep(rng.uniform(0.1, STAGE_DELAY_S - 0.2))  # somewhere before, in or after the stage's own work
    assert stack.worker is not None
    stack.worker.kill()
    killed = time.monotonic()
    stack.start_worker()
    retried = wait_until(client, job_id, lambda job: job["stage"] != stage or job["attempt"] > 1
                    or job["status"] in ("succeeded", "failed", "cancelled"))
    retry_s = time.monotonic() - killed
    job = wait_until(client, job_id, lambda job: job["status"] in ("succeeded", "failed", "cancelled"))
    done_s = time.monotonic() - killed
    assert job["status"] == "succeeded", (job, stack.worker.log_tail())
    runs = [run for run in job["stages"] if run["stage"] == stage]
    assert all(run["status"] != "running" and run["finished_at"] for run in job["stages"]), job["stages"]
    if retried["stage"] == stage:  # killed before the stage committed: it ran again under a later attempt
        assert [run["attempt"] for run in runs] == list(range(1, len(runs) + 1)) and len(runs) >= 2, runs
        assert runs[0]["status"] == "failed" and "stopped heartbeating" in runs[0]["error"], runs
        assert runs[-1]["status"] == "succeeded", runs
    manifest = download_artifacts(client, job_id, tmp_path / job_id)
    listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
    names = [item["name"] for item in listed]
    assert len(names) == len(set(names)) and set(manifest["files"]) <= set(names)
    return {"stage": stage, "attempts": len(runs), "seconds_to_next_attempt": round(retry_s, 2),
            "seconds_to_succeeded": round(done_s, 2)}


def test_kill_9_inside_every_stage_loses_nothing(fault_stack, tmp_path: Path) -> None:
    stack, client = fault_stack
    rng = random.Random(7)
    figures = [_kill_inside(stack, client, stage, rng, tmp_path) for stage in STAGES
               for _ in range(KILLS_PER_STAGE)]
    jobs = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    summary = {
        "kills": len(figures), "jobs": len(jobs),
        "succeeded": sum(job["status"] == "succeeded" for job in jobs),
        "stuck": sum(job["status"] in ("queued", "running") for job in jobs),
        "lost_or_failed": sum(job["status"] in ("failed", "cancelled") for job in jobs),
    }
    assert summary == {"kills": len(figures), "jobs": len(figures), "succeeded": len(figures), "stuck": 0,
                       "lost_or_failed": 0}
    result = {"suite": "kill -9 of the worker inside each stage", "date": datetime.datetime.now(
        datetime.UTC).isoformat(timespec="seconds"), "lease_s": LEASE_S, "reaper_interval_s": 2.0,
              "stage_delay_s": STAGE_DELAY_S, "summary": summary, "kills": figures}
    out = REPO / "bench" / "results" / f"faults-kill9-{result['date'][:10]}.json"
    out.write_text(json.dumps(result, indent=2))
    for f in figures:
        print(f"{f['stage']:<10} attempts {f['attempts']}  next attempt after {f['seconds_to_next_attempt']:5.1f} s  "
              f"succeeded after {f['seconds_to_succeeded']:5.1f} s")


def test_a_job_that_crashes_its_worker_fails_after_bounded_attempts_and_others_go_on(fault_stack,
                                                                                  tmp_path: Path) -> None:
    """Its compress stage kills the pool process every time; Celery's worker replaces the process, the reaper
    retries the stage, and after the last attempt the job fails with the reason while a healthy job submitted
    behind it completes."""
    stack, client = fault_stack
    poison_dir = tmp_path / POISON
    shutil.copytree(SHARED_MODEL, poison_dir)
    started = time.monotonic()
    poison = client.post("/v1/jobs", json={"model_uri": poison_dir.as_uri(), "recipe": FAST_RECIPE}).json()
    healthy = client.post("/v1/jobs", json={"model_uri": SHARED_MODEL.as_uri(), "recipe": FAST_RECIPE}).json()
    healthy = wait_until(client, healthy["id"], lambda job: job["status"] in ("succeeded", "failed", "cancelled"))
    healthy_s = time.monotonic() - started
    poison = wait_until(client, poison["id"], lambda job: job["status"] in ("succeeded", "failed", "cancelled"))
    poison_s = time.monotonic() - started
    assert healthy["status"] == "succeeded", healthy
    assert poison["status"] == "failed" and "stopped heartbeating" in poison["error"], poison
    compress_runs = [run for run in poison["stages"] if run["stage"] == "compress"]
    assert [run["attempt"] for run in compress_runs] == list(range(1, MAX_ATTEMPTS + 1))
    assert stack.worker is not None and stack.worker.alive()  # the worker itself survived every crash
    result = {"suite": "a job whose compress stage crashes its worker process every time",
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "lease_s": LEASE_S,
              "max_attempts": MAX_ATTEMPTS, "poison_attempts": len(compress_runs), "poison_failed_after_s": poison_s,
              "healthy_job_succeeded_after_s": healthy_s, "worker_survived": True}
    (REPO / "bench" / "results" / f"faults-poison-{result['date'][:10]}.json").write_text(json.dumps(result, indent=2))
    print(f"\npoison job failed after {len(compress_runs)} attempts in {poison_s:.1f} s; "
          f"the healthy job behind it succeeded in {healthy_s:.1f} s")


def test_a_frozen_worker_is_fenced_out_when_it_wakes(fault_stack, tmp_path: Path) -> None:
    """SIGSTOP the worker inside compress (alive, but silent): the reaper gives the stage to a new attempt, which a
    second worker runs to the end; when the first wakes, its late outcome is refused by the fence, and the job's
    artifacts are published once."""
    stack, client = fault_stack
    job_id = client.post("/v1/jobs", json={"model_uri": SHARED_MODEL.as_uri(), "recipe": FAST_RECIPE}).json()["id"]
    wait_until(client, job_id, lambda job: job["stage"] == "compress" and job["status"] == "running")
    frozen = stack.worker
    assert frozen is not None
    os.killpg(frozen.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        stack.start_worker()
        retried = wait_until(client, job_id, lambda job: job["attempt"] > 1 or job["stage"] != "compress")
        reaped_s = time.monotonic() - stopped
        job = wait_until(client, job_id, lambda job: job["status"] in ("succeeded", "failed", "cancelled"))
    finally:
        os.killpg(frozen.process.pid, signal.SIGCONT)
    time.sleep(2 * STAGE_DELAY_S)  # the woken worker finishes its stale stage and tries to commit it
    after = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == after["status"] == "succeeded", (job, frozen.log_tail())
    assert after["stages"] == job["stages"] and after["report"] == job["report"]  # the stale commit changed nothing
    assert retried["stage"] == "compress" and reaped_s < LEASE_S + 2 * 2.0 + 3, reaped_s
    compress_runs = [run for run in after["stages"] if run["stage"] == "compress"]
    assert [run["status"] for run in compress_runs] == ["failed", "succeeded"], compress_runs
    names = [item["name"] for item in client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]]
    assert len(names) == len(set(names))
    frozen.stop()
    print(f"\nfrozen worker: stage re-attempted {reaped_s:.1f} s after SIGSTOP; the woken worker's commit was fenced")


def test_out_of_memory_fails_the_job_readably_and_the_worker_goes_on(fault_stack, tmp_path: Path) -> None:
    stack, client = fault_stack
    oom_dir = tmp_path / OOM
    shutil.copytree(SHARED_MODEL, oom_dir)
    oom = client.post("/v1/jobs", json={"model_uri": oom_dir.as_uri(), "recipe": FAST_RECIPE}).json()
    healthy = client.post("/v1/jobs", json={"model_uri": SHARED_MODEL.as_uri(), "recipe": FAST_RECIPE}).json()
    oom = wait_until(client, oom["id"], lambda job: job["status"] in ("succeeded", "failed", "cancelled"))
    healthy = wait_until(client, healthy["id"], lambda job: job["status"] in ("succeeded", "failed", "cancelled"))
    assert oom["status"] == "failed" and oom["attempt"] == 1, oom  # not retried: it would run out again
    assert oom["error"].startswith("calibrate: out of memory") and "fewer calibration samples" in oom["error"]
    assert "Traceback" not in oom["error"]
    assert healthy["status"] == "succeeded", healthy
    assert stack.worker is not None and stack.worker.alive()
    print(f"\nout-of-memory job: {oom['error']}")
