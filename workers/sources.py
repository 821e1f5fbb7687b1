"""Bring a job's sources (model directory, calibration and eval texts) onto this worker.

Models are copied into the worker cache under a name derived from the URI, atomically, and
checked: only safetensors, no remote code; later stages verify the cached files' sha256 against
what the fetch stage recorded, so a model that changed under a job is caught.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from compress.errors import ModelRejected
from compress.model_io import ModelInfo, check_model_dir, inspect_model_dir
from shrinkray.services import artifact_store
from shrinkray.settings import Settings
from storage.artifacts import ArtifactStore, download_prefix
from storage.uris import SourcePolicy, SourceUri, parse_source_uri

MAX_TEXT_BYTES = 512 * 1024 * 1024


def fetch_model(uri: str, settings: Settings, policy: SourcePolicy) -> tuple[Path, ModelInfo]:
    """The cached model directory for `uri`, fetched if this worker has not got it yet. The URI is checked
    again here against the job's tenant: the rules may have changed since it was submitted."""
    source = parse_source_uri(uri, policy)
    assert settings.cache_dir is not None
    target = settings.cache_dir / "models" / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if target.is_dir():
        return target, inspect_model_dir(target)
    if source.scheme == "file":
        assert source.path is not None
        # Check the source itself first: a pickle checkpoint must not even be copied.
        check_model_dir(source.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        if source.scheme == "file":
            assert source.path is not None
            shutil.copytree(source.path, staging, dirs_exist_ok=True, symlinks=False)
        else:
            prefix = (source.key or "").rstrip("/")
            store = _bucket_store(source, settings)
            listing_prefix = f"{prefix}/" if prefix else ""
            if not store.list_keys(listing_prefix):
                raise ModelRejected(f"no objects under s3://{source.bucket}/{listing_prefix}")
            download_prefix(store, prefix, staging)
        info = inspect_model_dir(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, replace(info, path=target)


def cached_model(uri: str, settings: Settings, policy: SourcePolicy, expected_files: dict[str, str]) -> Path:
    """The model as the fetch stage saw it; re-fetched on a worker that lacks it, then verified."""
    path, info = fetch_model(uri, settings, policy)
    if info.files != expected_files:
        changed = sorted(set(info.files.items()) ^ set(expected_files.items()))
        names = sorted({name for name, _ in changed})
        raise ModelRejected(f"model files changed since the fetch stage: {', '.join(names[:5])}")
    return path


def read_text(uri: str, settings: Settings, policy: SourcePolicy) -> str:
    """A UTF-8 calibration or evaluation text from file:// or s3://."""
    source = parse_source_uri(uri, policy)
    if source.scheme == "file":
        assert source.path is not None
        if not source.path.is_file():
            raise ModelRejected(f"text file {source.path} does not exist")
        if source.path.stat().st_size > MAX_TEXT_BYTES:
            raise ModelRejected(f"text file {source.path} is larger than {MAX_TEXT_BYTES} bytes")
        data = source.path.read_bytes()
    else:
        data = _bucket_store(source, settings).get_bytes(source.key or "")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelRejected(f"{uri} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _bucket_store(source: SourceUri, settings: Settings) -> ArtifactStore:
    return artifact_store(settings, url=f"s3://{source.bucket}")
