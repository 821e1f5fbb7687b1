"""Dependencies injected into the routes: settings, a database session, the store, the Celery app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from shrinkray.settings import Settings
from storage.artifacts import ArtifactStore


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def _sessions(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions


def _store(request: Request) -> ArtifactStore:
    return request.app.state.store


def _celery(request: Request) -> Celery:
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(_settings)]
# Closed when the route returns, before the response is sent: a slow client never holds a connection, so
# connections in use stay bounded by the request threads.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_sessions)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
CeleryDep = Annotated[Celery, Depends(_celery)]
