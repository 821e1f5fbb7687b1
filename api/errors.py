"""Maps the library's typed errors to HTTP answers that name the field and say what to fix."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from compress.errors import RecipeError


def field_error(location: list[str | int], message: str, status: int = 422) -> JSONResponse:
    """The same shape FastAPI uses for validation errors, so clients parse one format."""
    return JSONResponse(status_code=status, content={"detail": [
        {"loc": ["body", *location], "msg": message, "type": "value_error"}]})


class InvalidSource(Exception):
    def __init__(self, field: str, error: Exception) -> None:
        super().__init__(str(error))
        self.field = field


class IdempotencyConflict(Exception):
    """An Idempotency-Key already used for a different submission."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for a different submission")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IdempotencyConflict)
    async def _idempotency_conflict(_request: Request, exc: IdempotencyConflict) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": ["header", "Idempotency-Key"], "msg": str(exc), "type": "value_error"}]})

    @app.exception_handler(RecipeError)
    async def _recipe_error(_request: Request, exc: RecipeError) -> JSONResponse:
        return field_error([*exc.field.split(".")], exc.message)

    @app.exception_handler(InvalidSource)
    async def _invalid_source(_request: Request, exc: InvalidSource) -> JSONResponse:
        return field_error([exc.field], str(exc))
