"""Runs one delivered stage message: claim, run under a lease, then commit the outcome, fenced by attempt."""

from __future__ import annotations

import gc
import logging
import shutil

import torch
from sqlalchemy.exc import OperationalError

from compress.errors import Cancelled, CompressError
from compress.pipeline import resolve_device
from compress.recipes import Recipe
from shrinkray.services import source_policy
from storage.db import transaction
from storage.errors import ChecksumMismatch, StorageError, StoreUnavailable
from storage.jobs import (
    cancel_stage,
    claim_stage,
    complete_stage,
    fail_stage,
    fenced_job,
    record_artifacts,
    stage_runs,
)
from storage.models import JobStatus, Stage
from storage.tenants import tenant_name
from storage.uris import SourceRejected
from workers.lease import LeaseKeeper, LeaseLost
from workers.outbox import relay_outbox
from workers.runtime import WorkerRuntime
from workers.stage_context import StageContext, StageResult
from workers.stages import STAGE_FUNCTIONS

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (StoreUnavailable, ChecksumMismatch, OperationalError, ConnectionError, TimeoutError)


def run_stage(runtime: WorkerRuntime, job_id: str, stage: str, attempt: int) -> None:
    """Entry point of every stage task; a stale or duplicate message ends here without side effects."""
    settings, worker = runtime.settings, runtime.worker_id
    with transaction(runtime.sessions) as session:
        job = claim_stage(session, job_id, stage, attempt, worker, settings.lease_s)
        if job is None:
            log.info("dropping stale delivery: job %s stage %s attempt %s", job_id, stage, attempt)
            return
        snapshot = dict(model_uri=job.model_uri, calibration_uri=job.calibration_uri, eval_uri=job.eval_uri,
                        recipe=job.recipe, outputs=dict(job.outputs), cancel=job.cancel_requested,
                        tenant=tenant_name(session, job.tenant_id))
        seconds = {run.stage: (run.finished_at - run.started_at).total_seconds()
                   for run in stage_runs(session, job_id)
                   if run.status == JobStatus.SUCCEEDED and run.finished_at is not None}
    index = list(Stage).index(Stage(stage))
    keeper = LeaseKeeper(runtime.sessions, job_id, stage, attempt, worker, settings.lease_s,
                         settings.heartbeat_s, progress_base=index / len(Stage),
                         progress_span=1 / len(Stage))
    keeper.cancel_requested = snapshot["cancel"]
    workdir = settings.cache_dir / "jobs" / job_id / f"{stage}-a{attempt}"  # type: ignore[operator]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with keeper:
            context = StageContext(
                job_id=job_id, stage=stage, attempt=attempt, model_uri=snapshot["model_uri"],
                calibration_uri=snapshot["calibration_uri"], eval_uri=snapshot["eval_uri"],
                recipe=Recipe.model_validate(snapshot["recipe"]), outputs=snapshot["outputs"],
                stage_seconds=seconds, settings=settings, sources=source_policy(settings, snapshot["tenant"]),
                store=runtime.store, workdir=workdir,
                device=resolve_device(settings.device), report_progress=keeper.report_progress,
                should_stop=keeper.should_stop)
            outcome = _run_guarded(context)
        _commit(runtime, job_id, stage, attempt, outcome)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    relay_outbox(runtime.sessions, runtime.celery)


def _run_guarded(context: StageContext) -> StageResult | BaseException:
    if context.should_stop():
        return Cancelled("cancelled before the stage started")
    try:
        result = STAGE_FUNCTIONS[Stage(context.stage)](context)
        context.report_progress(1.0, f"{context.stage}: done")
        return result
    except Exception as exc:  # classified and recorded on the job row by _commit
        if not isinstance(exc, CompressError | SourceRejected | LeaseLost):
            log.exception("stage %s of job %s failed", context.stage, context.job_id)
        if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
            _release_memory()  # what the failed stage held, before this worker's next job
        return exc


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _commit(runtime: WorkerRuntime, job_id: str, stage: str, attempt: int,
            outcome: StageResult | BaseException) -> None:
    if isinstance(outcome, LeaseLost):
        log.warning("job %s stage %s attempt %s lost its lease; its outputs are abandoned", job_id, stage,
                    attempt)
        return
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        if isinstance(outcome, StageResult):
            if complete_stage(session, job_id, stage, attempt, runtime.worker_id, outcome.outputs,
                              outcome.report) is not None:
                record_artifacts(session, job_id, [(o.key, o.size, o.sha256) for o in outcome.published])
            return
        job = fenced_job(session, job_id, stage, attempt, runtime.worker_id)
        if job is None:
            return
        if isinstance(outcome, Cancelled):
            cancel_stage(session, job)
            return
        retry, message = classify_error(outcome)
        # Only outages are retried here (a crash comes back through the reaper, under max_attempts): they get
        # the longer budget, so a store or database that is down for a minute does not fail the job.
        fail_stage(session, job, message, retry=retry, max_attempts=settings.outage_max_attempts,
                   backoff_s=settings.retry_backoff_s, backoff_max_s=settings.retry_backoff_max_s)


def classify_error(exc: BaseException) -> tuple[bool, str]:
    """(retry?, message for the user): only errors that can pass on their own are retried."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, CompressError | SourceRejected | StorageError):
        return False, str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return False, f"out of memory: {exc}. Use a worker with more memory or fewer calibration samples."
    if isinstance(exc, FileNotFoundError):
        return False, f"file not found: {exc.filename or exc}"
    return False, f"internal error ({type(exc).__name__}): {exc}"
