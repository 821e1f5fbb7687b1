"""The Celery app: Redis (or, embedded, a file-system broker), one task per pipeline stage.

Tasks carry only (job_id, stage, attempt); Postgres holds the state, so a redelivered or stale
message is recognised by its attempt number and dropped.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from shrinkray.settings import Settings
from storage.models import Stage

QUEUES = ("gpu", "cpu")


def task_name(stage: str) -> str:
    return f"shrinkray.stage.{stage}"


def create_celery(settings: Settings) -> Celery:
    app = Celery("shrinkray", broker=settings.broker_url)
    transport_options: dict[str, object] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.embedded_broker:
        folder = settings.broker_dir
        (folder / "queue").mkdir(parents=True, exist_ok=True)
        transport_options.update(data_folder_in=str(folder / "queue"), data_folder_out=str(folder / "queue"),
                                 store_processed=False)
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_soft_time_limit=settings.stage_soft_time_limit_s,
        task_time_limit=settings.stage_hard_time_limit_s,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
    )
    return app


def register_stage_tasks(app: Celery, run_stage) -> None:  # type: ignore[no-untyped-def]
    """One task per stage, all running `run_stage(job_id, stage, attempt)`."""
    for stage in Stage:
        def task(job_id: str, stage_name: str, attempt: int, _stage: str = stage.value) -> None:
            if stage_name != _stage:
                raise ValueError(f"task for {_stage} received stage {stage_name}")
            run_stage(job_id, stage_name, attempt)

        app.task(name=task_name(stage), acks_late=True, reject_on_worker_lost=True, ignore_result=True)(task)
