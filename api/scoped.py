"""A tenant's own job or catalog by id. Another tenant's is answered exactly like one that does not exist."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path

from api.auth import PrincipalDep
from api.deps import SessionDep
from storage.models import Catalog, Job

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
JobId = Annotated[str, Path(pattern=_UUID, description="the job's UUID")]
CatalogId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="the catalog's UUID")]


def _job(job_id: JobId, session: SessionDep, principal: PrincipalDep) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != principal.tenant_id:
        raise HTTPException(status_code=404, detail=f"no job with id {job_id}")
    return job


def _catalog(catalog_id: CatalogId, session: SessionDep, principal: PrincipalDep) -> Catalog:
    catalog = session.get(Catalog, catalog_id)
    if catalog is None or catalog.tenant_id != principal.tenant_id:
        raise HTTPException(status_code=404, detail=f"no catalog with id {catalog_id}")
    return catalog


JobDep = Annotated[Job, Depends(_job)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
