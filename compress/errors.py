"""The compression library's exceptions: one hierarchy, each message says what to fix."""

from __future__ import annotations


class CompressError(Exception):
    """Base of every error the compression library raises on purpose."""


class ModelRejected(CompressError):
    """The model directory cannot be used: missing files, pickle weights, or remote code."""


class RecipeError(CompressError):
    """A recipe field is invalid; `field` is its dotted path so an API can point at it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Cancelled(CompressError):
    """The caller asked to stop; raised between layers, never in the middle of one."""
