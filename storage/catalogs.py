"""Catalog queries: create one job per model x recipe pair (reusing a job with the same fingerprint that has
succeeded or is still under way), read a catalog's cells with their jobs, retry failed cells, cancel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.jobs import create_job, job_fingerprint, request_cancel
from storage.models import Catalog, CatalogEntry, Job, JobStatus

REUSABLE = (JobStatus.SUCCEEDED, JobStatus.RUNNING, JobStatus.QUEUED)


@dataclass(frozen=True)
class CatalogPair:
    """One cell to create: which model and recipe (by index and name) and the job's fields."""

    model_index: int
    recipe_index: int
    model_name: str
    recipe_name: str
    model_uri: str
    recipe: dict[str, Any]
    preset: str | None
    queue: str
    calibration_uri: str | None
    eval_uri: str | None


def _reusable_job(session: Session, tenant_id: str, fingerprint: str) -> Job | None:
    """The tenant's newest job with this fingerprint that succeeded (preferred) or is still queued or running;
    never another tenant's, whose artifacts this tenant may not read."""
    jobs = session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.fingerprint == fingerprint,
                                             Job.status.in_(REUSABLE))
                           .order_by(Job.created_at.desc())).all()
    succeeded = [job for job in jobs if job.status == JobStatus.SUCCEEDED]
    return (succeeded or jobs or [None])[0]


def create_catalog(session: Session, *, tenant_id: str, name: str | None, tolerance_pct: float,
                   spec: dict[str, Any], pairs: list[CatalogPair], fingerprint: str | None = None,
                   idempotency_key: str | None = None) -> Catalog:
    """The catalog, its entries and the new jobs' outbox rows, in the caller's transaction."""
    catalog = Catalog(tenant_id=tenant_id, name=name, tolerance_pct=tolerance_pct, spec=spec,
                      fingerprint=fingerprint, idempotency_key=idempotency_key)
    session.add(catalog)
    session.flush()
    for pair in pairs:
        fields = {"model_uri": pair.model_uri, "recipe": pair.recipe, "queue": pair.queue,
                  "calibration_uri": pair.calibration_uri, "eval_uri": pair.eval_uri}
        job = _reusable_job(session, tenant_id, job_fingerprint(**fields))
        reused = job is not None
        if job is None:
            job = create_job(session, tenant_id=tenant_id, preset=pair.preset, **fields)
        session.add(CatalogEntry(catalog_id=catalog.id, model_index=pair.model_index,
                                 recipe_index=pair.recipe_index, model_name=pair.model_name,
                                 recipe_name=pair.recipe_name, job_id=job.id, reused=reused))
    session.flush()
    return catalog


def catalog_by_idempotency_key(session: Session, tenant_id: str, key: str) -> Catalog | None:
    query = select(Catalog).where(Catalog.tenant_id == tenant_id, Catalog.idempotency_key == key)
    return session.scalars(query).first()


def catalog_cells(session: Session, catalog_id: str) -> list[tuple[CatalogEntry, Job]]:
    return cells_of_catalogs(session, [catalog_id]).get(catalog_id, [])


def cells_of_catalogs(session: Session, catalog_ids: list[str]) -> dict[str, list[tuple[CatalogEntry, Job]]]:
    """The cells of several catalogs in one query (a page of the catalog list), in matrix order."""
    query = (select(CatalogEntry, Job).join(Job, CatalogEntry.job_id == Job.id)
             .where(CatalogEntry.catalog_id.in_(catalog_ids))
             .order_by(CatalogEntry.catalog_id, CatalogEntry.model_index, CatalogEntry.recipe_index))
    cells: dict[str, list[tuple[CatalogEntry, Job]]] = {}
    for entry, job in session.execute(query).all():
        cells.setdefault(entry.catalog_id, []).append((entry, job))
    return cells


def list_catalogs(session: Session, *, tenant_id: str, limit: int, offset: int) -> tuple[list[Catalog], int]:
    total = session.scalar(select(func.count()).select_from(Catalog).where(Catalog.tenant_id == tenant_id)) or 0
    rows = session.scalars(select(Catalog).where(Catalog.tenant_id == tenant_id)
                           .order_by(Catalog.created_at.desc(), Catalog.id).limit(limit).offset(offset)).all()
    return list(rows), total


def retry_failed_cells(session: Session, catalog_id: str) -> int:
    """A new job for every cell whose job failed or was cancelled; returns how many."""
    retried = 0
    for entry, job in catalog_cells(session, catalog_id):
        if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            fresh = create_job(session, tenant_id=job.tenant_id, model_uri=job.model_uri, recipe=job.recipe,
                               preset=job.preset, queue=job.queue, calibration_uri=job.calibration_uri,
                               eval_uri=job.eval_uri)
            entry.job_id, entry.reused = fresh.id, False
            retried += 1
    session.flush()
    return retried


def cancel_catalog(session: Session, catalog_id: str) -> int:
    """Cancel the unfinished jobs this catalog created (reused jobs belong to whoever made them)."""
    cancelled = 0
    for entry, job in catalog_cells(session, catalog_id):
        if not entry.reused and not JobStatus(job.status).terminal:
            request_cancel(session, job)
            cancelled += 1
    return cancelled
