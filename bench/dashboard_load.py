"""Dashboard and API responsiveness with 10,000 jobs and a 500-pair catalog in Postgres.

The API runs as `shrinkray serve` (uvicorn) against a throwaway Postgres database filled with jobs in every
final state (with reports) and one catalog of 20 models x 25 recipes. It measures the latency of what the
dashboard polls (p50/p99 over repeated requests) and, in headless Chromium, the time from navigation until
the jobs table and the catalog matrix are drawn. Needs PostgreSQL and Redis on 127.0.0.1 and Debian's chromium:
    .venv/bin/python bench/dashboard_load.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from shrinkray.migrate import upgrade_database
from shrinkray.services import session_factory
from shrinkray.settings import Settings
from storage.models import Catalog, CatalogEntry, Job
from tests.conftest import temporary_postgres_database, temporary_redis_database
from tests.fixtures.processes import ServiceProcess, free_port, wait_for_http

TARGET_P99_MS = 200.0  # each polled endpoint
TARGET_PAGE_MS = 1500.0  # navigation until the table or matrix is drawn
STATES = ["succeeded"] * 6 + ["failed", "cancelled", "queued"]


def _fill(database_url: str, jobs: int, models: int, recipes: int) -> str:
    """Insert `jobs` jobs and one models x recipes catalog over the first of them; returns the catalog id."""
    rng = random.Random(0)
    now = datetime.datetime.now(datetime.UTC)
    rows = []
    for index in range(jobs):
        status = rng.choice(STATES)
        size = rng.randint(50, 500) * 10**6
        change = rng.uniform(-1, 8)
        report = {"size_bytes": {"before": 4 * size, "after": size, "ratio": 4.0},
                  "perplexity": {"before": 10.0, "after": 10.0 * (1 + change / 100), "change_pct": change}}
        rows.append(Job(id=str(uuid.uuid4()), status=status, stage="publish", attempt=1, queue="cpu",
                        model_uri=f"s3://models/model-{index % 400}", recipe={"modifiers": []},
                        preset="w4a16", progress=1.0 if status != "queued" else 0.0, cancel_requested=False,
                        outputs={}, report=report if status == "succeeded" else None,
                        error="compress: out of memory" if status == "failed" else None,
                        created_at=now - datetime.timedelta(seconds=index), updated_at=now))
    with session_factory(Settings(database_url=database_url))() as session, session.begin():
        session.add_all(rows)
        catalog = Catalog(name="load", tolerance_pct=3.0, spec={})
        session.add(catalog)
        session.flush()
        for cell in range(models * recipes):
            session.add(CatalogEntry(catalog_id=catalog.id, model_index=cell // recipes,
                                     recipe_index=cell % recipes, model_name=f"model-{cell // recipes}",
                                     recipe_name=f"recipe-{cell % recipes}", job_id=rows[cell].id, reused=False))
        return catalog.id


def _latencies_ms(client: httpx.Client, path: str, repeats: int) -> list[float]:
    client.get(path).raise_for_status()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        samples.append(1e3 * (time.perf_counter() - started))
    return samples


def _page_ms(base_url: str, fragment: str, selector: str, repeats: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    samples = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        for _ in range(repeats + 1):
            page.goto("about:blank")
            started = time.perf_counter()
            page.goto(f"{base_url}/{fragment}")
            page.wait_for_selector(selector)
            samples.append(1e3 * (time.perf_counter() - started))
        browser.close()
    return samples[1:]  # the first load warms the browser's cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with temporary_postgres_database() as database_url, temporary_redis_database() as broker_url:
        upgrade_database(database_url)
        started = time.perf_counter()
        catalog_id = _fill(database_url, args.jobs, 20, 25)
        fill_s = time.perf_counter() - started
        home = Path(tempfile.mkdtemp(prefix="shrinkray-load-"))
        env = {**os.environ, "SHRINKRAY_HOME": str(home), "SHRINKRAY_DATABASE_URL": database_url,
               "SHRINKRAY_BROKER_URL": broker_url, "SHRINKRAY_ARTIFACT_URL": (home / "artifacts").as_uri(),
               "SHRINKRAY_AUTH_REQUIRED": "false"}
        port = free_port()
        api = ServiceProcess(["serve", "--port", str(port)], env, home / "api.log")
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{base_url}/healthz", api)
            endpoints = {
                "jobs, first page": "/v1/jobs?limit=50",
                "jobs, page 150": "/v1/jobs?limit=50&offset=7500",
                "jobs, failed only": "/v1/jobs?limit=50&status=failed",
                "jobs of the catalog": f"/v1/jobs?limit=50&catalog_id={catalog_id}",
                "catalog (500 cells)": f"/v1/catalogs/{catalog_id}",
                "catalog list": "/v1/catalogs",
            }
            rows = []
            with httpx.Client(base_url=base_url, timeout=30) as client:
                for name, path in endpoints.items():
                    samples = _latencies_ms(client, path, args.repeats)
                    rows.append({"what": name, "path": path, "p50_ms": statistics.median(samples),
                                 "p99_ms": sorted(samples)[max(0, round(0.99 * len(samples)) - 1)],
                                 "target_ms": TARGET_P99_MS})
            for name, fragment, selector in [("jobs page drawn", "#/jobs", "[data-testid=job-row]"),
                                             ("catalog page drawn", f"#/catalogs/{catalog_id}", "[data-testid=chart]")]:
                samples = _page_ms(base_url, fragment, selector, 5)
                rows.append({"what": name, "path": fragment, "p50_ms": statistics.median(samples),
                             "p99_ms": max(samples), "target_ms": TARGET_PAGE_MS})
        finally:
            api.stop()
    print(f"{args.jobs} jobs, a 500-pair catalog (filled in {fill_s:.1f} s)")
    print(f"{'what':<24} {'p50 ms':>8} {'p99/max ms':>11} {'target':>8}")
    for row in rows:
        row["target_met"] = row["p99_ms"] <= row["target_ms"]
        print(f"{row['what']:<24} {row['p50_ms']:>8.1f} {row['p99_ms']:>11.1f} {row['target_ms']:>8.0f}"
              f"  {'met' if row['target_met'] else 'NOT met'}")
    result = {"benchmark": "dashboard_load", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "jobs": args.jobs, "catalog_pairs": 500,
              "requests_per_endpoint": args.repeats, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"dashboard_load-{result['date'][:10]}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
