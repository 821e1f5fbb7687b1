"""Object keys: one conservative syntax every backend stores verbatim, and no key climbs out of its prefix."""

from __future__ import annotations

import re

from storage.errors import InvalidKey

MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def validate_key(key: str) -> str:
    """`key` unchanged if it is relative, '/'-separated, without '.', '..' or empty segments."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("an object key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}")
    if key.startswith("/"):
        raise InvalidKey(f"key {key!r} must be relative: drop the leading '/'")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"key {key!r} has an empty, '.' or '..' segment; write the path out plainly")
        if not _SEGMENT.match(segment):
            raise InvalidKey(f"key {key!r} may only use letters, digits, '.', '_', '-' and '/' as separator")
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix is '' (everything) or a valid key, optionally ending in '/'."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix


def folder(prefix: str) -> str:
    """`prefix` as a folder ('a/b' -> 'a/b/'), so 'jobs/1' never matches 'jobs/10/...'."""
    validate_prefix(prefix)
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def join_key(prefix: str, *parts: str) -> str:
    """`prefix/part/...`, validated; the prefix may be empty or end in '/', parts are taken as given."""
    return validate_key("/".join(piece for piece in (prefix.rstrip("/"), *parts) if piece))


def ensure_under(key: str, prefix: str) -> str:
    """`key` unchanged if it lies strictly under the folder `prefix`."""
    validate_key(key)
    base = folder(prefix)
    if not base:
        raise InvalidKey("ensure_under needs a non-empty prefix")
    if not key.startswith(base) or key == base:
        raise InvalidKey(f"key {key!r} lies outside {base!r}")
    return key
