"""The shared deployment the hostile-input battery runs against (see hostile_cases.deployment)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.hostile_cases import Deployment, deployment_under_attack


@pytest.fixture()
def deployment(migrated_postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    with deployment_under_attack(migrated_postgres_url, redis_url, tmp_path) as built:
        yield built
