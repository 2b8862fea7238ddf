"""The daemon's TOML configuration: defaults, checks, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lienthong.config import check_for_daemon, load_config, parse_config
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
        (
            MINIMAL + "[store]\nlease = 5\n",
            "store.lease",
            "known keys: backend, bookkeeping_wait_ms, busy_timeout_ms",
        ),
        (
            MINIMAL + "[nodes]\n",
            "nodes",
            "known keys: daemon, directory, gateway, identity, links, node",
        ),
        (MINIMAL + "store = 3\n", "node.store", "unknown key"),
        ('[store]\nretry = 1\n[node]\ncode = "000.00.12.H30"\n', "store.retry", "must be a table"),
        (MINIMAL + '[links.parent]\nbrokers = ["mq2"]\n', "links.parent.brokers", "host:port"),
        (MINIMAL + '[links.parent]\nengine = "rabbit"\n', "links.parent.engine", "mosquitto, nats"),
    ],
)
def test_errors_name_the_key_and_the_problem(text: str, key: str, words: str) -> None:
    """Every refused setting is reported with its dotted key and what is wrong."""
    with pytest.raises(ConfigError, match=words) as info:
        parse_config(text)
    assert info.value.key == key


def test_a_link_lists_the_other_members_of_a_broker_cluster() -> None:
    """``brokers`` adds addresses after host:port (host:port itself not twice), and ``engine``
    names the broker program."""
    config = parse_config(
        MINIMAL + '[links.parent]\nhost = "mq1"\nport = 8883\nengine = "nats"\n'
        'brokers = ["mq1:8883", "mq2:8883", "[fd00::3]:8884"]\n'
    )
    assert config.links.parent.alternates == (("mq2", 8883), ("fd00::3", 8884))
    assert config.links.parent.engine == "nats"
    assert parse_config(MINIMAL).links.parent.engine == "mosquitto"


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    """A file that is not TOML, or is missing, is a ConfigError naming it."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    """A relative key path in a config file points into that file's folder."""
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\ncode = "000.00.00.H49"\n[identity]\nkey = "keys/a.key"\n')
    assert load_config(cfg).identity.key == tmp_path / "keys" / "a.key"


def test_path_lists_are_checked() -> None:
    """trust.ca takes a list of path strings and nothing else."""
    with pytest.raises(ConfigError, match=r"trust\.ca: must be a list of path strings"):
        parse_config('[node]\ncode = "000.00.00.H49"\n[trust]\nca = "/etc/ca.crt"\n')


def test_daemon_check_names_the_missing_setting() -> None:
    """A config good enough for `queue` but not for `run` names what the daemon lacks."""
    config = parse_config('[node]\ncode = "000.00.00.H49"\n')
    with pytest.raises(ConfigError, match=r"node\.directory: is required to run the daemon"):
        check_for_daemon(config)


def test_daemon_check_wants_a_link() -> None:
    """A node with no broker at all is refused, naming [links]."""
    config = parse_config(
        '[node]\ncode = "000.00.00.H49"\ndirectory = "/d.toml"\n'
        '[identity]\nkey = "/k"\ncert = "/c"\n[trust]\nca = ["/ca"]\n'
    )
    with pytest.raises(ConfigError, match=r"^links: neither"):
        check_for_daemon(config)


def test_the_example_config_is_valid() -> None:
    """config/lienthong.example.toml parses with every key known."""
    example = Path(__file__).resolve().parents[1] / "config" / "lienthong.example.toml"
    config = load_config(example)
    assert config.node.code == "000.00.05.H49"
    assert config.links.parent.enabled
