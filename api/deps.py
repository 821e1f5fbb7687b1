"""Dependencies injected into the routes: settings, a database session, the store, the job by id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Path, Request
from sqlalchemy.orm import Session, sessionmaker

from shrinkray.settings import Settings
from storage.artifacts import ArtifactStore
from storage.jobs import get_job
from storage.models import Job


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
SessionDep = Annotated[Session, Depends(_session)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_sessions)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
CeleryDep = Annotated[Celery, Depends(_celery)]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                            description="the job's UUID")]


def _job(job_id: JobId, session: SessionDep) -> Job:
    job = get_job(session, job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no job with id {job_id}")
    return job


JobDep = Annotated[Job, Depends(_job)]
