"""The Idempotency-Key header of submissions: the same submission sent again under a key returns what the first
one created (200, `Idempotent-Replayed: true`) instead of creating it again; a key reused for a different
submission is a 422 naming the header. Keys are per tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Response

from api.errors import IdempotencyConflict

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="a client-chosen key: the same submission sent again with it returns what the first created "
                "(200) instead of creating it again")]


def replay(response: Response, key: str, stored_fingerprint: str | None, fingerprint: str) -> None:
    """Answer with the earlier result, or refuse a different submission under the same key."""
    if stored_fingerprint != fingerprint:
        raise IdempotencyConflict(key)
    response.status_code = 200
    response.headers["Idempotent-Replayed"] = "true"
