"""Background upkeep run by the API process: relay the outbox, reap stages whose worker went silent, and send
queued jobs' messages again when the broker lost its data."""

from __future__ import annotations

import logging
import threading

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from shrinkray.settings import Settings
from storage.db import transaction
from storage.jobs import expired_leases, fail_stage, resend_queued
from storage.models import utcnow
from workers.broker_watch import BrokerMemoryWatch
from workers.outbox import relay_outbox

log = logging.getLogger(__name__)


def reap_expired_leases(sessions: sessionmaker[Session], settings: Settings) -> int:
    """A running stage whose lease expired is retried under a new attempt, or failed after the last one."""
    with transaction(sessions) as session:
        jobs = expired_leases(session, utcnow())
        for job in jobs:
            log.warning("job %s stage %s attempt %s: lease of %s expired", job.id, job.stage,
                        job.attempt, job.lease_owner)
            fail_stage(session, job, f"worker {job.lease_owner} stopped heartbeating", retry=True,
                       max_attempts=settings.max_attempts, backoff_s=0)
    return len(jobs)


class MaintenanceLoop:
    def __init__(self, sessions: sessionmaker[Session], app: Celery, settings: Settings,
                 interval_s: float = 2.0) -> None:
        self._sessions, self._app, self._settings = sessions, app, settings
        self._interval_s = interval_s
        self._broker = BrokerMemoryWatch(settings.broker_url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="maintenance")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                reap_expired_leases(self._sessions, self._settings)
                if self._broker.needs_resend():
                    with transaction(self._sessions) as session:
                        resend_queued(session)
                    self._broker.resent()
                relay_outbox(self._sessions, self._app)
            except Exception:  # the database or broker is down; the next round tries again
                log.warning("maintenance round failed", exc_info=True)
