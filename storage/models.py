"""Metadata tables: tenants and their API keys, jobs, the runs of their stages, the artifacts they published,
the outbox and catalogs.

Postgres is the source of truth for job state; Celery only delivers "job X, stage Y, attempt N".
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Stage(enum.StrEnum):
    FETCH = "fetch"
    CALIBRATE = "calibrate"
    COMPRESS = "compress"
    VALIDATE = "validate"
    PUBLISH = "publish"

    @property
    def next(self) -> Stage | None:
        order = list(Stage)
        position = order.index(self)
        return order[position + 1] if position + 1 < len(order) else None


# The tenant of a deployment without API keys (the embedded mode), and of rows made before tenants existed.
DEFAULT_TENANT_ID = "00000000-0000-0000-0000-000000000000"


class Tenant(Base):
    """A team: it sees only its own jobs, catalogs and artifacts."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A key a tenant authenticates with. Only its sha256 is kept; `prefix` finds the row without scanning."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Job(Base):
    """One model compressed by one recipe; `stage` and `attempt` fence every worker write."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_id_idempotency_key"),
        Index("ix_jobs_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), default=DEFAULT_TENANT_ID,
                                           server_default=DEFAULT_TENANT_ID)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    stage: Mapped[str] = mapped_column(String(16), default=Stage.FETCH)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    queue: Mapped[str] = mapped_column(String(32), default="cpu")
    model_uri: Mapped[str] = mapped_column(Text)
    calibration_uri: Mapped[str | None] = mapped_column(Text)
    eval_uri: Mapped[str | None] = mapped_column(Text)
    preset: Mapped[str | None] = mapped_column(String(64))
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    # sha256 of what determines the artifact (model, recipe, data, queue): catalogs reuse a job that has it
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    # the client's Idempotency-Key (unique per tenant): a retried submission finds this job instead of another
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class StageRun(Base):
    """One attempt of one stage: its timing and outcome, for the stage timeline and post-mortems."""

    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("job_id", "stage", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class Artifact(Base):
    """A published object of a job, as recorded in its manifest."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """A stage task to publish to the broker, written in the same transaction as the job change."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(32))
    countdown_s: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(index=True)


class Catalog(Base):
    """Models x recipes submitted in one request; each pair is a job (possibly shared with earlier catalogs)."""

    __tablename__ = "catalogs"
    __table_args__ = (
        Index("ix_catalogs_tenant_id_created_at", "tenant_id", "created_at"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_catalogs_tenant_id_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), default=DEFAULT_TENANT_ID,
                                           server_default=DEFAULT_TENANT_ID)
    name: Mapped[str | None] = mapped_column(String(200))
    tolerance_pct: Mapped[float] = mapped_column(Float, default=3.0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # sha256 of the validated document, and the client's Idempotency-Key: a retried submission finds this catalog
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class CatalogEntry(Base):
    """One model x recipe cell of a catalog and the job that computes it; `reused` marks a job the catalog
    found already done or under way rather than created (cancelling the catalog leaves those alone)."""

    __tablename__ = "catalog_entries"
    __table_args__ = (UniqueConstraint("catalog_id", "model_index", "recipe_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    catalog_id: Mapped[str] = mapped_column(ForeignKey("catalogs.id", ondelete="CASCADE"), index=True)
    model_index: Mapped[int] = mapped_column(Integer)
    recipe_index: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(200))
    recipe_name: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    reused: Mapped[bool] = mapped_column(Boolean, default=False)
