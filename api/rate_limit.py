"""Requests per API key per fixed window. Counted in Redis when the deployment has it, so every API process
shares one count; in process memory otherwise (the embedded mode). A limiter that cannot reach Redis lets
the request through: losing the count for a moment is better than refusing every status poll."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Protocol

import redis

from shrinkray.settings import Settings

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    def retry_after(self, key: str) -> int | None:
        """Counts one request for `key`; the seconds to wait when it is over the limit, else None."""


class RedisRateLimiter:
    def __init__(self, url: str, limit: int, window_s: int) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._limit, self._window_s = limit, window_s

    def retry_after(self, key: str) -> int | None:
        now = time.time()
        window = int(now // self._window_s)
        name = f"shrinkray:rate:{key}:{window}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(name)
            pipe.expire(name, self._window_s * 2)
            count = pipe.execute()[0]
        except redis.RedisError:
            log.warning("rate limiter cannot reach Redis; letting the request through", exc_info=True)
            return None
        return _wait(count, self._limit, now, window, self._window_s)


class MemoryRateLimiter:
    def __init__(self, limit: int, window_s: int) -> None:
        self._limit, self._window_s = limit, window_s
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int | None:
        now = time.time()
        window = int(now // self._window_s)
        with self._lock:
            seen_window, count = self._counts.get(key, (window, 0))
            count = count + 1 if seen_window == window else 1
            self._counts[key] = (window, count)
        return _wait(count, self._limit, now, window, self._window_s)


def _wait(count: int, limit: int, now: float, window: int, window_s: int) -> int | None:
    if count <= limit:
        return None
    return max(1, math.ceil((window + 1) * window_s - now))


def rate_limiter(settings: Settings) -> RateLimiter | None:
    if settings.rate_limit_requests == 0:
        return None
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(settings.broker_url, settings.rate_limit_requests, settings.rate_limit_window_s)
    return MemoryRateLimiter(settings.rate_limit_requests, settings.rate_limit_window_s)
