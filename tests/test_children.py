"""A CLI child process (the embedded worker) must not outlive a parent killed with SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.fixtures.processes import process_running

PARENT = """
import subprocess, sys, time
from shrinkray.children import _die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], preexec_fn=_die_with_parent)
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_child_dies_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())  # type: ignore[union-attr]
    assert process_running(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while process_running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_running(child)
