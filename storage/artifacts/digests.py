"""SHA-256 of files and bytes in the forms the stores compare: hex for us, base64 (and composite) for S3."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Digest:
    """A whole object's sha256 plus the digests of its parts when uploaded in `part_size` pieces."""

    size: int
    sha256: str  # hex, what manifests and the database record
    part_digests: tuple[bytes, ...] = ()

    @property
    def sha256_b64(self) -> str:
        """The full-object form of S3's ChecksumSHA256."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()

    @property
    def composite_b64(self) -> str:
        """S3's multipart form: base64(sha256(concatenated part digests)), without the '-N' suffix."""
        return base64.b64encode(hashlib.sha256(b"".join(self.part_digests)).digest()).decode()


def digest_bytes(data: bytes) -> Digest:
    return Digest(size=len(data), sha256=hashlib.sha256(data).hexdigest())


def digest_file(path: Path, part_size: int | None = None) -> Digest:
    """One read of the file gives the full digest and, with `part_size`, each part's digest."""
    whole = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(part_size or READ_CHUNK)
            if not chunk:
                break
            whole.update(chunk)
            size += len(chunk)
            if part_size:
                parts.append(hashlib.sha256(chunk).digest())
    return Digest(size=size, sha256=whole.hexdigest(), part_digests=tuple(parts))


def digest_stream(chunks: Iterable[bytes]) -> Digest:
    """Digest of an iterable of byte chunks (an object streamed back from the store)."""
    whole = hashlib.sha256()
    size = 0
    for chunk in chunks:
        whole.update(chunk)
        size += len(chunk)
    return Digest(size=size, sha256=whole.hexdigest())
