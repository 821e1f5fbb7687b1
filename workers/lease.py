"""Keeps a claimed stage's lease alive; carries progress and the cancel flag between stage and job row."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.jobs import heartbeat

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """Another attempt owns the stage now (the reaper re-queued it); this worker must stop writing."""


class LeaseKeeper:
    def __init__(self, sessions: sessionmaker[Session], job_id: str, stage: str, attempt: int, worker: str,
                 lease_s: int, heartbeat_s: int, progress_base: float, progress_span: float) -> None:
        self._sessions = sessions
        self._fence = (job_id, stage, attempt, worker)
        self._lease_s = lease_s
        self._heartbeat_s = heartbeat_s
        self._base, self._span = progress_base, progress_span
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, daemon=True, name="lease")
        self._last_write = 0.0
        self.cancel_requested = False
        self.lost = False

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def report_progress(self, fraction: float, message: str) -> None:
        """Stage-local progress in [0, 1]; written at most once a second, always on completion."""
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_write < 1.0:
            return
        self._last_write = now
        self._beat(progress=self._base + self._span * min(max(fraction, 0.0), 1.0), message=message)

    def should_stop(self) -> bool:
        if self.lost:
            raise LeaseLost("the stage's lease was taken over by a newer attempt")
        return self.cancel_requested

    def _beat(self, progress: float | None = None, message: str | None = None) -> None:
        try:
            with transaction(self._sessions) as session:
                flag = heartbeat(session, *self._fence, lease_s=self._lease_s, progress=progress,
                                 message=message)
        except Exception:  # a database blip must not kill the stage; the next beat retries
            log.warning("heartbeat failed for job %s", self._fence[0], exc_info=True)
            return
        if flag is None:
            self.lost = True
        else:
            self.cancel_requested = flag

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            self._beat()
