"""`shrinkray catalog` on bad input: readable messages and non-zero exits, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shrinkray.catalog_view import read_catalog_file
from shrinkray.cli import app


def test_relative_model_paths_become_file_uris(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("models:\n  - uri: models/alpha\n  - uri: s3://bucket/beta\nrecipes:\n  - preset: w4a16\n")
    models = read_catalog_file(path)["models"]
    assert models[0]["uri"] == (tmp_path / "models" / "alpha").as_uri() and models[1]["uri"] == "s3://bucket/beta"


@pytest.mark.parametrize(("content", "message"), [
    ("models: [\n  - uri: x\n  recipes", "not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
])
def test_bad_catalog_files_exit_2_with_the_reason(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(content)
    result = CliRunner().invoke(app, ["catalog", "submit", str(path)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_an_unreachable_api_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHRINKRAY_API_URL", "http://127.0.0.1:9")
    result = CliRunner().invoke(app, ["catalog", "status", "00000000-0000-0000-0000-000000000000"])
    assert result.exit_code == 1 and "cannot reach the Shrinkray API" in result.output
