"""Keys: nothing that could climb out of a prefix or that a backend would store differently gets through."""

from __future__ import annotations

import pytest

from storage.artifacts.keys import ensure_under, folder, join_key, validate_key
from storage.errors import InvalidKey


@pytest.mark.parametrize("key", ["jobs/1/model/config.json", "a", "a-b_c.d/e", "x/.hidden", "v1.2/..x"])
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", [
    "", "/abs", "a/../b", "..", "../x", "a/./b", ".", "a//b", "a/", "a\\b", "a/b\x00", "tab\there",
    "sp ace", "ünïcode", "q?x", "a/%2e%2e", "x" * 1025,
])
def test_invalid_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)


def test_join_key_validates_the_result() -> None:
    assert join_key("jobs/1", "model", "config.json") == "jobs/1/model/config.json"
    assert join_key("jobs/1/", "x") == "jobs/1/x"
    assert join_key("", "x") == "x"
    for part in ("../escape", "/etc/passwd", "a/../../b"):
        with pytest.raises(InvalidKey):
            join_key("jobs/1", part)


def test_ensure_under_is_a_folder_test_not_a_string_prefix() -> None:
    assert ensure_under("jobs/1/a", "jobs/1") == "jobs/1/a"
    assert ensure_under("jobs/1/a", "jobs/1/") == "jobs/1/a"
    for key in ("jobs/10/a", "jobs/1", "other/x"):
        with pytest.raises(InvalidKey):
            ensure_under(key, "jobs/1")
    assert folder("jobs/1") == "jobs/1/" and folder("") == ""
