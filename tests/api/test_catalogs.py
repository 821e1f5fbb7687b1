"""/v1/catalogs on real Postgres and Redis (no worker): a catalog becomes one queued job per pair, reuses jobs
that already computed a pair, reports results and recommendations from the jobs' reports, and is rejected
whole, naming the entry, when any entry cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from shrinkray.services import session_factory
from shrinkray.settings import Settings
from storage.models import Job, JobStatus, OutboxMessage
from tests.conftest import SHARED_MODEL, model_stub

RECIPES = [{"preset": "w4a16-rtn"}, {"name": "int8-channel", "recipe": {"modifiers": [
    {"method": "rtn", "bits": 8, "group_size": None}]}}]


@pytest.fixture()
def catalog(tmp_path: Path) -> dict:
    """Two models (stubs: what submission reads, no real weights) x two recipes."""
    models = [{"uri": model_stub(tmp_path / name).as_uri()} for name in ("alpha", "beta")]
    models[1]["name"] = "beta-ft"
    return {"name": "fine-tunes", "models": models, "recipes": RECIPES}


def _counts(settings: Settings) -> tuple[int, int]:
    with session_factory(settings)() as session:
        return (session.scalar(select(func.count()).select_from(Job)),
                session.scalar(select(func.count()).select_from(OutboxMessage)))


def _finish(settings: Settings, job_id: str, status: JobStatus, size: int | None = None,
            change_pct: float | None = None) -> None:
    """What a worker leaves behind: the job's final status and its report's numbers."""
    with session_factory(settings)() as session, session.begin():
        job = session.get(Job, job_id)
        job.status = status
        if size is not None:
            job.report = {"size_bytes": {"before": 4 * size, "after": size, "ratio": 4.0},
                          "perplexity": {"before": 10.0, "after": 10.0 * (1 + change_pct / 100),
                                         "change_pct": change_pct}}
        if status == JobStatus.FAILED:
            job.error = "compress: out of memory"


def test_a_catalog_is_one_queued_job_per_pair(client: TestClient, api_settings: Settings, catalog: dict) -> None:
    response = client.post("/v1/catalogs", json=catalog)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["models"] == ["alpha", "beta-ft"] and body["recipes"] == ["w4a16-rtn", "int8-channel"]
    assert [(cell["model"], cell["recipe"]) for cell in body["cells"]] == [
        ("alpha", "w4a16-rtn"), ("alpha", "int8-channel"), ("beta-ft", "w4a16-rtn"), ("beta-ft", "int8-channel")]
    assert body["counts"] == {"queued": 4} and body["progress"] == 0.0
    assert len({cell["job_id"] for cell in body["cells"]}) == 4 and _counts(api_settings) == (4, 4)
    job = client.get(f"/v1/jobs/{body['cells'][1]['job_id']}").json()
    assert job["recipe"]["modifiers"][0]["bits"] == 8 and job["model_uri"].endswith("/alpha")
    assert client.get(f"/v1/catalogs/{body['id']}").json()["cells"] == body["cells"]
    listed = client.get("/v1/catalogs").json()
    assert listed["total"] == 1 and listed["items"][0]["pairs"] == 4 and listed["items"][0]["name"] == "fine-tunes"


def test_yaml_catalogs_are_accepted(client: TestClient, catalog: dict) -> None:
    response = client.post("/v1/catalogs", content=yaml.safe_dump(catalog),
                           headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    assert len(response.json()["cells"]) == 4


def test_pairs_already_computed_or_under_way_are_reused(client: TestClient, api_settings: Settings,
                                                        catalog: dict) -> None:
    first = client.post("/v1/catalogs", json=catalog).json()["cells"]
    _finish(api_settings, first[0]["job_id"], JobStatus.SUCCEEDED, size=100, change_pct=1.0)
    _finish(api_settings, first[1]["job_id"], JobStatus.FAILED)
    second = client.post("/v1/catalogs", json=catalog).json()["cells"]
    assert second[0]["job_id"] == first[0]["job_id"] and second[0]["reused"]  # succeeded: reused
    assert second[1]["job_id"] != first[1]["job_id"] and not second[1]["reused"]  # failed: computed again
    assert second[2]["job_id"] == first[2]["job_id"] and second[2]["reused"]  # still queued: shared
    assert _counts(api_settings) == (5, 5)
    other_data = {**catalog, "models": [{**catalog["models"][0], "eval_uri": (SHARED_MODEL / "config.json").as_uri()}]}
    assert not any(cell["reused"] for cell in client.post("/v1/catalogs", json=other_data).json()["cells"])


def test_results_and_the_recommendation_come_from_the_reports(client: TestClient, api_settings: Settings,
                                                             catalog: dict) -> None:
    body = client.post("/v1/catalogs", json={**catalog, "tolerance_pct": 2.0}).json()
    alpha_int4, alpha_int8, beta_int4, beta_int8 = (cell["job_id"] for cell in body["cells"])
    _finish(api_settings, alpha_int4, JobStatus.SUCCEEDED, size=100, change_pct=1.5)
    _finish(api_settings, alpha_int8, JobStatus.SUCCEEDED, size=200, change_pct=0.1)
    _finish(api_settings, beta_int4, JobStatus.SUCCEEDED, size=100, change_pct=4.0)
    view = client.get(f"/v1/catalogs/{body['id']}").json()
    assert view["counts"] == {"succeeded": 3, "queued": 1} and view["progress"] == 0.75
    cell = view["cells"][0]
    assert (cell["size_bytes"], cell["size_ratio"], cell["ppl_change_pct"]) == (100, 4.0, 1.5)
    assert cell["artifacts"] == f"/v1/jobs/{alpha_int4}/artifacts"
    alpha, beta = view["recommendations"]
    assert (alpha["recipe"], alpha["job_id"], alpha["size_bytes"]) == ("w4a16-rtn", alpha_int4, 100)
    assert beta["recipe"] is None and "1 still running" in beta["reason"]  # int4 is 4% worse, int8 not done
    _finish(api_settings, beta_int8, JobStatus.SUCCEEDED, size=200, change_pct=0.5)
    beta = client.get(f"/v1/catalogs/{body['id']}").json()["recommendations"][1]
    assert (beta["recipe"], beta["size_bytes"]) == ("int8-channel", 200)


def test_retry_reruns_failed_pairs_and_cancel_stops_only_its_own_jobs(client: TestClient, api_settings: Settings,
                                                                     catalog: dict) -> None:
    first = client.post("/v1/catalogs", json=catalog).json()
    second = client.post("/v1/catalogs", json=catalog).json()  # shares every (queued) job of the first
    _finish(api_settings, first["cells"][0]["job_id"], JobStatus.FAILED)
    retried = client.post(f"/v1/catalogs/{first['id']}/retry").json()
    assert retried["cells"][0]["job_id"] != first["cells"][0]["job_id"] and retried["cells"][0]["status"] == "queued"
    assert [cell["job_id"] for cell in retried["cells"][1:]] == [cell["job_id"] for cell in first["cells"][1:]]
    assert client.post(f"/v1/catalogs/{second['id']}/cancel").json()["counts"] == {"failed": 1, "queued": 3}
    cancelled = client.post(f"/v1/catalogs/{first['id']}/cancel").json()
    assert cancelled["counts"] == {"cancelled": 4}


@pytest.fixture()
def small_client(api_settings: Settings):
    with TestClient(create_app(api_settings.model_copy(update={"catalog_max_pairs": 3}),
                               run_maintenance=False)) as test_client:
        yield test_client


def _location(response) -> str:  # type: ignore[no-untyped-def]
    return ".".join(str(part) for part in response.json()["detail"][0]["loc"])


def test_bad_catalogs_are_rejected_whole_naming_the_entry(client: TestClient, small_client: TestClient,
                                                          api_settings: Settings, catalog: dict) -> None:
    unreachable = {**catalog, "models": [catalog["models"][0], {"uri": "file:///no/such/model"}]}
    cases = [
        ({**catalog, "models": []}, "body.models", "at least 1"),
        ({**catalog, "recipes": [RECIPES[0], {"preset": "w5a16"}]}, "body.recipes.1.preset", "unknown preset"),
        (unreachable, "body.models.1.uri", "does not exist"),
        ({**catalog, "models": [catalog["models"][0], {"uri": "ftp://host/model"}]}, "body.models.1.uri", "scheme"),
        ({**catalog, "recipes": [RECIPES[0], {"recipe": {"modifiers": []}}]}, "body.recipes.1", "name"),
        ({**catalog, "recipes": [RECIPES[0], RECIPES[0]]}, "body.recipes.1.name", "already used"),
        ({**catalog, "recipes": [{"name": "g96", "recipe": {"modifiers": [
            {"method": "rtn", "bits": 4, "group_size": 96}]}}]}, "body.recipes.0.recipe.modifiers.0.group_size",
         "alpha"),
        ({**catalog, "colour": "red"}, "body.colour", "Extra inputs"),
    ]
    for body, location, words in cases:
        response = client.post("/v1/catalogs", json=body)
        assert response.status_code == 422, (location, response.text)
        assert _location(response) == location and words in response.json()["detail"][0]["msg"], response.text
    malformed = client.post("/v1/catalogs", content="models: [\n  - uri: x\n  recipes", headers={
        "Content-Type": "application/yaml"})
    assert malformed.status_code == 422 and "malformed YAML" in malformed.json()["detail"][0]["msg"]
    assert client.post("/v1/catalogs", content="- a list", headers={"Content-Type": "text/yaml"}).status_code == 422
    assert client.post("/v1/catalogs", content="x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post("/v1/catalogs", json={**catalog, "name": "x" * 2_000_000}).status_code == 413
    too_many = small_client.post("/v1/catalogs", json=catalog)
    assert too_many.status_code == 422 and "limit is 3" in too_many.json()["detail"][0]["msg"]
    assert _counts(api_settings) == (0, 0)  # nothing was created or enqueued for any rejected catalog
    assert client.get("/v1/catalogs/00000000-0000-0000-0000-000000000000").status_code == 404


def test_an_idempotency_key_makes_a_resubmitted_catalog_return_the_first(client: TestClient, api_settings: Settings,
                                                                         catalog: dict) -> None:
    from concurrent.futures import ThreadPoolExecutor

    headers = {"Idempotency-Key": "catalog-nightly"}
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/catalogs", json=catalog, headers=headers), range(4)))
    assert sorted(response.status_code for response in responses) == [200, 200, 200, 201]
    assert len({response.json()["id"] for response in responses}) == 1
    assert sum(response.headers.get("Idempotent-Replayed") == "true" for response in responses) == 3
    assert client.get("/v1/catalogs").json()["total"] == 1 and _counts(api_settings) == (4, 4)
    changed = client.post("/v1/catalogs", json={**catalog, "tolerance_pct": 5}, headers=headers)
    assert changed.status_code == 422 and _location(changed) == "header.Idempotency-Key"
    assert client.post("/v1/catalogs", json=catalog).json()["id"] != responses[0].json()["id"]  # no key: another
