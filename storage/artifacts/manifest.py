"""manifest.json: the size and sha256 of every file under a prefix, written last and exactly once.

A prefix without a manifest is incomplete by definition; a prefix with one is complete and immutable.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from storage.artifacts.base import ArtifactStore, StoredObject
from storage.artifacts.keys import ensure_under, folder, join_key
from storage.errors import ChecksumMismatch, ObjectNotFound, StorageError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def manifest_key(prefix: str) -> str:
    return join_key(prefix, MANIFEST_NAME)


def build_manifest(objects: list[StoredObject], prefix: str) -> dict[str, Any]:
    """{"version", "files": {key relative to prefix: {"size", "sha256"}}, "created_at"}.

    Objects outside `prefix` are refused: a manifest only vouches for its own folder.
    """
    base = folder(prefix)
    files = {}
    for obj in sorted(objects, key=lambda o: o.key):
        relative = ensure_under(obj.key, base).removeprefix(base)
        if relative == MANIFEST_NAME:
            raise StorageError(f"{obj.key} is the manifest itself and cannot be listed in it")
        files[relative] = {"size": obj.size, "sha256": obj.sha256}
    return {"version": MANIFEST_VERSION, "files": files, "created_at": datetime.now(UTC).isoformat()}


def write_manifest(store: ArtifactStore, prefix: str, objects: list[StoredObject]) -> StoredObject:
    """Write the manifest once (ObjectExists if one is there already): call it after every file is stored."""
    body = json.dumps(build_manifest(objects, prefix), indent=2, sort_keys=True).encode()
    return store.put_bytes(manifest_key(prefix), body, if_absent=True)


def read_manifest(store: ArtifactStore, prefix: str) -> dict[str, Any] | None:
    """The manifest under `prefix`, or None while the prefix is incomplete."""
    try:
        raw = store.get_bytes(manifest_key(prefix))
    except ObjectNotFound:
        return None
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{manifest_key(prefix)} is not valid JSON ({exc}); rewrite the prefix") from exc
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("files"), dict):
        raise StorageError(f"{manifest_key(prefix)} is not a version {MANIFEST_VERSION} manifest")
    return manifest


def verify_against_manifest(store: ArtifactStore, prefix: str) -> None:
    """Every file the manifest lists exists with its size and sha256 (ObjectNotFound / ChecksumMismatch)."""
    manifest = read_manifest(store, prefix)
    if manifest is None:
        raise ObjectNotFound(f"{manifest_key(prefix)} does not exist: {prefix} is incomplete")
    for name, entry in manifest["files"].items():
        stored = store.stat(join_key(prefix, name))
        if (stored.size, stored.sha256) != (entry["size"], entry["sha256"]):
            raise ChecksumMismatch(f"{stored.key} has size {stored.size} and sha256 {stored.sha256}; the "
                                   f"manifest says {entry['size']} and {entry['sha256']}")
