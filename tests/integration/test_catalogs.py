"""A catalog of 2 models x 2 recipes through the CLI, the API, Postgres, Redis, a real worker and S3: every pair
ends succeeded with its numbers, the recommendation follows them, and a resubmission reuses every job."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.compress.conftest import build_random_llama
from tests.conftest import CORPUS, SHARED_MODEL

pytestmark = pytest.mark.integration

FAST = {"calibration": {"samples": 8, "seq_len": 128}, "validation": {"seq_len": 128, "max_windows": 4}}


def test_a_catalog_runs_from_the_cli_to_recommendations(s3_stack, tmp_path) -> None:
    build_random_llama(tmp_path / "random-llama")
    catalog = {
        "name": "two-by-two",
        "tolerance_pct": 50,
        "models": [{"uri": SHARED_MODEL.as_uri(), "name": "shakespeare",
                    "eval_uri": (CORPUS / "eval.txt").as_uri()},
                   {"uri": "random-llama", "name": "random"}],  # relative to the catalog file
        "recipes": [
            {"name": "int4-g32", "recipe": {"modifiers": [{"method": "rtn", "bits": 4, "group_size": 32}], **FAST}},
            {"name": "int8", "recipe": {"modifiers": [{"method": "rtn", "bits": 8, "group_size": None}], **FAST}},
        ],
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    env = {**s3_stack.env, "SHRINKRAY_API_URL": str(s3_stack.api.base_url)}
    done = subprocess.run([sys.executable, "-m", "shrinkray.cli", "catalog", "submit", str(path), "--wait"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout, done.stderr, s3_stack.worker.log_tail())
    catalog_id = done.stdout.splitlines()[0].strip()
    view = s3_stack.api.get(f"/v1/catalogs/{catalog_id}").json()
    assert view["counts"] == {"succeeded": 4}, view
    for cell in view["cells"]:
        assert cell["size_bytes"] > 0 and cell["ppl_after"] > 0 and cell["size_ratio"] > 1, cell
        assert f"{cell['model']:<24} {cell['recipe']:<18} succeeded" in done.stdout
    int4, int8 = view["cells"][:2]
    assert int4["size_bytes"] < int8["size_bytes"]
    shakespeare = view["recommendations"][0]
    assert shakespeare["recipe"] == "int4-g32" and shakespeare["job_id"] == int4["job_id"]  # within 50%: smallest
    assert "shakespeare: int4-g32" in done.stdout

    again = s3_stack.api.post("/v1/catalogs", json={**catalog, "models": [
        catalog["models"][0], {"uri": (tmp_path / "random-llama").as_uri(), "name": "random"}]}).json()
    assert all(cell["reused"] for cell in again["cells"]) and again["counts"] == {"succeeded": 4}
    status = subprocess.run([sys.executable, "-m", "shrinkray.cli", "catalog", "status", again["id"]], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "4 succeeded" in status.stdout, status.stderr
