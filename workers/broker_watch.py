"""Notices a Redis broker that restarted. Redis run without persistence (or with a lost AOF) comes back empty:
the stage messages of queued jobs are gone, and nothing else would ever send them again. Its `run_id` changes on
every start, so when it differs from the last one seen, every queued job's message is sent again; a message that
did survive arrives twice, and claim fencing drops the second."""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)


class BrokerRestartWatch:
    def __init__(self, broker_url: str) -> None:
        is_redis = broker_url.startswith(("redis://", "rediss://"))
        self._redis = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2) if is_redis else None
        self._run_id: str | None = None
        self._resend_pending = False

    def needs_resend(self) -> bool:
        """True from a restart until `resent()` is called; raises while Redis is unreachable."""
        if self._redis is None:
            return False
        run_id = str(self._redis.info("server")["run_id"])
        if self._run_id is not None and run_id != self._run_id:
            log.warning("the broker restarted (run_id %s -> %s); sending queued jobs' messages again",
                        self._run_id, run_id)
            self._resend_pending = True
        self._run_id = run_id
        return self._resend_pending

    def resent(self) -> None:
        self._resend_pending = False
