"""The API under 200 concurrent status pollers while a job runs.

`shrinkray serve` (one uvicorn process, API keys required) and one CPU worker run against throwaway Postgres and
Redis databases. A real job (the shared model, w4a16 GPTQ) is submitted; while it runs, 200 pollers, each with
its own key (as 200 clients would have), ask for the job's status once a second (each starts at a random offset
within the first second). Reports the latency p50/p99 and the error count over every poll, and whether the job
still succeeded. Needs PostgreSQL and Redis on 127.0.0.1:
    .venv/bin/python bench/poller_load.py [--pollers 200] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from shrinkray.migrate import upgrade_database
from tests.conftest import SHARED, SHARED_MODEL, temporary_postgres_database, temporary_redis_database, tenant_keys
from tests.fixtures.processes import ServiceProcess, free_port, wait_for_http, wait_for_job

TARGET_P50_MS = 100.0
TARGET_P99_MS = 500.0


async def _poller(base_url: str, key: str, path: str, until: float, latencies: list[float],
                  failures: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        await asyncio.sleep(random.random())
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                response = await client.get(path)
                if response.status_code != 200:
                    failures.append(f"HTTP {response.status_code}")
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
            else:
                latencies.append(1e3 * (time.perf_counter() - started))
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))


async def _poll_all(base_url: str, keys: list[str], path: str, seconds: float) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(*(_poller(base_url, key, path, until, latencies, failures) for key in keys))
    return latencies, failures


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, round(fraction * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with temporary_postgres_database() as database_url, temporary_redis_database() as broker_url:
        upgrade_database(database_url)
        keys = tenant_keys(database_url, "load", args.pollers)
        home = Path(tempfile.mkdtemp(prefix="shrinkray-pollers-"))
        env = {"SHRINKRAY_HOME": str(home), "SHRINKRAY_DATABASE_URL": database_url, "SHRINKRAY_BROKER_URL": broker_url,
               "SHRINKRAY_ARTIFACT_URL": (home / "artifacts").as_uri(), "SHRINKRAY_AUTH_REQUIRED": "true",
               "SHRINKRAY_MODEL_ROOTS": str(SHARED), "SHRINKRAY_DEVICE": "cpu",
               "OMP_NUM_THREADS": "1"}  # the job gets one core of two; the API and the pollers share the other
        (home / "artifacts").mkdir(parents=True)
        port = free_port()
        api = ServiceProcess(["serve", "--port", str(port)], env, home / "api.log")
        worker = ServiceProcess(["worker", "--queues", "cpu"], env, home / "worker.log")
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{base_url}/healthz", api)
            with httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {keys[0]}"}) as client:
                submitted = client.post("/v1/jobs", json={"model_uri": SHARED_MODEL.as_uri(), "preset": "w4a16"})
                submitted.raise_for_status()
                job_id = submitted.json()["id"]
                latencies, failures = asyncio.run(_poll_all(base_url, keys, f"/v1/jobs/{job_id}", args.seconds))
                status_during = client.get(f"/v1/jobs/{job_id}").json()
                job = wait_for_job(client, job_id, 900, api, worker)
        finally:
            worker.stop()
            api.stop()
    row = {"pollers": args.pollers, "seconds": args.seconds, "requests": len(latencies) + len(failures),
           "requests_per_s": (len(latencies) + len(failures)) / args.seconds, "errors": len(failures),
           "error_kinds": sorted(set(failures)), "p50_ms": statistics.median(latencies),
           "p99_ms": _percentile(latencies, 0.99), "max_ms": max(latencies),
           "job_stage_when_polling_ended": status_during["stage"], "job_status": job["status"],
           "target_p50_ms": TARGET_P50_MS, "target_p99_ms": TARGET_P99_MS}
    row["target_met"] = (row["p50_ms"] <= TARGET_P50_MS and row["p99_ms"] <= TARGET_P99_MS and not failures
                         and job["status"] == "succeeded")
    print(f"{args.pollers} pollers x {args.seconds:.0f} s, one poll per second each, while a w4a16 job runs")
    print(f"{'requests':>9} {'req/s':>7} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'job':>10}")
    print(f"{row['requests']:>9} {row['requests_per_s']:>7.1f} {row['errors']:>7} {row['p50_ms']:>8.1f} "
          f"{row['p99_ms']:>8.1f} {row['max_ms']:>8.1f} {job['status']:>10}")
    print(f"targets: p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms, no errors, the job succeeds: "
          f"{'met' if row['target_met'] else 'NOT met'}")
    result = {"benchmark": "poller_load", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "row": row}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"poller_load-{result['date'][:10]}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
