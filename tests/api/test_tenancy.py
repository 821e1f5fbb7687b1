"""A shared deployment (API keys required) on real Postgres, Redis and an S3 endpoint: a request without a live
key is a 401, keys are stored hashed, each tenant sees only its own jobs, catalogs and artifacts (another
tenant's ids are 404s, indistinguishable from ids that do not exist), download URLs are presigned only for the
owner and expire, Idempotency-Keys and job reuse stay within a tenant, and every key is rate limited."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from api.app import create_app
from shrinkray.services import session_factory
from shrinkray.settings import Settings
from storage.db import transaction
from storage.models import ApiKey, Artifact, Job, JobStatus
from storage.tenants import revoke_key
from tests.conftest import SHARED, SHARED_MODEL, model_stub, tenant_keys

SUBMISSION = {"model_uri": SHARED_MODEL.as_uri(), "preset": "w4a16-rtn"}
MISSING_JOB = "00000000-0000-4000-8000-000000000000"


@dataclass
class Team:
    name: str
    key: str
    client: TestClient


@pytest.fixture()
def shared_settings(migrated_postgres_url: str, redis_url: str, moto_s3, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=migrated_postgres_url, broker_url=redis_url,
                    artifact_url=f"s3://{moto_s3.bucket}", s3_endpoint_url=moto_s3.endpoint_url,
                    s3_access_key_id="testing", s3_secret_access_key="testing", auth_required=True,
                    model_roots=[str(SHARED), str(tmp_path)], rate_limit_requests=40, rate_limit_window_s=3600,
                    auth_cache_s=0.5)


@pytest.fixture()
def teams(shared_settings: Settings) -> Iterator[tuple[Team, Team]]:
    app = create_app(shared_settings, run_maintenance=False)
    keys = [tenant_keys(shared_settings.database_url, name)[0] for name in ("team-a", "team-b")]
    with TestClient(app) as a, TestClient(app) as b:
        a.headers["Authorization"], b.headers["Authorization"] = (f"Bearer {key}" for key in keys)
        yield Team("team-a", keys[0], a), Team("team-b", keys[1], b)


def test_requests_need_a_live_key(shared_settings: Settings, teams: tuple[Team, Team]) -> None:
    a, _ = teams
    with TestClient(create_app(shared_settings, run_maintenance=False)) as anonymous:
        prefix = a.key.split("_")[1]
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "},
                        {"Authorization": "Bearer not-a-key"},
                        {"Authorization": f"Bearer srk_{prefix}_{'A' * 43}"},  # a real prefix, a wrong secret
                        {"Authorization": f"Bearer srk_{'0' * 12}_{a.key[-43:]}"}):
            response = anonymous.get("/v1/jobs", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.post("/v1/jobs", json=SUBMISSION).status_code == 401
        assert anonymous.get("/healthz").status_code == 200  # probes and the dashboard page need no key
        assert anonymous.get("/").status_code == 200
    assert a.client.get("/v1/jobs").status_code == 200
    with transaction(session_factory(shared_settings)) as session:
        revoke_key(session, a.key.split("_")[1])
    assert a.client.get("/v1/jobs").status_code == 200  # remembered for auth_cache_s, then refused
    time.sleep(shared_settings.auth_cache_s + 0.1)
    response = a.client.get("/v1/jobs")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_keys_are_stored_only_as_hashes(shared_settings: Settings, teams: tuple[Team, Team]) -> None:
    with session_factory(shared_settings)() as session:
        rows = session.scalars(select(ApiKey)).all()
        dump = session.execute(text("SELECT * FROM api_keys")).all()
    assert {row.sha256 for row in rows} == {hashlib.sha256(team.key.encode()).hexdigest() for team in teams}
    secrets = [team.key.split("_", 2)[2] for team in teams]  # srk_<prefix>_<secret>; the secret may hold "_"
    assert not any(secret in str(value) for secret in secrets for row in dump for value in row)


def _not_found_like_a_missing_id(response: httpx.Response, owned_id: str, missing: httpx.Response) -> None:
    assert response.status_code == 404
    assert response.json()["detail"].replace(owned_id, "ID") == missing.json()["detail"].replace(MISSING_JOB, "ID")


def test_tenants_see_only_their_own_jobs_and_catalogs(teams: tuple[Team, Team], tmp_path: Path) -> None:
    a, b = teams
    job = a.client.post("/v1/jobs", json=SUBMISSION)
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    catalog = a.client.post("/v1/catalogs", json={"models": [{"uri": model_stub(tmp_path / "m").as_uri()}],
                                                  "recipes": [{"preset": "w4a16-rtn"}]})
    assert catalog.status_code == 201, catalog.text
    catalog_id = catalog.json()["id"]

    for method, path in (("GET", "/v1/jobs/{}"), ("POST", "/v1/jobs/{}/cancel"), ("GET", "/v1/jobs/{}/artifacts")):
        missing = b.client.request(method, path.format(MISSING_JOB))
        _not_found_like_a_missing_id(b.client.request(method, path.format(job_id)), job_id, missing)
    for method, path in (("GET", "/v1/catalogs/{}"), ("POST", "/v1/catalogs/{}/retry"),
                         ("POST", "/v1/catalogs/{}/cancel")):
        missing = b.client.request(method, path.format(MISSING_JOB))
        _not_found_like_a_missing_id(b.client.request(method, path.format(catalog_id)), catalog_id, missing)
    assert b.client.get("/v1/jobs").json()["total"] == 0
    assert b.client.get("/v1/jobs", params={"catalog_id": catalog_id}).json()["total"] == 0
    assert b.client.get("/v1/catalogs").json()["total"] == 0

    assert a.client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"  # B's cancel did nothing
    assert a.client.get("/v1/jobs").json()["total"] == 2
    assert [c["id"] for c in a.client.get("/v1/catalogs").json()["items"]] == [catalog_id]


def test_artifact_urls_are_presigned_for_the_owner_only_and_expire(shared_settings: Settings, moto_s3,
                                                                   teams: tuple[Team, Team]) -> None:
    a, b = teams
    job_id = a.client.post("/v1/jobs", json=SUBMISSION).json()["id"]
    key = f"jobs/{job_id}/manifest.json"
    moto_s3.store().put_bytes(key, b'{"files": []}')
    with transaction(session_factory(shared_settings)) as session:
        session.get(Job, job_id).status = JobStatus.SUCCEEDED
        session.add(Artifact(job_id=job_id, key=key, size=13, sha256=hashlib.sha256(b'{"files": []}').hexdigest()))
    assert b.client.get(f"/v1/jobs/{job_id}/artifacts").status_code == 404
    listing = a.client.get(f"/v1/jobs/{job_id}/artifacts").json()
    assert listing["expires_in_s"] == shared_settings.presign_expiry_s == 900
    url = listing["items"][0]["url"]
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == ["900"]
    assert httpx.get(url).content == b'{"files": []}'


def test_idempotency_keys_and_job_reuse_stay_within_a_tenant(shared_settings: Settings,
                                                             teams: tuple[Team, Team], tmp_path: Path) -> None:
    a, b = teams
    headers = {"Idempotency-Key": "nightly-1"}
    first_a = a.client.post("/v1/jobs", json=SUBMISSION, headers=headers)
    first_b = b.client.post("/v1/jobs", json=SUBMISSION, headers=headers)
    assert (first_a.status_code, first_b.status_code) == (201, 201)
    assert first_a.json()["id"] != first_b.json()["id"]
    assert a.client.post("/v1/jobs", json=SUBMISSION, headers=headers).json()["id"] == first_a.json()["id"]

    with transaction(session_factory(shared_settings)) as session:
        session.get(Job, first_a.json()["id"]).status = JobStatus.SUCCEEDED
    catalog = {"models": [{"uri": SHARED_MODEL.as_uri()}], "recipes": [{"preset": "w4a16-rtn"}]}
    cell_a = a.client.post("/v1/catalogs", json=catalog).json()["cells"][0]
    cell_b = b.client.post("/v1/catalogs", json=catalog).json()["cells"][0]
    assert (cell_a["job_id"], cell_a["reused"]) == (first_a.json()["id"], True)
    assert cell_b["job_id"] != first_a.json()["id"]  # never another team's artifact


def test_sources_outside_the_tenants_places_are_refused(teams: tuple[Team, Team], moto_s3) -> None:
    a, _ = teams
    for uri, reason in ((f"s3://{moto_s3.bucket}/jobs/{MISSING_JOB}/checkpoint", "s3:// sources are not enabled"),
                        ("file:///etc", "outside the allowed model roots"),
                        ("http://169.254.169.254/latest/meta-data/", "network access")):
        response = a.client.post("/v1/jobs", json={**SUBMISSION, "model_uri": uri})
        assert response.status_code == 422, uri
        assert reason in response.json()["detail"][0]["msg"], response.json()
        assert response.json()["detail"][0]["loc"] == ["body", "model_uri"]


def test_each_key_is_rate_limited(shared_settings: Settings, teams: tuple[Team, Team]) -> None:
    a, b = teams
    codes = [a.client.get("/v1/jobs").status_code for _ in range(shared_settings.rate_limit_requests + 1)]
    assert codes[:-1] == [200] * shared_settings.rate_limit_requests and codes[-1] == 429
    refused = a.client.get("/v1/jobs")
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 3600
    assert b.client.get("/v1/jobs").status_code == 200  # another key has its own count


def test_request_bodies_over_the_limit_are_refused(shared_settings: Settings, teams: tuple[Team, Team]) -> None:
    a, _ = teams
    padding = "x" * (shared_settings.max_body_bytes + 1)
    declared = a.client.post("/v1/jobs", json={**SUBMISSION, "padding": padding})
    assert declared.status_code == 413 and "limit" in declared.json()["detail"][0]["msg"]
    streamed = a.client.post("/v1/jobs", content=iter([b'{"padding": "', padding.encode(), b'"}']),
                             headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert a.client.get("/v1/jobs").json()["total"] == 0
