"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JobCreate(BaseModel):
    """A model and a recipe: a preset name, or an inline recipe (the same schema as recipe.yaml)."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(..., min_length=1, max_length=2048,
                           examples=["file:///models/llama", "s3://models/llama-3-8b"])
    preset: str | None = Field(None, examples=["w4a16-rtn"])
    recipe: dict[str, Any] | None = None
    calibration_uri: str | None = Field(None, max_length=2048, description="UTF-8 text; bundled text if unset")
    eval_uri: str | None = Field(None, max_length=2048, description="UTF-8 text; bundled text if unset")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="gpu pins the job to GPU workers; auto and cpu run on any worker")

    @model_validator(mode="after")
    def _one_recipe(self) -> JobCreate:
        if (self.preset is None) == (self.recipe is None):
            raise ValueError("give exactly one of 'preset' and 'recipe'")
        return self


class StageRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    stage: str
    attempt: int
    status: str
    worker: str | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: str
    stage: str
    attempt: int
    queue: str
    model_uri: str
    preset: str | None
    recipe: dict[str, Any]
    calibration_uri: str | None
    eval_uri: str | None
    progress: float
    progress_message: str | None
    error: str | None
    cancel_requested: bool
    report: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    stages: list[StageRunOut] = []


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class ArtifactOut(BaseModel):
    key: str
    name: str = Field(description="path relative to the job's prefix, e.g. model/config.json")
    size: int
    sha256: str
    url: str = Field(description="presigned GET URL (S3) or file:// URI (embedded mode)")


class ArtifactList(BaseModel):
    job_id: str
    expires_in_s: int | None
    items: list[ArtifactOut]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, str]
