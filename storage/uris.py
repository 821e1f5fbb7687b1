"""Source URIs (models, calibration and eval texts): parsed once, and checked against the places a tenant may read.

Only file:// and s3:// are fetched, never a URL naming a host, so a submission cannot make a worker reach
link-local, metadata or private addresses: the S3 endpoint is the operator's. Allowed roots and buckets may
contain `{tenant}`, so each team reads only its own folder or prefix; when tenants share a deployment, the
artifact store is never a source (another team's checkpoints live there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class SourcePolicy:
    """Where one tenant's sources may be. With nothing configured, a single-user deployment (`open`) reads any
    path or bucket and a shared one reads none; `blocked` places are refused even when inside an allowed one."""

    roots: tuple[Path, ...] = ()
    buckets: tuple[tuple[str, str], ...] = ()  # (bucket, key prefix without slashes, "" for the whole bucket)
    open: bool = True
    blocked: tuple[SourceUri, ...] = field(default=())

    @classmethod
    def for_tenant(cls, *, tenant: str, roots: list[str], buckets: list[str], open: bool,
                   blocked: tuple[SourceUri, ...] = ()) -> SourcePolicy:
        """`roots` like "/srv/models/{tenant}", `buckets` like "models" or "models/{tenant}"."""
        paths = tuple(Path(root.replace("{tenant}", tenant)).resolve() for root in roots)
        places = []
        for entry in buckets:
            bucket, _, prefix = entry.replace("{tenant}", tenant).partition("/")
            places.append((bucket, prefix.strip("/")))
        return cls(roots=paths, buckets=tuple(places), open=open, blocked=blocked)


def _under(key: str, prefix: str) -> bool:
    return not prefix or key.strip("/") == prefix or key.startswith(prefix + "/")


def parse_source_uri(uri: str, policy: SourcePolicy) -> SourceUri:
    """`file:///abs/path` under one of the policy's roots or `s3://bucket/key` in one of its buckets."""
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
        if not policy.roots and not policy.open:
            raise SourceRejected("file:// sources are not enabled on this deployment (no model roots configured)")
        if policy.roots and not any(path.is_relative_to(root) for root in policy.roots):
            allowed = ", ".join(str(r) for r in policy.roots)
            raise SourceRejected(f"{path} is outside the allowed model roots ({allowed})")
        if any(place.path is not None and path.is_relative_to(place.path) for place in policy.blocked):
            raise SourceRejected(f"{path} is inside the artifact store, which is not a source")
        return SourceUri(scheme="file", path=path)
    if parsed.scheme == "s3":
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if not _BUCKET.match(bucket):
            raise SourceRejected(f"{bucket!r} is not a valid bucket name")
        if ".." in key.split("/") or "\\" in key:
            raise SourceRejected("s3:// keys must not contain '..' segments or backslashes")
        if not policy.buckets and not policy.open:
            raise SourceRejected("s3:// sources are not enabled on this deployment (no model buckets configured)")
        if policy.buckets and not any(bucket == name and _under(key, prefix) for name, prefix in policy.buckets):
            allowed = ", ".join(f"s3://{name}/{prefix}" for name, prefix in policy.buckets)
            raise SourceRejected(f"s3://{bucket}/{key} is not in the allowed buckets ({allowed})")
        if any(place.bucket == bucket and _under(key, place.key or "") for place in policy.blocked):
            raise SourceRejected(f"s3://{bucket}/{key} is inside the artifact store, which is not a source")
        return SourceUri(scheme="s3", bucket=bucket, key=key)
    if parsed.scheme in ("hf", "http", "https"):
        raise SourceRejected(f"{parsed.scheme}:// sources need network access, which this deployment has not "
                             "enabled; copy the model to file:// or s3://")
    if not parsed.scheme:
        raise SourceRejected("needs a scheme: file:///absolute/path or s3://bucket/prefix")
    raise SourceRejected(f"unsupported scheme {parsed.scheme!r}; use file:// or s3://")


def parse_artifact_location(url: str) -> SourceUri:
    """The artifact store's own place (file:///dir or s3://bucket[/prefix]), to keep it out of sources."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return SourceUri(scheme="s3", bucket=parsed.netloc, key=parsed.path.strip("/"))
    return SourceUri(scheme="file", path=Path(unquote(parsed.path)).resolve())
