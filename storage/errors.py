"""Typed storage errors, so callers can tell "retry later" (the store is down) from "fix the input"."""

from __future__ import annotations


class StorageError(Exception):
    """Anything the artifact store refused or could not do; the message says what to fix."""


class ObjectNotFound(StorageError):
    """The key names no object."""


class ObjectExists(StorageError):
    """A create-only write lost: an object was already at the key (e.g. a manifest written twice)."""


class ChecksumMismatch(StorageError):
    """The stored bytes differ from the bytes we meant to store; the object was not kept."""


class InvalidKey(StorageError):
    """A key that could escape its prefix or that some backend would mangle."""


class StoreUnavailable(StorageError):
    """The store cannot be used at all right now: endpoint down, bucket missing, credentials rejected."""
