"""The daemon's TOML configuration: defaults, checks, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lienthong.config import load_config, parse_config
from lienthong.errors import ConfigError

MINIMAL = '[node]\ncode = "000.00.12.H30"\n'


def test_minimal_config_uses_working_defaults() -> None:
    """Only the node code is required; the rest has defaults."""
    config = parse_config(MINIMAL)
    assert config.node.code == "000.00.12.H30"
    assert config.node.state_dir == Path("/var/lib/lienthong")
    assert config.store.retry.max_attempts == 20
    assert config.store.lease_s == 60


def test_settings_are_read_and_converted() -> None:
    """Values given override the defaults; integers are accepted where numbers are expected."""
    config = parse_config(
        MINIMAL + 'state_dir = "/srv/lt"\n[store]\nlease_s = 5\n[store.retry]\nmax_attempts = 3\n'
    )
    assert config.node.state_dir == Path("/srv/lt")
    assert config.store.lease_s == 5.0
    assert config.store.retry.max_attempts == 3


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("", "node.code", "is required"),
        ('[node]\ncode = "00.1-2"\n', "node.code", "not an agency code"),
        (MINIMAL + "[store.retry]\nmax_attempts = 0\n", "store.retry.max_attempts", "at least 1"),
        (MINIMAL + '[store.retry]\nmax_attempts = "3"\n', "store.retry.max_attempts", "integer"),
        (MINIMAL + "[store.retry]\njitter = 2\n", "store.retry.jitter", "between 0 and 1"),
        (MINIMAL + "[store]\nlease = 5\n", "store.lease", "known keys: busy_timeout_ms"),
        (MINIMAL + "[nodes]\n", "nodes", "known keys: node, store"),
        (MINIMAL + "store = 3\n", "node.store", "unknown key"),
        ('[store]\nretry = 1\n[node]\ncode = "000.00.12.H30"\n', "store.retry", "must be a table"),
    ],
)
def test_errors_name_the_key_and_the_problem(text: str, key: str, words: str) -> None:
    """Every refused setting is reported with its dotted key and what is wrong."""
    with pytest.raises(ConfigError, match=words) as info:
        parse_config(text)
    assert info.value.key == key


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    """A file that is not TOML, or is missing, is a ConfigError naming it."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
