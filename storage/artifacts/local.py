"""Artifacts in a local directory (embedded mode): atomic renames, create-only links, nothing outside root."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.artifacts.base import ArtifactStore, StoredObject
from storage.artifacts.digests import Digest, digest_bytes, digest_file
from storage.artifacts.keys import folder, validate_key, validate_prefix
from storage.errors import ChecksumMismatch, InvalidKey, ObjectExists, ObjectNotFound, StoreUnavailable

# '~' is outside the key alphabet, so a temporary file can never be mistaken for an object.
_TEMP_PREFIX = ".~tmp-"


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def put_file(self, key: str, path: Path) -> StoredObject:
        target = self._path(key)
        expected = digest_file(path)
        with self._temp_beside(target) as temp:
            shutil.copyfile(path, temp)
            self._verify(key, temp, expected)
            os.replace(temp, target)
        return StoredObject(key=key, size=expected.size, sha256=expected.sha256)

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> StoredObject:
        target = self._path(key)
        expected = digest_bytes(data)
        with self._temp_beside(target) as temp:
            temp.write_bytes(data)
            self._verify(key, temp, expected)
            if if_absent:
                # link() fails atomically if the name exists: the create-only write of If-None-Match.
                try:
                    os.link(temp, target)
                except FileExistsError:
                    raise ObjectExists(f"{key} already exists; it is written once, never replaced") from None
            else:
                os.replace(temp, target)
        return StoredObject(key=key, size=expected.size, sha256=expected.sha256)

    def get_bytes(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def download_file(self, key: str, dest: Path) -> None:
        source = self._existing(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._temp_beside(dest) as temp:
            shutil.copyfile(source, temp)
            os.replace(temp, dest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> StoredObject:
        digest = digest_file(self._existing(key))
        return StoredObject(key=key, size=digest.size, sha256=digest.sha256)

    def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix names; the rest is a plain string match, as in S3.
        start = self.root.joinpath(*prefix.split("/")[:-1])
        if not start.is_dir():
            return []
        keys = (path.relative_to(self.root).as_posix() for path in start.rglob("*")
                if path.is_file() and not path.name.startswith(_TEMP_PREFIX))
        return sorted(key for key in keys if key.startswith(prefix))

    def copy(self, src_key: str, dst_key: str) -> StoredObject:
        source = self._existing(src_key)
        target = self._path(dst_key)
        expected = digest_file(source)
        with self._temp_beside(target) as temp:
            shutil.copyfile(source, temp)
            self._verify(dst_key, temp, expected)
            os.replace(temp, target)
        return StoredObject(key=dst_key, size=expected.size, sha256=expected.sha256)

    def delete_prefix(self, prefix: str) -> int:
        base = folder(prefix)
        if not base:
            raise InvalidKey("delete_prefix needs a non-empty prefix; refusing to empty the whole store")
        keys = self.list_keys(base)
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        directory = self._path(base.removesuffix("/"))
        if directory.is_dir():
            # Remove only folders left empty: a writer racing us keeps its file (and its folder).
            for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                _remove_if_empty(sub)
            _remove_if_empty(directory)
        return len(keys)

    def url_for(self, key: str, expires_s: int) -> str:
        return self._existing(key).as_uri()

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreUnavailable(f"artifact directory {self.root} does not exist; create it or fix the URL")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreUnavailable(f"artifact directory {self.root} is not writable by this process")

    def _path(self, key: str) -> Path:
        """The file for `key`, refusing any (e.g. a symlinked folder) that resolves outside root."""
        path = self.root.joinpath(*validate_key(key).split("/"))
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"key {key!r} resolves outside the artifact directory {self.root}")
        return path

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no artifact {key} under {self.root}")
        return path

    @contextmanager
    def _temp_beside(self, target: Path) -> Iterator[Path]:
        """A temp file in the target's folder (one file system: os.replace is atomic), always removed."""
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=target.parent)
        os.close(handle)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    @staticmethod
    def _verify(key: str, written: Path, expected: Digest) -> None:
        actual = digest_file(written)
        if actual.sha256 != expected.sha256:
            raise ChecksumMismatch(f"{key}: wrote sha256 {actual.sha256}, expected {expected.sha256}; "
                                   "the disk or the source file changed during the write; retry")


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty: something was written there after we listed it
