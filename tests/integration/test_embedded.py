"""The embedded default: `shrinkray up` with SQLite, a local artifact directory and no Redis or S3."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CORPUS, SHARED_MODEL
from tests.fixtures.processes import ServiceProcess, free_port, process_running, wait_for_http, wait_for_job
from tests.integration.checkpoint_checks import (
    assert_quantized_close_to_original,
    download_artifacts,
    packed_int4_ratio,
)

pytestmark = pytest.mark.integration


def test_shrinkray_up_runs_a_job_end_to_end(tmp_path) -> None:
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHRINKRAY_")}
    env["SHRINKRAY_HOME"] = str(home)
    port = free_port()
    up = ServiceProcess(["up", "--port", str(port)], env, tmp_path / "up.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", up)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            health = api.get("/healthz").json()
            assert health["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}, health
            response = api.post("/v1/jobs", json={"model_uri": SHARED_MODEL.as_uri(), "preset": "w4a16-rtn",
                                                  "eval_uri": (CORPUS / "eval.txt").as_uri()})
            assert response.status_code == 201, response.text
            job = wait_for_job(api, response.json()["id"], 900, up)
            assert job["status"] == "succeeded", (job, (home / "worker.log").read_text()[-5000:])
            download_artifacts(api, job["id"], tmp_path / "download")
    finally:
        up.stop(timeout_s=60)
    worker_pid = int(re.search(r"worker pid (\d+)", (tmp_path / "up.log").read_text()).group(1))  # type: ignore[union-attr]
    deadline = time.monotonic() + 15
    while process_running(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_running(worker_pid), "the embedded worker outlived `shrinkray up`"
    assert (home / "shrinkray.db").is_file()
    assert (home / "artifacts" / "jobs" / job["id"] / "manifest.json").is_file()
    assert_quantized_close_to_original(tmp_path / "download" / "model")
    assert packed_int4_ratio(tmp_path / "download" / "model") >= 2.5


def test_compress_cli_writes_a_directory_transformers_loads(tmp_path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "shrinkray.cli", "compress", str(SHARED_MODEL), "--recipe", "w4a16-rtn",
         "--out", str(out), "--calib", str(CORPUS / "calib.txt")],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "recipe.yaml").is_file()
    assert_quantized_close_to_original(out)


def test_compress_cli_refuses_bad_input_without_a_traceback(tmp_path) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((SHARED_MODEL / "config.json").read_text())
    (pickled / "model.pt").write_bytes(b"\x80\x04")
    cases = [
        ([str(pickled), "--out", str(tmp_path / "a")], "pickle"),
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "b")], "missing"),
        ([str(SHARED_MODEL), "--out", str(tmp_path / "c"), "--recipe", "w5a16"], "preset"),
    ]
    for args, needle in cases:
        result = subprocess.run([sys.executable, "-m", "shrinkray.cli", "compress", *args],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode != 0
        assert needle in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not Path(args[args.index("--out") + 1]).exists(), "no half-written output"
