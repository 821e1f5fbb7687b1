"""The behaviour every ArtifactStore promises, run against a local directory and moto's S3 over HTTP."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import httpx
import pytest

from storage.artifacts import ArtifactStore, LocalArtifactStore, download_prefix, upload_dir
from storage.errors import InvalidKey, ObjectExists, ObjectNotFound
from tests.fixtures.s3 import S3Endpoint


@pytest.fixture(params=["local", "moto"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    endpoint: S3Endpoint = request.getfixturevalue("moto_s3")
    return endpoint.store(f"contract-{uuid.uuid4().hex[:8]}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_bytes_and_get_bytes_round_trip(store: ArtifactStore) -> None:
    stored = store.put_bytes("jobs/1/report.json", b'{"ok": true}')
    assert (stored.key, stored.size, stored.sha256) == ("jobs/1/report.json", 12, _sha(b'{"ok": true}'))
    assert store.get_bytes("jobs/1/report.json") == b'{"ok": true}'
    assert store.exists("jobs/1/report.json") and not store.exists("jobs/1/nothing")
    assert store.stat("jobs/1/report.json") == stored


def test_if_absent_writes_exactly_once(store: ArtifactStore) -> None:
    store.put_bytes("jobs/1/manifest.json", b"first", if_absent=True)
    with pytest.raises(ObjectExists):
        store.put_bytes("jobs/1/manifest.json", b"second", if_absent=True)
    assert store.get_bytes("jobs/1/manifest.json") == b"first"


def test_missing_objects_raise_object_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("no/such/key")
    with pytest.raises(ObjectNotFound):
        store.download_file("no/such/key", tmp_path / "out")
    with pytest.raises(ObjectNotFound):
        store.copy("no/such/key", "elsewhere")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a\\b", "a//b"])
def test_traversal_keys_are_rejected_everywhere(store: ArtifactStore, key: str, tmp_path: Path) -> None:
    for call in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key), lambda: store.exists(key),
                 lambda: store.put_file(key, tmp_path), lambda: store.url_for(key, 60),
                 lambda: store.delete_prefix(key), lambda: store.list_keys(key)):
        with pytest.raises(InvalidKey):
            call()


def test_put_file_download_file_and_copy_keep_the_bytes(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    source = tmp_path / "shard.safetensors"
    source.write_bytes(data)
    stored = store.put_file("staging/a1/model/shard.safetensors", source)
    assert (stored.size, stored.sha256) == (len(data), _sha(data))
    copied = store.copy("staging/a1/model/shard.safetensors", "jobs/1/model/shard.safetensors")
    assert (copied.size, copied.sha256) == (stored.size, stored.sha256)
    dest = tmp_path / "down" / "shard.safetensors"
    store.download_file("jobs/1/model/shard.safetensors", dest)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["shard.safetensors"]  # no temp file left


def test_upload_dir_list_download_prefix_and_delete_prefix(store: ArtifactStore, tmp_path: Path) -> None:
    local = tmp_path / "model"
    (local / "sub").mkdir(parents=True)
    (local / "config.json").write_text("{}")
    (local / "sub" / "weights.bin").write_bytes(b"\x01" * 1000)
    objects = upload_dir(store, local, "jobs/1/model")
    assert [o.key for o in objects] == ["jobs/1/model/config.json", "jobs/1/model/sub/weights.bin"]
    store.put_bytes("jobs/10/model/other", b"sibling")
    assert store.list_keys("jobs/1/") == ["jobs/1/model/config.json", "jobs/1/model/sub/weights.bin"]
    assert store.list_keys("jobs/1") == [*store.list_keys("jobs/1/"), "jobs/10/model/other"]
    restored = download_prefix(store, "jobs/1/model", tmp_path / "restored")
    assert sorted(p.relative_to(tmp_path / "restored").as_posix() for p in restored) == [
        "config.json", "sub/weights.bin"]
    assert (tmp_path / "restored" / "sub" / "weights.bin").read_bytes() == b"\x01" * 1000
    assert store.delete_prefix("jobs/1") == 2
    assert store.list_keys("jobs/") == ["jobs/10/model/other"]
    with pytest.raises(InvalidKey):
        store.delete_prefix("")


def test_url_for_serves_the_exact_bytes(store: ArtifactStore) -> None:
    data = os.urandom(50_000)
    store.put_bytes("jobs/1/model/blob", data)
    url = store.url_for("jobs/1/model/blob", 60)
    if url.startswith("file://"):
        assert Path(url.removeprefix("file://")).read_bytes() == data
    else:
        assert "X-Amz-Expires=60" in url
        assert httpx.get(url, timeout=10).content == data


def test_check_passes_on_a_usable_store(store: ArtifactStore) -> None:
    store.check()
