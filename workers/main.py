"""Starts a Celery worker process that serves the given queues with the stage tasks."""

from __future__ import annotations

import socket

import torch

from shrinkray.settings import Settings
from workers.celery_app import register_stage_tasks
from workers.execution import run_stage
from workers.runtime import WorkerRuntime


def default_queues() -> list[str]:
    """A worker without CUDA serves only `cpu`; a GPU worker serves both, GPU work first."""
    return ["gpu", "cpu"] if torch.cuda.is_available() else ["cpu"]


def start_worker(settings: Settings, queues: list[str] | None = None, concurrency: int = 1,
                 loglevel: str = "INFO") -> None:
    runtime = WorkerRuntime(settings)
    app = runtime.celery
    register_stage_tasks(app, lambda job_id, stage, attempt: run_stage(runtime, job_id, stage, attempt))
    chosen = queues or default_queues()
    argv = ["worker", "--queues", ",".join(chosen), "--concurrency", str(concurrency),
            "--loglevel", loglevel, "--hostname", f"shrinkray-{'-'.join(chosen)}@{socket.gethostname()}",
            "--without-gossip", "--without-mingle"]
    if "gpu" in chosen:
        argv += ["--max-tasks-per-child", "1"]  # a fresh process per GPU task: no memory carried over
    app.worker_main(argv)
