"""The one interface every artifact backend implements, and the directory helpers built on it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from storage.artifacts.keys import folder, join_key
from storage.errors import StorageError


@dataclass(frozen=True)
class StoredObject:
    """An object as stored and verified: what manifests and the artifacts table record."""

    key: str
    size: int
    sha256: str  # hex


class ArtifactStore(ABC):
    """Keys are relative ('jobs/<id>/model/config.json'); every write is verified before it returns."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> StoredObject:
        """Upload `path`, then check the stored sha256 is the local one (else delete: ChecksumMismatch)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> StoredObject:
        """Store `data`; with `if_absent` only when nothing is at `key` yet (else ObjectExists)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's bytes, or ObjectNotFound."""

    @abstractmethod
    def download_file(self, key: str, dest: Path) -> None:
        """Write the object to `dest` atomically (temp file, then rename): `dest` is whole or absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def stat(self, key: str) -> StoredObject:
        """Size and sha256 of the stored object (ObjectNotFound if absent), without a download if possible."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys starting with `prefix` (a plain string prefix, as in S3)."""

    @abstractmethod
    def copy(self, src_key: str, dst_key: str) -> StoredObject:
        """Copy inside the store (server-side where possible), verified to carry the same sha256."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete all under the folder `prefix` (never a sibling sharing its name); return how many."""

    @abstractmethod
    def url_for(self, key: str, expires_s: int) -> str:
        """A URL a client can GET without credentials: presigned for S3, `file://` for a local directory."""

    @abstractmethod
    def check(self) -> None:
        """Health probe: return if the store can be used, else raise StoreUnavailable saying why."""


def upload_dir(store: ArtifactStore, local_dir: Path, prefix: str) -> list[StoredObject]:
    """Every file under `local_dir` at `prefix/<relative path>`, in sorted order; symlinks are refused."""
    objects = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file() or p.is_symlink()):
        if path.is_symlink():
            raise StorageError(f"{path} is a symlink; upload_dir copies regular files only")
        objects.append(store.put_file(join_key(prefix, path.relative_to(local_dir).as_posix()), path))
    return objects


def download_prefix(store: ArtifactStore, prefix: str, dest_dir: Path) -> list[Path]:
    """Every object under the folder `prefix` into `dest_dir`, keeping the relative layout."""
    base = folder(prefix)
    paths = []
    for key in store.list_keys(base):
        target = dest_dir.joinpath(*key.removeprefix(base).split("/"))
        store.download_file(key, target)
        paths.append(target)
    return paths
