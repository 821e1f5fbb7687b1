"""What a worker process builds once: database sessions, the artifact store, the Celery app, its name."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cached_property

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from shrinkray.services import artifact_store, session_factory
from shrinkray.settings import Settings
from storage.artifacts import ArtifactStore
from workers.celery_app import create_celery


@dataclass
class WorkerRuntime:
    settings: Settings

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.settings)

    @cached_property
    def store(self) -> ArtifactStore:
        return artifact_store(self.settings)

    @cached_property
    def celery(self) -> Celery:
        return create_celery(self.settings)

    @property
    def worker_id(self) -> str:
        """Host and pid: a lease names the process that holds it, so a restarted one cannot reuse it."""
        return f"{socket.gethostname()}:{os.getpid()}"
