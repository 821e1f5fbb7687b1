"""At most `limit` requests inside the app at once; the rest wait on the event loop, which costs nothing.

A request hops between the event loop and worker threads (each dependency, then the route), and its database
session keeps its connection across those hops. Without a cap, hundreds of pollers each hold a connection while
waiting for a thread, the threads wait for connections, and the pool times out. With at most `limit` requests in
flight and a pool larger than `limit`, no request ever waits for a connection."""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self._slots = anyio.CapacityLimiter(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self._slots:
            await self.app(scope, receive, send)
