"""The job state machine on Postgres: claims, fencing by attempt, retries, cancellation, the reaper."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from shrinkray.settings import Settings
from storage.db import make_engine, make_session_factory, transaction
from storage.jobs import (
    claim_stage,
    complete_stage,
    create_job,
    fail_stage,
    fenced_job,
    heartbeat,
    pending_outbox,
    request_cancel,
)
from storage.models import DEFAULT_TENANT_ID, Job, OutboxMessage, StageRun, utcnow
from workers.maintenance import reap_expired_leases


@pytest.fixture()
def sessions(migrated_postgres_url: str):
    engine = make_engine(migrated_postgres_url)
    yield make_session_factory(engine)
    engine.dispose()


def _new_job(sessions) -> str:
    with transaction(sessions) as session:
        return create_job(session, tenant_id=DEFAULT_TENANT_ID, model_uri="file:///m", recipe={"modifiers": []},
                          preset=None, queue="cpu").id


def _outbox(sessions, job_id: str) -> list[tuple[str, int, int]]:
    with sessions() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == job_id)
                               .order_by(OutboxMessage.id))
        return [(row.stage, row.attempt, row.countdown_s) for row in rows]


def test_submission_writes_the_first_stage_message_in_the_same_transaction(sessions) -> None:
    job_id = _new_job(sessions)
    assert _outbox(sessions, job_id) == [("fetch", 1, 0)]
    with transaction(sessions) as session:
        assert [m.job_id for m in pending_outbox(session)] == [job_id]


def test_a_stage_is_claimed_once_and_only_by_its_attempt(sessions) -> None:
    job_id = _new_job(sessions)
    with transaction(sessions) as session:
        assert claim_stage(session, job_id, "fetch", 2, "w1", 60) is None  # wrong attempt
        assert claim_stage(session, job_id, "calibrate", 1, "w1", 60) is None  # wrong stage
        assert claim_stage(session, job_id, "fetch", 1, "w1", 60) is not None
    with transaction(sessions) as session:
        assert claim_stage(session, job_id, "fetch", 1, "w2", 60) is None  # duplicate delivery
        assert session.get(Job, job_id).lease_owner == "w1"


def test_completion_advances_to_the_next_stage_and_stale_writers_are_fenced_out(sessions) -> None:
    job_id = _new_job(sessions)
    with transaction(sessions) as session:
        claim_stage(session, job_id, "fetch", 1, "w1", 60)
    with transaction(sessions) as session:
        assert complete_stage(session, job_id, "fetch", 1, "w2", {"x": 1}) is None  # not the lease holder
        assert complete_stage(session, job_id, "fetch", 1, "w1", {"x": 1}) is not None
    with transaction(sessions) as session:
        assert complete_stage(session, job_id, "fetch", 1, "w1", {"x": 2}) is None  # already done
        job = session.get(Job, job_id)
        assert (job.status, job.stage, job.attempt, job.outputs) == ("queued", "calibrate", 1, {"fetch": {"x": 1}})
    assert _outbox(sessions, job_id) == [("fetch", 1, 0), ("calibrate", 1, 0)]


def test_all_stages_done_means_succeeded(sessions) -> None:
    job_id = _new_job(sessions)
    for stage in ("fetch", "calibrate", "compress", "validate", "publish"):
        with transaction(sessions) as session:
            assert claim_stage(session, job_id, stage, 1, "w", 60) is not None
        with transaction(sessions) as session:
            complete_stage(session, job_id, stage, 1, "w", {}, report={"ok": True} if stage == "publish" else None)
    with sessions() as session:
        job = session.get(Job, job_id)
        runs = session.scalars(select(StageRun).where(StageRun.job_id == job_id)).all()
    assert (job.status, job.progress, job.report) == ("succeeded", 1.0, {"ok": True})
    assert sorted(run.status for run in runs) == ["succeeded"] * 5


def test_transient_failures_retry_with_backoff_then_fail(sessions) -> None:
    job_id = _new_job(sessions)
    for attempt in (1, 2, 3):
        with transaction(sessions) as session:
            claim_stage(session, job_id, "fetch", attempt, "w", 60)
        with transaction(sessions) as session:
            fail_stage(session, fenced_job(session, job_id, "fetch", attempt, "w"), "S3 down", retry=True,
                       max_attempts=3, backoff_s=5)
    with sessions() as session:
        job = session.get(Job, job_id)
    assert job.status == "failed" and job.error == "fetch: S3 down"
    assert _outbox(sessions, job_id) == [("fetch", 1, 0), ("fetch", 2, 5), ("fetch", 3, 10)]


def test_cancel_of_a_queued_job_is_immediate_and_its_message_is_then_dropped(sessions) -> None:
    job_id = _new_job(sessions)
    with transaction(sessions) as session:
        request_cancel(session, session.get(Job, job_id))
    with transaction(sessions) as session:
        assert claim_stage(session, job_id, "fetch", 1, "w", 60) is None
        assert session.get(Job, job_id).status == "cancelled"


def test_running_cancel_reaches_the_worker_through_the_heartbeat(sessions) -> None:
    job_id = _new_job(sessions)
    with transaction(sessions) as session:
        claim_stage(session, job_id, "fetch", 1, "w", 60)
    with transaction(sessions) as session:
        assert heartbeat(session, job_id, "fetch", 1, "w", 60) is False
        request_cancel(session, session.get(Job, job_id))
    with transaction(sessions) as session:
        assert heartbeat(session, job_id, "fetch", 1, "w", 60, progress=0.1) is True
        assert heartbeat(session, job_id, "fetch", 1, "other", 60) is None


def test_reaper_requeues_an_expired_lease_under_a_new_attempt(sessions) -> None:
    job_id = _new_job(sessions)
    with transaction(sessions) as session:
        claim_stage(session, job_id, "fetch", 1, "dead-worker", 60)
        session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    assert reap_expired_leases(sessions, Settings(max_attempts=3)) == 1
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempt) == ("queued", 2)
        assert heartbeat(session, job_id, "fetch", 1, "dead-worker", 60) is None  # the old lease is gone
    assert _outbox(sessions, job_id)[-1] == ("fetch", 2, 0)
