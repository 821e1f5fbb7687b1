"""Notices a Redis broker that lost its data. Redis run without persistence (or with a lost AOF) comes back
empty after a restart: the stage messages of queued jobs are gone, and nothing else would ever send them again.
A marker key is kept in Redis; when it is missing, the broker has forgotten everything since it was set, so every
queued job's message is sent again and the marker is set anew. A message that did survive arrives twice, and
claim fencing drops the second. The marker lives in the broker itself, so this holds whichever API process is
watching, and across restarts of the API too."""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

MARKER = "shrinkray:broker-memory"


class BrokerMemoryWatch:
    def __init__(self, broker_url: str) -> None:
        is_redis = broker_url.startswith(("redis://", "rediss://"))
        self._redis = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2) if is_redis else None

    def needs_resend(self) -> bool:
        """True while the marker is missing; raises while Redis is unreachable."""
        if self._redis is None or self._redis.exists(MARKER):
            return False
        log.warning("the broker holds no marker (new, restarted empty or flushed): sending queued jobs' messages")
        return True

    def resent(self) -> None:
        if self._redis is not None:
            self._redis.set(MARKER, str(time.time()))
