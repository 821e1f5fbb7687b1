"""A small HTTP client of the REST API for `shrinkray submit`, `status`, `catalog` and `demo`."""

from __future__ import annotations

import time
from typing import Any

import httpx
from tqdm import tqdm


class ApiError(RuntimeError):
    """The API refused a request or could not be reached; the message is meant for the user."""


class ShrinkrayClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def submit(self, **body: Any) -> dict[str, Any]:
        return self._call("POST", "/v1/jobs", json={k: v for k, v in body.items() if v is not None})

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def jobs(self, status: str | None = None, limit: int = 20) -> dict[str, Any]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self._call("GET", "/v1/jobs", params=params)

    def artifacts(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/artifacts")

    def submit_catalog(self, catalog: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/catalogs", json=catalog)

    def catalog(self, catalog_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/catalogs/{catalog_id}")

    def wait_catalog(self, catalog_id: str, poll_s: float = 1.0, timeout_s: float | None = None,
                     show_progress: bool = True) -> dict[str, Any]:
        """Poll until every pair of the catalog has ended, with a progress bar over all its jobs."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with tqdm(total=100, unit="%", disable=not show_progress, bar_format="{desc:<60} {percentage:3.0f}%|{bar}|") \
                as bar:
            while True:
                catalog = self.catalog(catalog_id)
                bar.n = round(100 * catalog["progress"])
                bar.set_description_str(", ".join(f"{n} {state}" for state, n in sorted(catalog["counts"].items())))
                bar.refresh()
                if all(cell["status"] in ("succeeded", "failed", "cancelled") for cell in catalog["cells"]):
                    return catalog
                if deadline is not None and time.monotonic() > deadline:
                    raise ApiError(f"catalog {catalog_id} still running after {timeout_s:.0f} s")
                time.sleep(poll_s)

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def wait(self, job_id: str, poll_s: float = 0.5, timeout_s: float | None = None,
             show_progress: bool = True) -> dict[str, Any]:
        """Poll until the job ends, drawing a progress bar from the job row's progress and stage."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar_format = "{desc:<60} {percentage:3.0f}%|{bar}|"
        with tqdm(total=100, unit="%", disable=not show_progress, bar_format=bar_format) as bar:
            while True:
                job = self.job(job_id)
                bar.n = round(100 * job["progress"])
                bar.set_description_str((job.get("progress_message") or job["status"])[:60])
                bar.refresh()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise ApiError(f"job {job_id} still {job['status']} after {timeout_s:.0f} s")
                time.sleep(poll_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the Shrinkray API at {self.base_url} ({exc}); "
                           "start one with `shrinkray up` or set SHRINKRAY_API_URL") from exc
        if response.status_code == 401:
            raise ApiError(f"{method} {path} -> 401: {_describe(response)} (set SHRINKRAY_API_KEY to a key from "
                           "`shrinkray keys create`)")
        if response.status_code >= 400:
            raise ApiError(f"{method} {path} -> {response.status_code}: {_describe(response)}")
        return response.json()


def _describe(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text[:500]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}" for item in detail)
    return str(detail)
