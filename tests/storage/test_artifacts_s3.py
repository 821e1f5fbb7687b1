"""S3 specifics over real HTTP: multipart checksums, corruption caught, server-side copy, errors mapped.

moto accepts any checksum, so every integrity test also runs on ministack, which rejects bad digests.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from pathlib import Path

import botocore.exceptions
import pytest

from storage.artifacts import S3ArtifactStore, open_store
from storage.artifacts import s3 as s3_module
from storage.artifacts.digests import Digest, digest_file
from storage.errors import ChecksumMismatch, ObjectExists, StorageError, StoreUnavailable
from tests.fixtures.s3 import S3Endpoint, _free_port

BIG = 17 * 1024 * 1024  # three 8 MiB parts, the last one short


@pytest.fixture(params=["moto", "ministack"])
def endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    return request.getfixturevalue(f"{request.param}_s3")


@pytest.fixture()
def store(endpoint: S3Endpoint) -> S3ArtifactStore:
    return endpoint.store(f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "shard.safetensors"
    path.write_bytes(os.urandom(BIG))
    return path


def test_multipart_upload_round_trips_with_a_verified_composite_checksum(
        store: S3ArtifactStore, endpoint: S3Endpoint, big_file: Path, tmp_path: Path) -> None:
    stored = store.put_file("jobs/1/model/shard.safetensors", big_file)
    data = big_file.read_bytes()
    assert (stored.size, stored.sha256) == (BIG, hashlib.sha256(data).hexdigest())
    name = f"{store.prefix}/jobs/1/model/shard.safetensors"
    head = endpoint.client().head_object(Bucket=endpoint.bucket, Key=name, ChecksumMode="ENABLED")
    parts = [hashlib.sha256(data[i:i + (8 << 20)]).digest() for i in range(0, BIG, 8 << 20)]
    composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode()
    assert head["ChecksumSHA256"].removesuffix("-3") == composite  # moto omits the '-3'
    assert head["Metadata"]["sha256"] == stored.sha256
    store.download_file("jobs/1/model/shard.safetensors", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == data
    assert store.copy("jobs/1/model/shard.safetensors", "jobs/2/model/shard.safetensors") == \
        type(stored)("jobs/2/model/shard.safetensors", BIG, stored.sha256)


def test_server_rejects_a_wrong_checksum(ministack_s3: S3Endpoint) -> None:
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ministack_s3.client().put_object(Bucket=ministack_s3.bucket, Key=f"bad-{uuid.uuid4().hex}",
                                         Body=b"payload", ChecksumSHA256=wrong)
    assert caught.value.response["Error"]["Code"] == "BadDigest"


@pytest.mark.parametrize("size", [100_000, BIG], ids=["single-part", "multipart"])
def test_put_file_catches_bytes_that_changed_after_hashing(
        store: S3ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    path = tmp_path / "shard.safetensors"
    path.write_bytes(os.urandom(size))

    def digest_then_corrupt(file: Path, part_size: int | None = None) -> Digest:
        digest = digest_file(file, part_size)
        with file.open("r+b") as handle:  # one flipped byte between hashing and uploading
            handle.seek(size // 2)
            flipped = handle.read(1)[0] ^ 0xFF
            handle.seek(size // 2)  # (written after the byte read, it left the file unchanged one time in 256)
            handle.write(bytes([flipped]))
        return digest

    monkeypatch.setattr(s3_module, "digest_file", digest_then_corrupt)
    with pytest.raises(ChecksumMismatch):
        store.put_file("jobs/1/model/shard.safetensors", path)
    assert not store.exists("jobs/1/model/shard.safetensors")


def test_verification_streams_the_object_when_the_server_keeps_no_checksum(
        store: S3ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    head_object = store._s3.head_object

    def head_without_checksums(**kwargs: object) -> dict:
        return {k: v for k, v in head_object(**kwargs).items() if not k.startswith("Checksum")}

    monkeypatch.setattr(store._s3, "head_object", head_without_checksums)
    assert store.put_bytes("a/report.json", b"{}").sha256 == hashlib.sha256(b"{}").hexdigest()
    monkeypatch.setattr(s3_module, "digest_bytes", lambda data: Digest(len(data), "0" * 64))
    with pytest.raises(ChecksumMismatch):
        store.put_bytes("a/other.json", b"{}")
    assert not store.exists("a/other.json")


def test_foreign_objects_without_our_metadata_are_hashed_on_copy(store: S3ArtifactStore,
                                                                 endpoint: S3Endpoint) -> None:
    name = f"{store.prefix}/models/m/config.json"
    endpoint.client().put_object(Bucket=endpoint.bucket, Key=name, Body=b"{}")
    expected = hashlib.sha256(b"{}").hexdigest()
    assert store.stat("models/m/config.json").sha256 == expected
    assert store.copy("models/m/config.json", "jobs/1/config.json").sha256 == expected
    assert store.stat("jobs/1/config.json").sha256 == expected


def test_conditional_create_is_enforced_by_the_server(store: S3ArtifactStore) -> None:
    store.put_bytes("jobs/1/manifest.json", b"one", if_absent=True)
    with pytest.raises(ObjectExists):
        store.put_bytes("jobs/1/manifest.json", b"two", if_absent=True)
    assert store.get_bytes("jobs/1/manifest.json") == b"one"


def test_stale_multipart_uploads_are_aborted(ministack_s3: S3Endpoint) -> None:
    # ministack, not moto: moto reports every upload as initiated in 2010, so nothing is ever "recent".
    store = ministack_s3.store(f"t-{uuid.uuid4().hex[:8]}")
    ministack_s3.client().create_multipart_upload(Bucket=ministack_s3.bucket, Key=f"{store.prefix}/x/partial")
    assert store.abort_stale_multipart_uploads(older_than_s=3600) == 0
    assert store.abort_stale_multipart_uploads(older_than_s=0) == 1
    assert store.abort_stale_multipart_uploads(older_than_s=0) == 0


def test_unreachable_endpoint_is_store_unavailable_quickly() -> None:
    store = S3ArtifactStore("shrinkray", endpoint_url=f"http://127.0.0.1:{_free_port()}", access_key_id="x",
                            secret_access_key="y", connect_timeout_s=1, max_attempts=2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot reach"):
        store.check()
    with pytest.raises(StoreUnavailable):
        store.put_bytes("a", b"x")
    assert time.monotonic() - started < 3


def test_missing_bucket_is_store_unavailable(moto_s3: S3Endpoint) -> None:
    store = S3ArtifactStore("no-such-bucket", endpoint_url=moto_s3.endpoint_url, access_key_id="testing",
                            secret_access_key="testing")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.check()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.put_bytes("a", b"x")


def test_open_store_picks_the_backend_from_the_url(tmp_path: Path, moto_s3: S3Endpoint) -> None:
    local = open_store((tmp_path / "art").as_uri())
    local.put_bytes("k", b"v")
    assert (tmp_path / "art" / "k").read_bytes() == b"v"
    remote = open_store(f"s3://{moto_s3.bucket}/some/prefix", endpoint_url=moto_s3.endpoint_url,
                        access_key_id="testing", secret_access_key="testing")
    assert isinstance(remote, S3ArtifactStore) and remote.prefix == "some/prefix"
    remote.check()
    for url in ("http://example.com/x", "file://relative/dir", "s3:///nobucket", "dir/only"):
        with pytest.raises(StorageError):
            open_store(url)
