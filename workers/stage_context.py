"""What a stage function receives and returns; stages never touch the job row themselves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compress.recipes import Recipe
from shrinkray.settings import Settings
from storage.artifacts import ArtifactStore, StoredObject
from storage.uris import SourcePolicy


@dataclass
class StageContext:
    job_id: str
    stage: str
    attempt: int
    model_uri: str
    calibration_uri: str | None
    eval_uri: str | None
    recipe: Recipe
    outputs: dict[str, dict[str, Any]]  # earlier stages' outputs, by stage name
    stage_seconds: dict[str, float]  # wall time of the earlier stages' successful runs
    settings: Settings
    sources: SourcePolicy  # where this job's tenant may read models and texts
    store: ArtifactStore
    workdir: Path
    device: torch.device
    report_progress: Callable[[float, str], None]
    should_stop: Callable[[], bool]

    @property
    def job_prefix(self) -> str:
        return f"jobs/{self.job_id}"

    @property
    def staging_prefix(self) -> str:
        """Where this attempt writes: unique per attempt, so a stale worker never overwrites a newer one."""
        return f"{self.job_prefix}/stages/{self.stage}/a{self.attempt}"


@dataclass
class StageResult:
    outputs: dict[str, Any]
    report: dict[str, Any] | None = None
    published: list[StoredObject] = field(default_factory=list)
