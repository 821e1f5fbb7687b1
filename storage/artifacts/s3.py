"""Artifacts in an S3 bucket (AWS, MinIO, any S3 API): checksummed uploads, verified after every write.

Every upload carries SHA-256 checksums the server checks on arrival (per part for multipart); afterwards
we read the server's ChecksumSHA256 back and compare it with our own digest of the file, so a file that
changed while uploading, or a server that stored something else, never passes as a good artifact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.utils import ChunksizeAdjuster

from storage.artifacts.base import ArtifactStore, StoredObject
from storage.artifacts.digests import Digest, digest_bytes, digest_file, digest_stream
from storage.artifacts.keys import folder, validate_key, validate_prefix
from storage.errors import (
    ChecksumMismatch,
    InvalidKey,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StoreUnavailable,
)

MULTIPART_BYTES = 8 * 1024 * 1024
# The full-file hex digest, kept with the object: for multipart uploads S3 only keeps a composite.
SHA256_METADATA = "sha256"
# A single CopyObject is limited to 5 GiB; larger objects are copied in parts, server-side still.
_COPY_CONFIG = TransferConfig(multipart_threshold=5 * 1024**3, multipart_chunksize=512 * 1024**2)
_STREAM_CHUNK = 1 << 20


class S3ArtifactStore(ArtifactStore):
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str = "us-east-1", access_key_id: str | None = None,
                 secret_access_key: str | None = None, connect_timeout_s: float = 5.0,
                 max_attempts: int = 3) -> None:
        self.bucket = bucket
        self.prefix = validate_prefix(prefix.strip("/"))
        self.endpoint_url = endpoint_url
        config = Config(
            connect_timeout=connect_timeout_s, read_timeout=120, signature_version="s3v4",
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            # Self-hosted servers (MinIO, test servers) answer on one host name: bucket goes in the path.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self._s3 = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key, config=config)
        self._upload_config = TransferConfig(multipart_threshold=MULTIPART_BYTES,
                                             multipart_chunksize=MULTIPART_BYTES)

    def __repr__(self) -> str:
        return f"S3ArtifactStore(s3://{self.bucket}/{self.prefix}, endpoint={self.endpoint_url or 'AWS'})"

    def put_file(self, key: str, path: Path) -> StoredObject:
        name = self._name(key)
        size = path.stat().st_size
        multipart = size >= MULTIPART_BYTES  # the same test boto3's transfer manager applies
        # Hash with the part size the transfer manager will use, so the composite checksum can be predicted.
        part_size = ChunksizeAdjuster().adjust_chunksize(MULTIPART_BYTES, size) if multipart else None
        digest = digest_file(path, part_size)
        metadata = {SHA256_METADATA: digest.sha256}
        with self._errors(key):
            if multipart:
                self._s3.upload_file(str(path), self.bucket, name, Config=self._upload_config,
                                     ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": metadata})
            else:
                with path.open("rb") as body:
                    # Our own digest as the checksum: the server rejects the body unless it hashes the same.
                    self._s3.put_object(Bucket=self.bucket, Key=name, Body=body, Metadata=metadata,
                                        ChecksumSHA256=digest.sha256_b64)
        return self._verify(key, digest)

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> StoredObject:
        name = self._name(key)
        digest = digest_bytes(data)
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        with self._errors(key):
            self._s3.put_object(Bucket=self.bucket, Key=name, Body=data, ChecksumSHA256=digest.sha256_b64,
                                Metadata={SHA256_METADATA: digest.sha256}, **condition)
        return self._verify(key, digest)

    def get_bytes(self, key: str) -> bytes:
        with self._errors(key):
            return self._s3.get_object(Bucket=self.bucket, Key=self._name(key))["Body"].read()

    def download_file(self, key: str, dest: Path) -> None:
        recorded = self._head(key)["Metadata"].get(SHA256_METADATA)
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=".~tmp-", dir=dest.parent)
        os.close(handle)
        temp = Path(temp_name)
        try:
            with self._errors(key):
                self._s3.download_file(self.bucket, self._name(key), str(temp), Config=self._upload_config)
            if recorded and digest_file(temp).sha256 != recorded:
                raise ChecksumMismatch(f"{key}: the downloaded bytes differ from the sha256 recorded at "
                                       "upload; retry, and if it persists the stored object is damaged")
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except ObjectNotFound:
            return False
        return True

    def stat(self, key: str) -> StoredObject:
        """The sha256 recorded at upload (verified then against the server's checksum); objects we did not
        write carry none, so those are streamed back and hashed."""
        head = self._head(key)
        recorded = head["Metadata"].get(SHA256_METADATA) or self._stream_digest(key).sha256
        return StoredObject(key=key, size=head["ContentLength"], sha256=recorded)

    def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        keys = []
        with self._errors(None):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._name(prefix, allow_prefix=True))
            for page in pages:
                keys.extend(self._relative(item["Key"]) for item in page.get("Contents", []))
        return sorted(keys)

    def copy(self, src_key: str, dst_key: str) -> StoredObject:
        source = self._head(src_key, checksums=True)
        recorded = source["Metadata"].get(SHA256_METADATA) or self._stream_digest(src_key).sha256
        expected = Digest(size=source["ContentLength"], sha256=recorded)
        with self._errors(dst_key):
            self._s3.copy({"Bucket": self.bucket, "Key": self._name(src_key)}, self.bucket,
                          self._name(dst_key), Config=_COPY_CONFIG,
                          ExtraArgs={"ChecksumAlgorithm": "SHA256", "MetadataDirective": "REPLACE",
                                     "Metadata": {**source["Metadata"], SHA256_METADATA: recorded}})
        # Servers differ: AWS and moto compute a fresh full-object checksum, ministack keeps the source's.
        return self._verify(dst_key, expected, also_accept=source.get("ChecksumSHA256"))

    def delete_prefix(self, prefix: str) -> int:
        base = folder(prefix)
        if not base:
            raise InvalidKey("delete_prefix needs a non-empty prefix; refusing to empty the whole store")
        keys = self.list_keys(base)
        with self._errors(None):
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": self._name(key)} for key in keys[start:start + 1000]]
                answer = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StorageError(f"could not delete {first['Key']}: {first['Code']}: "
                                       f"{first['Message']}")
        return len(keys)

    def url_for(self, key: str, expires_s: int) -> str:
        with self._errors(key):
            return self._s3.generate_presigned_url("get_object", ExpiresIn=expires_s,
                                                   Params={"Bucket": self.bucket, "Key": self._name(key)})

    def check(self) -> None:
        with self._errors(None):
            self._s3.head_bucket(Bucket=self.bucket)

    def abort_stale_multipart_uploads(self, older_than_s: float) -> int:
        """Abort uploads under our prefix begun more than `older_than_s` ago (their parts cost storage)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        aborted = 0
        with self._errors(None):
            pages = self._s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._name("", allow_prefix=True))
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self._s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                        UploadId=upload["UploadId"])
                        aborted += 1
        return aborted

    def _verify(self, key: str, expected: Digest, also_accept: str | None = None) -> StoredObject:
        """Compare the server's checksum (or, if it keeps none, the streamed-back bytes) with `expected`."""
        head = self._head(key, checksums=True)
        server = head.get("ChecksumSHA256")
        if server is not None:
            matches = _checksum_matches(server, expected) or server == also_accept
        else:  # a server that keeps no checksum: hash what it hands back
            matches = self._stream_digest(key).sha256 == expected.sha256
        if not matches or head["ContentLength"] != expected.size:
            with self._errors(key):
                self._s3.delete_object(Bucket=self.bucket, Key=self._name(key))
            raise ChecksumMismatch(
                f"{key}: the store holds {head['ContentLength']} bytes with checksum {server}, expected "
                f"{expected.size} bytes with sha256 {expected.sha256}; the object was deleted. The source "
                "changed during upload or was corrupted in transit: retry")
        return StoredObject(key=key, size=expected.size, sha256=expected.sha256)

    def _head(self, key: str, *, checksums: bool = False) -> dict[str, Any]:
        mode = {"ChecksumMode": "ENABLED"} if checksums else {}
        with self._errors(key):
            return self._s3.head_object(Bucket=self.bucket, Key=self._name(key), **mode)

    def _stream_digest(self, key: str) -> Digest:
        with self._errors(key):
            body = self._s3.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
            return digest_stream(body.iter_chunks(_STREAM_CHUNK))

    def _name(self, key: str, *, allow_prefix: bool = False) -> str:
        """The bucket's name for our `key`: the store's prefix in front."""
        if allow_prefix:
            validate_prefix(key)
        else:
            validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, name: str) -> str:
        return name.removeprefix(f"{self.prefix}/") if self.prefix else name

    @contextmanager
    def _errors(self, key: str | None) -> Iterator[None]:
        """botocore's errors as ours; `key` None means a bucket-level call, where 404 is a missing bucket."""
        try:
            yield
        except S3UploadFailedError as exc:  # boto3 wraps the ClientError of a multipart upload
            cause = exc.__context__
            if isinstance(cause, ClientError):
                raise self._translate(cause, key) from exc
            raise StorageError(str(exc)) from exc
        except ClientError as exc:
            raise self._translate(exc, key) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StoreUnavailable(f"no usable S3 credentials for {self._where()}: set the access key id and "
                                   f"secret ({exc})") from exc
        except (ConnectionError, HTTPClientError) as exc:
            raise StoreUnavailable(f"cannot reach {self._where()}: {exc}. Check the endpoint URL and that "
                                   "the server is running") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 request to {self._where()} failed: {exc}") from exc

    def _translate(self, exc: ClientError, key: str | None) -> StorageError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        where = self._where()
        if code == "NoSuchBucket" or (status == 404 and key is None):
            return StoreUnavailable(f"bucket {self.bucket!r} does not exist at {where}; create it first")
        if status == 404 or code in ("NoSuchKey", "NotFound"):
            return ObjectNotFound(f"no object {key} in s3://{self.bucket}/{self.prefix}")
        if status == 412 or code == "PreconditionFailed":
            return ObjectExists(f"{key} already exists in s3://{self.bucket}/{self.prefix}; it is written "
                                "once")
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            return ChecksumMismatch(f"the server rejected {key}: its bytes do not match the checksum sent; "
                                    "the source changed during upload or was corrupted in transit: retry")
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreUnavailable(f"{where} refused our credentials ({code}): check the access key id, the "
                                    f"secret and the bucket policy for {self.bucket!r}")
        if status >= 500 or code in ("ConditionalRequestConflict", "SlowDown"):
            return StoreUnavailable(f"{where} is failing or busy ({code}: {error.get('Message')}); "
                                    "retry later")
        return StorageError(f"S3 said {code} ({status}) about {key or self.bucket}: {error.get('Message')}")

    def _where(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint_url or 'AWS'}"


def _checksum_matches(server: str, expected: Digest) -> bool:
    """Full-object checksums match our sha256; multipart ones match the composite, with or without '-N'.

    moto (5.x) returns the composite without the '-N' part count; AWS, MinIO and ministack append it.
    """
    value, _, parts = server.partition("-")
    if parts and parts != str(len(expected.part_digests)):
        return False
    return value == expected.sha256_b64 or bool(expected.part_digests) and value == expected.composite_b64
