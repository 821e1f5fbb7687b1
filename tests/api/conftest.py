"""An API app on real Postgres and Redis (no worker): what a client sees before any stage runs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shrinkray.settings import Settings


@pytest.fixture()
def api_settings(migrated_postgres_url: str, redis_url: str, tmp_path) -> Settings:
    """A single-user deployment (no API keys): tests/api/test_tenancy.py covers the shared one."""
    return Settings(home=tmp_path / "home", database_url=migrated_postgres_url, broker_url=redis_url,
                    artifact_url=(tmp_path / "artifacts").as_uri(), auth_required=False)


@pytest.fixture()
def client(api_settings: Settings):
    with TestClient(create_app(api_settings, run_maintenance=False)) as test_client:
        yield test_client
