"""The fetch stage's own checks: the source is checked again on the worker (its rules or the directory may have
changed since submission), a refused model leaves nothing in the cache, and a later stage notices files that
changed under the job."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compress.errors import ModelRejected
from shrinkray.settings import Settings
from storage.uris import SourcePolicy, SourceRejected
from tests.conftest import SHARED_MODEL, model_stub
from workers.sources import cached_model, fetch_model


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def test_a_model_that_turned_bad_after_submission_is_refused_and_not_cached(settings: Settings,
                                                                            tmp_path: Path) -> None:
    model = model_stub(tmp_path / "m")
    (model / "sub").mkdir()
    (model / "sub" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelRejected, match="sub/pytorch_model.bin: pickle"):
        fetch_model(model.as_uri(), settings, SourcePolicy())
    cache = settings.cache_dir / "models"  # type: ignore[operator]
    assert not cache.exists() or not any(cache.iterdir())


def test_the_tenants_rules_are_applied_on_the_worker_too(settings: Settings, tmp_path: Path) -> None:
    policy = SourcePolicy.for_tenant(tenant="team-a", roots=[str(tmp_path / "{tenant}")], buckets=[], open=False)
    with pytest.raises(SourceRejected, match="outside the allowed model roots"):
        fetch_model(SHARED_MODEL.as_uri(), settings, policy)


def test_files_changed_since_the_fetch_stage_are_caught(settings: Settings, tmp_path: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(SHARED_MODEL, model)
    path, info = fetch_model(model.as_uri(), settings, SourcePolicy())
    assert path != model and info.path == path and info.files["config.json"]
    assert cached_model(model.as_uri(), settings, SourcePolicy(), info.files) == path
    (path / "tokenizer_config.json").write_text("{}")  # the cached copy was tampered with
    with pytest.raises(ModelRejected, match="changed since the fetch stage: tokenizer_config.json"):
        cached_model(model.as_uri(), settings, SourcePolicy(), info.files)
