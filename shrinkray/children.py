"""Child processes of the CLI (the embedded worker, the demo's server) that die with their parent.

`shrinkray up` and `shrinkray demo` stop their children in a `finally`, but a parent killed with SIGKILL runs
no `finally`; on Linux the kernel then sends the child SIGTERM (PR_SET_PDEATHSIG), so no worker is orphaned.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_cli(args: list[str], log_file: IO[bytes], env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m shrinkray.cli ARGS`, output to log_file, terminated when this process dies."""
    return subprocess.Popen(
        [sys.executable, "-m", "shrinkray.cli", *args], env=env, stdout=log_file, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )
