"""Source URIs: only file:// under the tenant's roots and s3:// in its buckets; never the artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.uris import SourcePolicy, SourceRejected, parse_artifact_location, parse_source_uri

OPEN = SourcePolicy()  # a single-user deployment with nothing configured


def _shared(tenant: str = "team-a", roots: list[str] | None = None, buckets: list[str] | None = None,
            artifacts: str = "s3://shrinkray") -> SourcePolicy:
    return SourcePolicy.for_tenant(tenant=tenant, roots=roots or [], buckets=buckets or [], open=False,
                                   blocked=(parse_artifact_location(artifacts),))


def test_file_uris_resolve_to_paths(tmp_path: Path) -> None:
    parsed = parse_source_uri(tmp_path.as_uri(), OPEN)
    assert (parsed.scheme, parsed.path) == ("file", tmp_path.resolve())


def test_file_uris_must_stay_under_the_roots(tmp_path: Path) -> None:
    policy = _shared(roots=[str(tmp_path / "models")])
    inside = tmp_path / "models" / "m"
    assert parse_source_uri(inside.as_uri(), policy).path == inside
    with pytest.raises(SourceRejected, match="outside the allowed model roots"):
        parse_source_uri("file:///etc/passwd", policy)
    link = tmp_path / "models" / "escape"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("/etc")
    with pytest.raises(SourceRejected, match="outside"):
        parse_source_uri(link.as_uri(), policy)


@pytest.mark.parametrize("uri, reason", [
    ("file:///a/../etc", "'..'"),
    ("file:///a/%2e%2e/etc", "'..'"),
    ("file://evil.example.com/x", "must not name a host"),
    ("file://169.254.169.254/latest/meta-data", "must not name a host"),
    ("file:relative/path", "absolute path"),
    ("s3://UPPER/x", "not a valid bucket"),
    ("s3://bucket/a/../b", "'..'"),
    ("s3://bucket/a\\b", "backslash"),
    ("hf://org/model", "network"),
    ("https://example.com/model", "network"),
    ("http://169.254.169.254/latest/meta-data/iam", "network"),
    ("http://127.0.0.1:6379/", "network"),
    ("http://[fd00::1]/model", "network"),
    ("ftp://10.0.0.1/model", "unsupported scheme"),
    ("gopher://x/y", "unsupported scheme"),
    ("/plain/path", "needs a scheme"),
    ("", "non-empty"),
    ("file:///a\nb", "printable"),
])
def test_bad_uris_are_rejected_with_a_reason(uri: str, reason: str) -> None:
    with pytest.raises(SourceRejected, match=reason):
        parse_source_uri(uri, OPEN)


def test_s3_buckets_are_checked_against_the_allow_list() -> None:
    policy = _shared(buckets=["models"])
    assert parse_source_uri("s3://models/llama/", policy).key == "llama/"
    with pytest.raises(SourceRejected, match="not in the allowed buckets"):
        parse_source_uri("s3://other/llama", policy)


def test_tenant_templates_keep_each_team_in_its_own_prefix_and_folder(tmp_path: Path) -> None:
    buckets, roots = ["models/teams/{tenant}"], [str(tmp_path / "{tenant}")]
    team_a, team_b = _shared("team-a", roots, buckets), _shared("team-b", roots, buckets)
    assert parse_source_uri("s3://models/teams/team-a/llama", team_a).key == "teams/team-a/llama"
    for uri in ("s3://models/teams/team-a/llama", "s3://models/teams/team-ab/llama", "s3://models/llama"):
        with pytest.raises(SourceRejected, match="not in the allowed buckets"):
            parse_source_uri(uri, team_b)
    assert parse_source_uri((tmp_path / "team-a" / "m").as_uri(), team_a).path == tmp_path / "team-a" / "m"
    with pytest.raises(SourceRejected, match="outside the allowed model roots"):
        parse_source_uri((tmp_path / "team-a" / "m").as_uri(), team_b)


def test_a_shared_deployment_reads_nothing_unconfigured_and_never_the_artifact_store(tmp_path: Path) -> None:
    with pytest.raises(SourceRejected, match="file:// sources are not enabled"):
        parse_source_uri(tmp_path.as_uri(), _shared())
    with pytest.raises(SourceRejected, match="s3:// sources are not enabled"):
        parse_source_uri("s3://models/llama", _shared())
    # Even where the operator allowed the artifact bucket, another team's checkpoints under it stay out.
    policy = _shared(buckets=["shrinkray"], roots=[str(tmp_path)], artifacts="s3://shrinkray")
    with pytest.raises(SourceRejected, match="inside the artifact store"):
        parse_source_uri("s3://shrinkray/jobs/0b1c/checkpoint", policy)
    local = _shared(roots=[str(tmp_path)], artifacts=(tmp_path / "artifacts").as_uri())
    with pytest.raises(SourceRejected, match="inside the artifact store"):
        parse_source_uri((tmp_path / "artifacts" / "jobs" / "x").as_uri(), local)
    assert parse_source_uri((tmp_path / "models").as_uri(), local).path == tmp_path / "models"
