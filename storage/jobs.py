"""Queries that move a job through its state machine, each in the caller's short transaction.

Every worker write is fenced: it only applies while the job is still at the stage and attempt the
worker claimed (and the worker holds the lease), so a stale or duplicate delivery changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Artifact, CatalogEntry, Job, JobStatus, OutboxMessage, Stage, StageRun, utcnow


def canonical_sha256(document: Any) -> str:
    """sha256 of a JSON-able document in canonical form (sorted keys, no spaces): equal documents, equal digests."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def job_fingerprint(*, model_uri: str, recipe: dict[str, Any], queue: str, calibration_uri: str | None,
                    eval_uri: str | None) -> str:
    """What determines a job's artifact and report, hashed: the Idempotency-Key check and catalog reuse use it."""
    return canonical_sha256({"model_uri": model_uri, "recipe": recipe, "queue": queue,
                             "calibration_uri": calibration_uri, "eval_uri": eval_uri})


def create_job(session: Session, *, tenant_id: str, model_uri: str, recipe: dict[str, Any],
               preset: str | None, queue: str, calibration_uri: str | None = None, eval_uri: str | None = None,
               idempotency_key: str | None = None) -> Job:
    """Insert the job and the outbox row for its first stage in the same transaction."""
    fingerprint = job_fingerprint(model_uri=model_uri, recipe=recipe, queue=queue,
                                  calibration_uri=calibration_uri, eval_uri=eval_uri)
    job = Job(tenant_id=tenant_id, model_uri=model_uri, recipe=recipe, preset=preset, queue=queue, outputs={},
              calibration_uri=calibration_uri, eval_uri=eval_uri, fingerprint=fingerprint,
              idempotency_key=idempotency_key, status=JobStatus.QUEUED, stage=Stage.FETCH, attempt=1)
    session.add(job)
    session.flush()
    _enqueue(session, job, countdown_s=0)
    return job


def job_by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)).first()


def list_jobs(session: Session, *, tenant_id: str, status: str | None, limit: int, offset: int,
              catalog_id: str | None = None) -> tuple[list[Job], int]:
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status:
        query = query.where(Job.status == status)
    if catalog_id:
        query = query.where(Job.id.in_(select(CatalogEntry.job_id).where(CatalogEntry.catalog_id == catalog_id)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return list(rows), total


def stage_runs(session: Session, job_id: str) -> list[StageRun]:
    query = select(StageRun).where(StageRun.job_id == job_id).order_by(StageRun.started_at, StageRun.id)
    return list(session.scalars(query))


def job_artifacts(session: Session, job_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.key)))


def request_cancel(session: Session, job: Job) -> None:
    """A queued job is cancelled at once; a running one when its stage next checks the flag."""
    job.cancel_requested = True
    if job.status == JobStatus.QUEUED:
        _finish(job, JobStatus.CANCELLED, error=None)


def claim_stage(session: Session, job_id: str, stage: str, attempt: int, worker: str,
                lease_s: int) -> Job | None:
    """Take the lease on a queued stage; None if the delivery is stale, duplicate or cancelled."""
    job = session.scalars(
        select(Job)
        .where(Job.id == job_id, Job.stage == stage, Job.attempt == attempt, Job.status == JobStatus.QUEUED)
        .with_for_update(skip_locked=True)
    ).first()
    if job is None:
        return None
    now = utcnow()
    job.status = JobStatus.RUNNING
    job.lease_owner = worker
    job.lease_expires_at = now + timedelta(seconds=lease_s)
    job.started_at = job.started_at or now
    job.progress_message = f"{stage}: started (attempt {attempt})"
    session.add(StageRun(job_id=job_id, stage=stage, attempt=attempt, status=JobStatus.RUNNING,
                         worker=worker, started_at=now))
    return job


def fenced_job(session: Session, job_id: str, stage: str, attempt: int, worker: str) -> Job | None:
    """The job row locked for update, only while this worker still holds this stage's lease."""
    return session.scalars(
        select(Job)
        .where(Job.id == job_id, Job.stage == stage, Job.attempt == attempt,
               Job.status == JobStatus.RUNNING, Job.lease_owner == worker)
        .with_for_update()
    ).first()


