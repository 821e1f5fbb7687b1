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


class CatalogModel(BaseModel):
    """A model of a catalog; `name` defaults to the last part of its URI."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(..., min_length=1, max_length=2048)
    name: str | None = Field(None, min_length=1, max_length=200)
    calibration_uri: str | None = Field(None, max_length=2048)
    eval_uri: str | None = Field(None, max_length=2048)


class CatalogRecipe(BaseModel):
    """A preset by name, or an inline recipe with a name."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None
    recipe: dict[str, Any] | None = None
    name: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_recipe(self) -> CatalogRecipe:
        if (self.preset is None) == (self.recipe is None):
            raise ValueError("give exactly one of 'preset' and 'recipe'")
        if self.recipe is not None and self.name is None:
            raise ValueError("an inline recipe needs a 'name'")
        return self


class CatalogCreate(BaseModel):
    """Models x recipes: one job per pair. Sent as JSON, or as the same document in YAML."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    models: list[CatalogModel] = Field(..., min_length=1)
    recipes: list[CatalogRecipe] = Field(..., min_length=1)
    tolerance_pct: float = Field(3.0, ge=0, le=1000,
                                 description="largest perplexity increase (%) a recommended artifact may have")
    device: Literal["auto", "cpu", "gpu"] = "auto"


class CatalogCell(BaseModel):
    model: str
    recipe: str
    job_id: str
    status: str
    progress: float
    reused: bool
    size_bytes: int | None
    size_ratio: float | None
    ppl_before: float | None
    ppl_after: float | None
    ppl_change_pct: float | None
    decode_speedup: float | None = Field(description="batch-1 decode tokens/s over the original, GPU workers only")
    error: str | None
    artifacts: str = Field(description="the job's artifact listing")


class CatalogRecommendation(BaseModel):
    model: str
    recipe: str | None = Field(description="the smallest artifact within the tolerance; None if none is yet")
    job_id: str | None
    size_bytes: int | None
    ppl_change_pct: float | None
    reason: str


class CatalogOut(BaseModel):
    id: str
    name: str | None
    tolerance_pct: float
    created_at: datetime
    models: list[str]
    recipes: list[str]
    counts: dict[str, int]
    progress: float
    cells: list[CatalogCell]
    recommendations: list[CatalogRecommendation]


class CatalogSummary(BaseModel):
    id: str
    name: str | None
    created_at: datetime
    pairs: int
    counts: dict[str, int]
    progress: float


class CatalogPage(BaseModel):
    items: list[CatalogSummary]
    total: int
    limit: int
    offset: int


# Pages further than this are refused (422), not passed to the database (whose OFFSET is a bigint).
MAX_OFFSET = 10**9


class Problem(BaseModel):
    """An error that is not about one field: the job or catalog does not exist, or is in the wrong state."""

    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class FieldProblems(BaseModel):
    """A request refused because of named fields (the shape FastAPI uses for validation errors)."""

    detail: list[FieldProblem]


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a route can answer with."""
    described = {401: "no API key, or one that is not valid", 429: "too many requests with this key (Retry-After)",
                 404: "no such job or catalog", 409: "not possible in the current state",
                 413: "the request body is too large", 415: "unsupported content type",
                 422: "a field (named in loc) is invalid"}
    return {code: {"model": FieldProblems if code in (413, 415, 422) else Problem, "description": described[code]}
            for code in codes}
