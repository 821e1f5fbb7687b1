"""Source URIs (models, calibration and eval texts): parsed once, and checked against the allowed places."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class SourceRejected(ValueError):
    """A URI that names a place Shrinkray may not read from; the message says why."""


@dataclass(frozen=True)
class SourceUri:
    scheme: str  # "file" or "s3"
    path: Path | None = None  # file
    bucket: str | None = None  # s3
    key: str | None = None  # s3: key or prefix, without a leading slash


def parse_source_uri(uri: str, *, roots: list[Path], buckets: list[str]) -> SourceUri:
    """`file:///abs/path` under one of `roots` (any path when none are set) or `s3://bucket/key`."""
    if not uri or len(uri) > 2048 or any(ord(c) < 32 for c in uri):
        raise SourceRejected("must be a non-empty URI of at most 2048 printable characters")
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise SourceRejected(f"file:// URIs must not name a host (got {parsed.netloc!r})")
        raw = unquote(parsed.path)
        if not raw.startswith("/") or ".." in Path(raw).parts:
            raise SourceRejected("file:// URIs need an absolute path without '..'")
        path = Path(raw).resolve()
        if roots and not any(path.is_relative_to(root.resolve()) for root in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise SourceRejected(f"{path} is outside the allowed model roots ({allowed})")
        return SourceUri(scheme="file", path=path)
    if parsed.scheme == "s3":
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if not _BUCKET.match(bucket):
            raise SourceRejected(f"{bucket!r} is not a valid bucket name")
        if ".." in key.split("/") or "\\" in key:
            raise SourceRejected("s3:// keys must not contain '..' segments or backslashes")
        if buckets and bucket not in buckets:
            allowed = ", ".join(buckets)
            raise SourceRejected(f"bucket {bucket!r} is not one of the allowed buckets ({allowed})")
        return SourceUri(scheme="s3", bucket=bucket, key=key)
    if parsed.scheme in ("hf", "http", "https"):
        raise SourceRejected(f"{parsed.scheme}:// sources need network access, which this deployment has not "
                             "enabled; copy the model to file:// or s3://")
    if not parsed.scheme:
        raise SourceRejected("needs a scheme: file:///absolute/path or s3://bucket/prefix")
    raise SourceRejected(f"unsupported scheme {parsed.scheme!r}; use file:// or s3://")
