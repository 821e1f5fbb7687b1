"""The outbox relay: publishes committed stage messages, so no task exists for a rolled-back job."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.jobs import pending_outbox
from storage.models import utcnow
from workers.celery_app import task_name

log = logging.getLogger(__name__)


def relay_outbox(sessions: sessionmaker[Session], app: Celery) -> int:
    """Publish every unsent message; a row is marked sent in the transaction that locked it."""
    sent = 0
    with transaction(sessions) as session:
        for message in pending_outbox(session):
            app.send_task(task_name(message.stage), args=[message.job_id, message.stage, message.attempt],
                          queue=message.queue, countdown=message.countdown_s or None)
            message.sent_at = utcnow()
            sent += 1
    if sent:
        log.info("relayed %d stage message(s)", sent)
    return sent
