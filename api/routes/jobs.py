"""/v1/jobs: submit, inspect, list and cancel compression jobs."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import PrincipalDep
from api.deps import CeleryDep, SessionDep, SessionFactoryDep, SettingsDep
from api.errors import InvalidSource
from api.idempotency import IdempotencyKey, replay
from api.model_config import ModelUnreadable, check_recipe_against_model
from api.schemas import MAX_OFFSET, JobCreate, JobOut, JobPage, StageRunOut, problems
from api.scoped import JobDep
from compress.recipes import resolve_recipe
from shrinkray.services import source_policy
from storage.jobs import create_job, job_by_idempotency_key, job_fingerprint, list_jobs, request_cancel, stage_runs
from storage.models import Job, JobStatus
from storage.uris import SourceRejected, parse_source_uri
from workers.outbox import relay_outbox

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problems(401, 429))


def job_out(session: Session, job: Job) -> JobOut:
    out = JobOut.model_validate(job)
    out.stages = [StageRunOut.model_validate(run) for run in stage_runs(session, job.id)]
    return out


@router.post("", status_code=201, response_model=JobOut)
def submit_job(body: JobCreate, session: SessionDep, sessions: SessionFactoryDep, settings: SettingsDep,
               celery: CeleryDep, principal: PrincipalDep, response: Response,
               idempotency_key: IdempotencyKey = None) -> JobOut:
    """Validate everything that can be checked before a worker sees the job, then enqueue it after commit."""
    recipe = resolve_recipe(preset=body.preset, recipe=body.recipe)
    queue = "gpu" if body.device == "gpu" else "cpu"
    fingerprint = job_fingerprint(model_uri=body.model_uri, recipe=recipe.model_dump(mode="json"), queue=queue,
                                  calibration_uri=body.calibration_uri, eval_uri=body.eval_uri)
    sources = {}
    policy = source_policy(settings, principal.tenant_name)
    for field in ("model_uri", "calibration_uri", "eval_uri"):
        value = getattr(body, field)
        if value is not None:
            try:
                sources[field] = parse_source_uri(value, policy)
            except SourceRejected as exc:
                raise InvalidSource(field, exc) from exc
    try:
        check_recipe_against_model(recipe, sources["model_uri"], settings)
    except ModelUnreadable as exc:
        raise InvalidSource("model_uri", exc) from exc
    earlier = None
    try:
        with session.begin():
            earlier = (job_by_idempotency_key(session, principal.tenant_id, idempotency_key)
                       if idempotency_key else None)
            if earlier is None:
                job = create_job(session, tenant_id=principal.tenant_id, model_uri=body.model_uri,
                                 recipe=recipe.model_dump(mode="json"), preset=body.preset, queue=queue,
                                 calibration_uri=body.calibration_uri, eval_uri=body.eval_uri,
                                 idempotency_key=idempotency_key)
    except IntegrityError:  # a concurrent request committed the same key a moment ago
        earlier = (job_by_idempotency_key(session, principal.tenant_id, idempotency_key)
                   if idempotency_key else None)
        if earlier is None:
            raise
    if earlier is not None:
        replay(response, idempotency_key or "", earlier.fingerprint, fingerprint)
        return job_out(session, earlier)
    try:
        relay_outbox(sessions, celery)
    except Exception:  # the job is committed; the maintenance loop relays it once the broker is back
        log.warning("could not relay job %s now", job.id, exc_info=True)
    return job_out(session, job)


@router.get("", response_model=JobPage)
def get_jobs(session: SessionDep, principal: PrincipalDep, status: Annotated[JobStatus | None, Query()] = None,
             catalog_id: Annotated[str | None, Query(pattern=r"^[0-9a-f-]{36}$",
                                                     description="only the jobs of this catalog")] = None,
             limit: Annotated[int, Query(ge=1, le=500)] = 50,
             offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> JobPage:
    jobs, total = list_jobs(session, tenant_id=principal.tenant_id, status=status, limit=limit, offset=offset,
                            catalog_id=catalog_id)
    return JobPage(items=[JobOut.model_validate(job) for job in jobs], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, responses=problems(404))
def get_job(job: JobDep, session: SessionDep) -> JobOut:
    return job_out(session, job)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problems(404, 409))
def cancel_job(job: JobDep, session: SessionDep) -> JobOut:
    if JobStatus(job.status).terminal:
        raise HTTPException(status_code=409, detail=f"job {job.id} already ended as {job.status}")
    request_cancel(session, job)
    session.commit()
    return job_out(session, job)
