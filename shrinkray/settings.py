"""The one place that reads the environment: every process is configured by `SHRINKRAY_*` variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_HOME = Path.home() / ".shrinkray"


class Settings(BaseSettings):
    """Configuration shared by the API, the workers and the CLI.

    The defaults describe the embedded mode (`shrinkray up`): SQLite, a local artifact
    directory and a file-system broker, all under `home`. Production sets the database,
    broker and artifact URLs to Postgres, Redis and an S3 bucket.
    """

    model_config = SettingsConfigDict(env_prefix="SHRINKRAY_", extra="ignore")

    home: Path = DEFAULT_HOME
    database_url: str = ""
    broker_url: str = ""
    artifact_url: str = Field("", description="file:///dir or s3://bucket[/prefix]")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    cache_dir: Path | None = None
    model_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="file:// models must lie under one; '{tenant}' is the tenant's name"
    )
    model_buckets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="s3:// models must be in one: 'bucket' or 'bucket/prefix/{tenant}'"
    )
    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = Field(None, description="the key the CLI sends (Authorization: Bearer)")
    auth_required: bool | None = Field(
        None, description="requests need an API key and see only their tenant's rows; unset: required unless the "
                          "database is SQLite (the embedded single-user mode)")
    auth_cache_s: float = Field(5.0, ge=0, description="a valid key is remembered this long (so a revoked key "
                                                       "works at most this long after revocation)")
    rate_limit_requests: int = Field(1200, ge=0, description="requests per key per window (0: no limit)")
    rate_limit_window_s: int = Field(60, ge=1)
    api_threads: int = Field(24, ge=1, le=200, description="requests one API process works on at once (the "
                                                            "rest wait); its database pool is sized above it")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="largest request body the API reads")
    presign_expiry_s: int = Field(900, ge=60, le=24 * 3600, description="lifetime of artifact download URLs")
    stage_soft_time_limit_s: int = 3 * 3600
    stage_hard_time_limit_s: int = 3 * 3600 + 300
    lease_s: int = 120
    heartbeat_s: int = 20
    max_attempts: int = Field(3, ge=1, description="attempts of a stage whose worker crashed or went silent")
    outage_max_attempts: int = Field(
        8, ge=1, description="attempts of a stage that failed because the store, database or broker was down "
                             "(with the backoff below: about ten minutes of outage before the job fails)")
    retry_backoff_s: int = Field(5, ge=0, description="wait before the 2nd attempt, doubled for each later one")
    retry_backoff_max_s: int = Field(300, ge=0)
    device: str = "auto"
    catalog_max_pairs: int = Field(500, description="models x recipes one catalog may hold")
    catalog_max_bytes: int = Field(1024 * 1024, description="largest catalog document accepted")

    @field_validator("model_roots", "model_buckets", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item for item in (part.strip() for part in value.split(",")) if item]
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        home = self.home.expanduser()
        self.home = home
        if not self.database_url:
            self.database_url = f"sqlite:///{home / 'shrinkray.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if not self.artifact_url:
            self.artifact_url = (home / "artifacts").as_uri()
        if self.cache_dir is None:
            self.cache_dir = home / "cache"
        if self.auth_required is None:
            self.auth_required = not self.database_url.startswith("sqlite")
        if self.stage_soft_time_limit_s >= self.stage_hard_time_limit_s:
            raise ValueError("stage_soft_time_limit_s must be below stage_hard_time_limit_s")
        return self

    @cached_property
    def visibility_timeout_s(self) -> int:
        """Redis redelivers an unacked task after this; twice the longest stage so it never races one."""
        return 2 * self.stage_hard_time_limit_s

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")
