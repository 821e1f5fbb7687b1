"""Builders that turn Settings into the parts every process shares: sessions and the artifact store."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from shrinkray.settings import Settings
from storage.artifacts import ArtifactStore, open_store
from storage.db import make_engine, make_session_factory


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings.database_url))


def artifact_store(settings: Settings, url: str | None = None) -> ArtifactStore:
    """The configured artifact store, or another bucket (`url`) on the same endpoint with the same keys."""
    return open_store(url or settings.artifact_url, endpoint_url=settings.s3_endpoint_url,
                      region=settings.s3_region, access_key_id=settings.s3_access_key_id,
                      secret_access_key=settings.s3_secret_access_key)
