"""/healthz reports each dependency and turns 503 when one is down."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app


def test_healthy_when_everything_answers(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}


def test_a_dead_broker_makes_it_503(api_settings) -> None:
    broken = api_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken, run_maintenance=False)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("error")
