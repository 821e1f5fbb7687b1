"""Artifact stores (a local directory or an S3 bucket) behind one interface, chosen by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from storage.artifacts.base import ArtifactStore, StoredObject, download_prefix, upload_dir
from storage.artifacts.keys import ensure_under, join_key, validate_key
from storage.artifacts.local import LocalArtifactStore
from storage.artifacts.s3 import S3ArtifactStore
from storage.errors import StorageError

__all__ = ["ArtifactStore", "LocalArtifactStore", "S3ArtifactStore", "StoredObject", "download_prefix",
           "ensure_under", "join_key", "open_store", "upload_dir", "validate_key"]


def open_store(url: str, *, endpoint_url: str | None = None, region: str = "us-east-1",
               access_key_id: str | None = None, secret_access_key: str | None = None) -> ArtifactStore:
    """`file:///abs/dir` or `s3://bucket[/prefix]`; the S3 arguments are ignored for a local directory."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = unquote(parsed.path)
        if parsed.netloc not in ("", "localhost") or not path.startswith("/"):
            raise StorageError(f"artifact URL {url!r} must be file:///absolute/dir")
        return LocalArtifactStore(Path(path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"artifact URL {url!r} must name a bucket: s3://bucket[/prefix]")
        return S3ArtifactStore(parsed.netloc, parsed.path.strip("/"), endpoint_url=endpoint_url,
                               region=region, access_key_id=access_key_id,
                               secret_access_key=secret_access_key)
    raise StorageError(f"artifact URL {url!r} has an unsupported scheme; use file:///dir or s3://bucket[/prefix]")
