"""Builders that turn Settings into the parts every process shares: sessions, the artifact store, source rules."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from shrinkray.settings import Settings
from storage.artifacts import ArtifactStore, open_store
from storage.db import make_engine, make_session_factory
from storage.uris import SourcePolicy, parse_artifact_location


def session_factory(settings: Settings) -> sessionmaker[Session]:
    # More connections than requests the API lets in at once (api_threads) plus the upkeep thread: no request
    # ever waits for a connection (see api/concurrency_limit.py).
    return make_session_factory(make_engine(settings.database_url, pool_size=settings.api_threads + 2))


def artifact_store(settings: Settings, url: str | None = None) -> ArtifactStore:
    """The configured artifact store, or another bucket (`url`) on the same endpoint with the same keys."""
    return open_store(url or settings.artifact_url, endpoint_url=settings.s3_endpoint_url,
                      region=settings.s3_region, access_key_id=settings.s3_access_key_id,
                      secret_access_key=settings.s3_secret_access_key)


def source_policy(settings: Settings, tenant: str) -> SourcePolicy:
    """Where `tenant` may read models and texts from: the configured roots and buckets (with `{tenant}` filled
    in); a deployment without API keys is single-user, so with nothing configured it reads anywhere."""
    return SourcePolicy.for_tenant(tenant=tenant, roots=settings.model_roots, buckets=settings.model_buckets,
                                   open=not settings.auth_required,
                                   blocked=(parse_artifact_location(settings.artifact_url),)
                                   if settings.auth_required else ())
