"""Source URIs: only file:// under the configured roots and s3:// in the configured buckets."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.uris import SourceRejected, parse_source_uri


def test_file_uris_resolve_to_paths(tmp_path: Path) -> None:
    parsed = parse_source_uri(tmp_path.as_uri(), roots=[], buckets=[])
    assert (parsed.scheme, parsed.path) == ("file", tmp_path.resolve())


def test_file_uris_must_stay_under_the_roots(tmp_path: Path) -> None:
    inside = tmp_path / "models" / "m"
    assert parse_source_uri(inside.as_uri(), roots=[tmp_path / "models"], buckets=[]).path == inside
    with pytest.raises(SourceRejected, match="outside the allowed model roots"):
        parse_source_uri("file:///etc/passwd", roots=[tmp_path / "models"], buckets=[])
    link = tmp_path / "models" / "escape"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("/etc")
    with pytest.raises(SourceRejected, match="outside"):
        parse_source_uri(link.as_uri(), roots=[tmp_path / "models"], buckets=[])


@pytest.mark.parametrize("uri, reason", [
    ("file:///a/../etc", "'..'"),
    ("file://evil.example.com/x", "must not name a host"),
    ("file:relative/path", "absolute path"),
    ("s3://UPPER/x", "not a valid bucket"),
    ("s3://bucket/a/../b", "'..'"),
    ("hf://org/model", "network"),
    ("https://example.com/model", "network"),
    ("gopher://x/y", "unsupported scheme"),
    ("/plain/path", "needs a scheme"),
    ("", "non-empty"),
    ("file:///a\nb", "printable"),
])
def test_bad_uris_are_rejected_with_a_reason(uri: str, reason: str) -> None:
    with pytest.raises(SourceRejected, match=reason):
        parse_source_uri(uri, roots=[], buckets=[])


def test_s3_buckets_are_checked_against_the_allow_list() -> None:
    assert parse_source_uri("s3://models/llama/", roots=[], buckets=["models"]).key == "llama/"
    with pytest.raises(SourceRejected, match="not one of the allowed buckets"):
        parse_source_uri("s3://other/llama", roots=[], buckets=["models"])
