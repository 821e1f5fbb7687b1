"""/v1/jobs/{id}/artifacts: where to download a finished job's checkpoint, report and manifest."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.deps import SessionDep, SettingsDep, StoreDep
from api.schemas import ArtifactList, ArtifactOut, problems
from api.scoped import JobDep
from storage.jobs import job_artifacts
from storage.models import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"], responses=problems(401, 429))


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=problems(404, 409))
def list_artifacts(job: JobDep, session: SessionDep, store: StoreDep, settings: SettingsDep) -> ArtifactList:
    """Only a succeeded job has artifacts: its manifest is committed and the database row points at it. The
    download URLs are presigned for this request alone (JobDep: only the job's tenant gets here) and expire."""
    if job.status != JobStatus.SUCCEEDED:
        raise HTTPException(status_code=409, detail=f"job {job.id} is {job.status}; artifacts exist once it "
                                                    "has succeeded")
    prefix = f"jobs/{job.id}/"
    expiry = settings.presign_expiry_s
    items = [ArtifactOut(key=a.key, name=a.key.removeprefix(prefix), size=a.size, sha256=a.sha256,
                         url=store.url_for(a.key, expiry))
             for a in job_artifacts(session, job.id)]
    return ArtifactList(job_id=job.id, expires_in_s=expiry if settings.artifact_url.startswith("s3://") else None,
                        items=items)
