"""Shared fixtures: a fresh Postgres database per test session, an isolated Redis database, paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
import torch

# Without a GPU, Triton kernels run in Triton's interpreter; it must be chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_MODEL = SHARED / "models" / "tiny-llama-shakespeare"
CORPUS = SHARED / "corpus"
POSTGRES_ADMIN_URL = os.environ.get("SHRINKRAY_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHRINKRAY_TEST_REDIS", "redis://127.0.0.1:6379")

pytest_plugins = ["tests.fixtures.s3"]


def model_stub(path: Path, **config_overrides: object) -> Path:
    """A directory the API accepts at submission (the shared model's config.json, a one-tensor safetensors
    file) without the cost of real weights; no worker can run it."""
    import json

    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    config = {**json.loads((SHARED_MODEL / "config.json").read_text()), **config_overrides}
    (path / "config.json").write_text(json.dumps(config))
    save_file({"stub": torch.zeros(1)}, str(path / "model.safetensors"))
    return path


def tenant_keys(database_url: str, tenant: str, count: int = 1) -> list[str]:
    """A new tenant and `count` API keys of it, as `shrinkray keys create` prints them."""
    from storage.db import make_engine, make_session_factory, transaction
    from storage.tenants import create_tenant, issue_key

    engine = make_engine(database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            owner = create_tenant(session, tenant)
            return [issue_key(session, owner).secret for _ in range(count)]
    finally:
        engine.dispose()


def _sqlalchemy_url(database: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A database of its own, dropped afterwards (even with connections still open)."""
    name = f"shrinkray_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _sqlalchemy_url(name)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_redis_database() -> Iterator[str]:
    """A Redis database index of its own, flushed before and after, so queues never leak between tests."""
    client = redis.Redis.from_url(REDIS_URL)
    for index in range(15, 0, -1):
        if client.set(f"shrinkray-test-lock-{index}", "1", nx=True, ex=3600):
            break
    else:
        raise RuntimeError("no free Redis database index for the test")
    url = f"{REDIS_URL}/{index}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()
        client.delete(f"shrinkray-test-lock-{index}")


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture()
def migrated_postgres_url(postgres_url: str) -> str:
    from shrinkray.migrate import upgrade_database

    upgrade_database(postgres_url)
    return postgres_url


@pytest.fixture()
def redis_url() -> Iterator[str]:
    with temporary_redis_database() as url:
        yield url