def heartbeat(session: Session, job_id: str, stage: str, attempt: int, worker: str, lease_s: int,
              progress: float | None = None, message: str | None = None) -> bool | None:
    """Extend the lease; returns the cancel flag, or None when the lease was lost."""
    job = fenced_job(session, job_id, stage, attempt, worker)
    if job is None:
        return None
    job.lease_expires_at = utcnow() + timedelta(seconds=lease_s)
    if progress is not None:
        job.progress = progress
    if message is not None:
        job.progress_message = message
    return job.cancel_requested


def complete_stage(session: Session, job_id: str, stage: str, attempt: int, worker: str,
                   outputs: dict[str, Any], report: dict[str, Any] | None = None) -> Job | None:
    """Record the stage's outputs and queue the next stage, or mark the job succeeded after the last."""
    job = fenced_job(session, job_id, stage, attempt, worker)
    if job is None:
        return None
    job.outputs = {**job.outputs, stage: outputs}
    if report is not None:
        job.report = report
    _close_run(session, job, JobStatus.SUCCEEDED, error=None)
    following = Stage(stage).next
    if following is None:
        job.progress = 1.0
        job.progress_message = "done"
        _finish(job, JobStatus.SUCCEEDED, error=None)
        return job
    job.stage, job.attempt = following, 1
    job.status = JobStatus.QUEUED
    job.lease_owner = job.lease_expires_at = None
    job.progress_message = f"{following}: queued"
    _enqueue(session, job, countdown_s=0)
    return job


def fail_stage(session: Session, job: Job, error: str, *, retry: bool, max_attempts: int,
               backoff_s: int, backoff_max_s: int = 300) -> None:
    """Retry a transient failure with a new attempt number (the fencing token) after an exponential backoff
    (capped), or fail the job."""
    _close_run(session, job, JobStatus.FAILED, error=error)
    if retry and job.attempt < max_attempts:
        job.attempt += 1
        job.status = JobStatus.QUEUED
        job.lease_owner = job.lease_expires_at = None
        job.progress_message = f"{job.stage}: retrying (attempt {job.attempt}) after: {error}"
        _enqueue(session, job, countdown_s=min(backoff_s * 2 ** (job.attempt - 2), backoff_max_s))
        return
    _finish(job, JobStatus.FAILED, error=f"{job.stage}: {error}")


def resend_queued(session: Session) -> int:
    """A new outbox row for every queued job's current stage and attempt (after the broker lost its messages)."""
    jobs = list(session.scalars(select(Job).where(Job.status == JobStatus.QUEUED).with_for_update(skip_locked=True)))
    for job in jobs:
        _enqueue(session, job, countdown_s=0)
    return len(jobs)


def cancel_stage(session: Session, job: Job) -> None:
    _close_run(session, job, JobStatus.CANCELLED, error="cancelled")
    _finish(job, JobStatus.CANCELLED, error=None)


def record_artifacts(session: Session, job_id: str, objects: list[tuple[str, int, str]]) -> None:
    """Rows for published objects (key, size, sha256); a redelivered publish replaces nothing twice."""
    known = {a.key for a in job_artifacts(session, job_id)}
    for key, size, sha256 in objects:
        if key not in known:
            session.add(Artifact(job_id=job_id, key=key, size=size, sha256=sha256))


def expired_leases(session: Session, now: datetime) -> list[Job]:
    """Running jobs whose worker stopped heartbeating: the reaper retries or fails them."""
    query = select(Job).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    return list(session.scalars(query.with_for_update(skip_locked=True)))


def pending_outbox(session: Session, limit: int = 100) -> list[OutboxMessage]:
    query = (select(OutboxMessage).where(OutboxMessage.sent_at.is_(None)).order_by(OutboxMessage.id)
             .limit(limit).with_for_update(skip_locked=True))
    return list(session.scalars(query))


def _enqueue(session: Session, job: Job, countdown_s: int) -> None:
    session.add(OutboxMessage(job_id=job.id, stage=job.stage, attempt=job.attempt, queue=job.queue,
                              countdown_s=countdown_s))


def _close_run(session: Session, job: Job, status: str, error: str | None) -> None:
    run = session.scalars(select(StageRun).where(StageRun.job_id == job.id, StageRun.stage == job.stage,
                                                 StageRun.attempt == job.attempt)).first()
    if run is not None:
        run.status = status
        run.error = error
        run.finished_at = utcnow()


def _finish(job: Job, status: JobStatus, error: str | None) -> None:
    job.status = status
    job.error = error
    job.lease_owner = job.lease_expires_at = None
    job.finished_at = utcnow()
