"""The systemd units are valid and keep the daemon's contract (notify, watchdog, own user)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
LIENTHONG = str(Path(sys.executable).parent / "lienthong")
analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed")


def _verify(unit_text: str, name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # ExecStart points at the installed /usr/bin/lienthong; verify checks that the binary
    # exists, so the test points it at the one installed in this environment.
    unit = tmp_path / name
    unit.write_text(unit_text.replace("/usr/bin/lienthong", LIENTHONG), encoding="utf-8")
    return subprocess.run(
        [str(analyze), "verify", str(unit)], capture_output=True, text=True, check=False
    )


def _service_section(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    return parser["Service"]


@needs_analyze
@pytest.mark.parametrize(
    ("source", "name"),
    [("lienthong.service", "lienthong.service"), ("lienthong@.service", "lienthong@h49.service")],
)
def test_units_pass_systemd_analyze_verify(source: str, name: str, tmp_path: Path) -> None:
    """systemd-analyze verify accepts the service and an instance of the template."""
    result = _verify((UNITS / source).read_text(encoding="utf-8"), name, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lienthong" not in result.stderr, result.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check is real: a unit with an unknown executable fails verification."""
    text = (UNITS / "lienthong.service").read_text(encoding="utf-8")
    result = _verify(
        text.replace("/usr/bin/lienthong", "/nonexistent/lienthong"), "x.service", tmp_path
    )
    assert result.returncode != 0


@pytest.mark.parametrize("source", ["lienthong.service", "lienthong@.service"])
def test_units_keep_the_daemon_contract(source: str) -> None:
    """Type=notify with a watchdog, a dedicated user and state under /var/lib/lienthong."""
    service = _service_section(UNITS / source)
    assert service["Type"] == "notify"
    assert service["WatchdogSec"]
    assert service["User"] == "lienthong"
    assert service["StateDirectory"].startswith("lienthong")
    assert service["ProtectSystem"] == "strict"
    assert " run --config " in service["ExecStart"]


def test_template_gives_each_instance_its_own_config_and_state() -> None:
    """The instance template keys config and state on the instance name."""
    service = _service_section(UNITS / "lienthong@.service")
    assert service["ExecStart"].endswith("/etc/lienthong/%i.toml")
    assert service["StateDirectory"] == "lienthong/%i"


def _exposure(unit: Path) -> float:
    result = subprocess.run(
        [str(analyze), "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_analyze
def test_service_hardening_score_stays_at_most_2(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates the service 2.0 or better (the README
    prints the figure), and the check is real: a unit without hardening scores worse."""
    assert _exposure(UNITS / "lienthong.service") <= 2.0
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/usr/bin/true\n", encoding="utf-8")
    assert _exposure(bare) > 5.0


@pytest.mark.parametrize("source", ["lienthong.service", "lienthong@.service"])
def test_units_raise_the_open_files_limit(source: str) -> None:
    """The units raise LimitNOFILE above the default soft limit of 1024."""
    assert int(_service_section(UNITS / source)["LimitNOFILE"]) > 1024
