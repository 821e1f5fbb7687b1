"""The broker-memory marker on a real Redis database: missing on a new or flushed broker (queued jobs' messages
must be sent again), present once the resend is done."""

from __future__ import annotations

import redis

from workers.broker_watch import BrokerMemoryWatch


def test_a_broker_that_forgot_everything_is_noticed_until_the_resend_is_done(redis_url: str) -> None:
    watch = BrokerMemoryWatch(redis_url)
    assert watch.needs_resend()  # a new broker: nothing says it remembers anything
    assert watch.needs_resend()  # still, until the resend succeeded
    watch.resent()
    assert not watch.needs_resend()
    assert not BrokerMemoryWatch(redis_url).needs_resend()  # another API process sees the same marker
    redis.Redis.from_url(redis_url).flushdb()  # what a restart without persistence leaves
    assert watch.needs_resend()


def test_other_brokers_are_not_watched() -> None:
    assert not BrokerMemoryWatch("filesystem://").needs_resend()
