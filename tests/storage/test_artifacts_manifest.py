"""manifest.json: lists what a prefix holds, is written once and last, and catches any file that changed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from storage.artifacts import ArtifactStore, LocalArtifactStore, StoredObject, upload_dir
from storage.artifacts.manifest import build_manifest, read_manifest, verify_against_manifest, write_manifest
from storage.errors import ChecksumMismatch, InvalidKey, ObjectExists, ObjectNotFound, StorageError
from tests.fixtures.s3 import S3Endpoint


@pytest.fixture(params=["local", "moto"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    endpoint: S3Endpoint = request.getfixturevalue("moto_s3")
    return endpoint.store(f"manifest-{uuid.uuid4().hex[:8]}")


@pytest.fixture()
def published(store: ArtifactStore, tmp_path: Path) -> list[StoredObject]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"\x00" * 4096)
    objects = upload_dir(store, model, "jobs/1/model")
    objects.append(store.put_bytes("jobs/1/report.json", b"{}"))
    return objects


def test_manifest_lists_every_file_relative_to_the_prefix(store: ArtifactStore,
                                                          published: list[StoredObject]) -> None:
    written = write_manifest(store, "jobs/1", published)
    assert written.key == "jobs/1/manifest.json"
    manifest = read_manifest(store, "jobs/1")
    assert manifest is not None and manifest["version"] == 1 and manifest["created_at"]
    assert manifest["files"] == {
        o.key.removeprefix("jobs/1/"): {"size": o.size, "sha256": o.sha256} for o in published}
    assert json.loads(store.get_bytes("jobs/1/manifest.json")) == manifest
    verify_against_manifest(store, "jobs/1")


def test_manifest_is_written_exactly_once(store: ArtifactStore, published: list[StoredObject]) -> None:
    write_manifest(store, "jobs/1", published)
    with pytest.raises(ObjectExists):
        write_manifest(store, "jobs/1", published[:1])
    assert len(read_manifest(store, "jobs/1")["files"]) == len(published)  # type: ignore[index]


def test_a_prefix_without_a_manifest_is_incomplete(store: ArtifactStore,
                                                   published: list[StoredObject]) -> None:
    assert read_manifest(store, "jobs/1") is None
    with pytest.raises(ObjectNotFound, match="incomplete"):
        verify_against_manifest(store, "jobs/1")


def test_verify_catches_changed_and_missing_files(store: ArtifactStore,
                                                  published: list[StoredObject]) -> None:
    write_manifest(store, "jobs/1", published)
    store.put_bytes("jobs/1/report.json", b'{"tampered": true}')
    with pytest.raises(ChecksumMismatch, match="report.json"):
        verify_against_manifest(store, "jobs/1")
    store.put_bytes("jobs/1/report.json", b"{}")
    verify_against_manifest(store, "jobs/1")
    store.delete_prefix("jobs/1/model")
    with pytest.raises(ObjectNotFound):
        verify_against_manifest(store, "jobs/1")


def test_build_manifest_refuses_objects_outside_the_prefix() -> None:
    with pytest.raises(InvalidKey):
        build_manifest([StoredObject("jobs/10/x", 1, "0" * 64)], "jobs/1")
    with pytest.raises(StorageError):
        build_manifest([StoredObject("jobs/1/manifest.json", 1, "0" * 64)], "jobs/1")


def test_a_corrupt_manifest_is_an_error_not_a_missing_one(store: ArtifactStore) -> None:
    store.put_bytes("jobs/1/manifest.json", b"not json")
    with pytest.raises(StorageError, match="not valid JSON"):
        read_manifest(store, "jobs/1")
