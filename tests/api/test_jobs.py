"""/v1/jobs: submission, validation errors naming the field, lookups, pagination and cancellation."""

from __future__ import annotations

import redis

from tests.conftest import SHARED_MODEL

MODEL_URI = SHARED_MODEL.as_uri()


def _error_fields(response) -> list[str]:
    return [".".join(str(part) for part in item["loc"]) for item in response.json()["detail"]]


def test_submit_creates_a_queued_job_and_enqueues_its_first_stage(client, api_settings) -> None:
    response = client.post("/v1/jobs", json={"model_uri": MODEL_URI, "preset": "w4a16-rtn"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["status"], job["stage"], job["attempt"], job["queue"]) == ("queued", "fetch", 1, "cpu")
    assert job["recipe"]["modifiers"][0]["bits"] == 4
    assert redis.Redis.from_url(api_settings.broker_url).llen("cpu") == 1
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]


def test_gpu_jobs_go_to_the_gpu_queue(client, api_settings) -> None:
    response = client.post("/v1/jobs", json={"model_uri": MODEL_URI, "preset": "w4a16-rtn", "device": "gpu"})
    assert response.json()["queue"] == "gpu"
    assert redis.Redis.from_url(api_settings.broker_url).llen("gpu") == 1


def test_inline_recipe_is_accepted(client) -> None:
    recipe = {"modifiers": [{"method": "rtn", "bits": 8, "group_size": None}]}
    response = client.post("/v1/jobs", json={"model_uri": MODEL_URI, "recipe": recipe})
    assert response.status_code == 201, response.text
    assert response.json()["recipe"]["modifiers"][0]["bits"] == 8


def test_bad_requests_name_the_field(client) -> None:
    cases = [
        ({"preset": "w4a16-rtn"}, "body.model_uri"),
        ({"model_uri": MODEL_URI, "preset": "w4a16-rtn", "colour": "red"}, "body.colour"),
        ({"model_uri": MODEL_URI, "preset": "no-such-preset"}, "body.preset"),
        ({"model_uri": MODEL_URI}, "body"),
        ({"model_uri": MODEL_URI, "recipe": {"modifiers": [{"method": "rtn", "bits": 5}]}},
         "body.recipe.modifiers.0.bits"),
        ({"model_uri": "ftp://host/model", "preset": "w4a16-rtn"}, "body.model_uri"),
        ({"model_uri": "/no/scheme", "preset": "w4a16-rtn"}, "body.model_uri"),
        ({"model_uri": "file:///models/../etc", "preset": "w4a16-rtn"}, "body.model_uri"),
        ({"model_uri": MODEL_URI, "preset": "w4a16-rtn", "eval_uri": "s3://x"}, "body.eval_uri"),
        ({"model_uri": MODEL_URI, "preset": "w4a16-rtn", "device": "tpu"}, "body.device"),
        # checked against the model's config.json at submission:
        ({"model_uri": "file:///no/such/model", "preset": "w4a16-rtn"}, "body.model_uri"),
        ({"model_uri": MODEL_URI, "recipe": {"modifiers": [{"method": "rtn", "bits": 4, "group_size": 96}]}},
         "body.recipe.modifiers.0.group_size"),
        ({"model_uri": MODEL_URI, "recipe": {"modifiers": [{"method": "gptq", "bits": 4, "targets": ["qq_proj"]}]}},
         "body.recipe.modifiers.0.targets"),
    ]
    for body, field in cases:
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert any(found.startswith(field) for found in _error_fields(response)), (field, response.json())


def test_rejected_submissions_leave_nothing_behind(client, api_settings) -> None:
    client.post("/v1/jobs", json={"model_uri": MODEL_URI, "preset": "nope"})
    assert client.get("/v1/jobs").json()["total"] == 0
    assert redis.Redis.from_url(api_settings.broker_url).llen("cpu") == 0


def test_unknown_and_malformed_ids(client) -> None:
    assert client.get("/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/v1/jobs/not-a-uuid").status_code == 422
    assert client.post("/v1/jobs/00000000-0000-0000-0000-000000000000/cancel").status_code == 404
    assert client.get("/v1/jobs/00000000-0000-0000-0000-000000000000/artifacts").status_code == 404


def test_listing_is_paginated_and_filters_by_status(client) -> None:
    ids = [client.post("/v1/jobs", json={"model_uri": MODEL_URI, "preset": "w4a16-rtn"}).json()["id"]
           for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    page = client.get("/v1/jobs", params={"limit": 2, "offset": 0}).json()
    assert (page["total"], len(page["items"])) == (5, 2)
    second = client.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert not {j["id"] for j in page["items"]} & {j["id"] for j in second["items"]}
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]
    assert client.get("/v1/jobs", params={"status": "sleeping"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_cancel_then_cancel_again_conflicts(client) -> None:
    job_id = client.post("/v1/jobs", json={"model_uri": MODEL_URI, "preset": "w4a16-rtn"}).json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409
    assert client.get(f"/v1/jobs/{job_id}/artifacts").status_code == 409


def test_openapi_is_served(client) -> None:
    assert client.get("/docs").status_code == 200
    assert "/v1/jobs" in client.get("/openapi.json").json()["paths"]


def test_an_idempotency_key_makes_a_resubmission_return_the_first_job(client, api_settings) -> None:
    body = {"model_uri": MODEL_URI, "preset": "w4a16-rtn"}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-42"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-42"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert client.get("/v1/jobs").json()["total"] == 1
    assert redis.Redis.from_url(api_settings.broker_url).llen("cpu") == 1
    other = client.post("/v1/jobs", json={**body, "preset": "w8a16-rtn"}, headers={"Idempotency-Key": "nightly-42"})
    assert other.status_code == 422 and _error_fields(other) == ["header.Idempotency-Key"]
    assert client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "x" * 300}).status_code == 422
    assert client.post("/v1/jobs", json=body).json()["id"] != first.json()["id"]  # no key: a new job


def test_concurrent_submissions_with_one_key_create_one_job(client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = {"model_uri": MODEL_URI, "preset": "w4a16-rtn"}
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "race"}),
                                  range(6)))
    assert {response.status_code for response in responses} <= {200, 201}
    assert len({response.json()["id"] for response in responses}) == 1
    assert client.get("/v1/jobs").json()["total"] == 1
