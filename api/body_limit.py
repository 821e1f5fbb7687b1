"""Refuses request bodies over the configured size before a route reads them: by Content-Length when the
client sends one, and by counting the chunks of a streamed body otherwise."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    @property
    def problems(self) -> list[dict[str, object]]:
        """The shape of the API's other field errors."""
        return [{"loc": ["body"], "type": "value_error",
                 "msg": f"the request body is over the limit of {self.max_bytes} bytes"}]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            body = json.dumps({"detail": self.problems}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counting_receive() -> Message:
            # Raised inside the route's body read, so FastAPI answers it like any HTTPException.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status_code=413, detail=self.problems)
            return message

        await self.app(scope, counting_receive, send)
