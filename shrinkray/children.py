"""Child processes of the CLI (the embedded worker, the demo's server) that die with their parent.

Each child gets its own process group: a signal meant for the parent's group (Ctrl-C in the terminal, a
supervisor's killpg) must not reach a Celery worker's pool processes directly. One killed that way can die
holding the pool's queue lock, and the worker then hangs forever in its shutdown. The parent stops the child
with `stop_child` instead; a parent killed with SIGKILL runs no `finally`, so on Linux the kernel sends the child
SIGTERM (PR_SET_PDEATHSIG) and no worker is orphaned.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_cli(args: list[str], log_file: IO[bytes], env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m shrinkray.cli ARGS` in its own process group, output to log_file, terminated when this
    process dies."""
    return subprocess.Popen(
        [sys.executable, "-m", "shrinkray.cli", *args], env=env, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )


def stop_child(child: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    """Ask the child to shut down, then kill what is left of its group (its own children included)."""
    if child.poll() is None:
        child.send_signal(sig)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait(timeout=10)
