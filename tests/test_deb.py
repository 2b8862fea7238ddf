"""The Debian package, built by scripts/build-deb and installed into a clean Debian 12 root
made with debootstrap: install, set up, check, verify the units, upgrade, purge.

About two and a half minutes: the build (a minute) while debootstrap runs (one and a half),
then the rest. The
root is a real Debian 12 minbase with python3.11, systemd, mosquitto and procps, made from
Debian's package mirror (``LIENTHONG_DEBIAN_MIRROR`` to choose another); the package's
maintainer scripts run in it as they would on an agency's server, without a running systemd.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lienthong import __version__
from lienthong.brokersetup import free_port
from lienthong.devnet.network import topology_text

REPO = Path(__file__).resolve().parents[1]
MIRROR = os.environ.get("LIENTHONG_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CODE = "000.00.00.H49"  # a province node of the four-tier directory, with one child node

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="installing a Debian package into a chroot needs root"
    ),
]


class Root:
    """A debootstrapped Debian 12 folder with /proc mounted, to run commands in."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside the root; with ``check``, fail the test on a non-zero exit."""
        result = subprocess.run(
            ["chroot", str(self.path), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"},
        )
        if check:
            assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result

    def file(self, path: str) -> Path:
        """The host path of ``path`` inside the root."""
        return self.path / path.lstrip("/")

    def files(self) -> set[str]:
        """Every path in the root, but /proc."""
        found = set()
        for dirpath, dirnames, filenames in os.walk(self.path):
            if Path(dirpath) == self.path:
                dirnames[:] = [d for d in dirnames if d not in ("proc", "dev", "sys")]
            for name in dirnames + filenames:
                found.add("/" + str((Path(dirpath) / name).relative_to(self.path)))
        return found


def _build(out: Path) -> tuple[Path, Path]:
    """The package built from the repository, and a newer build of it (the same tree under
    the next Debian revision)."""
    first = subprocess.run(
        [str(REPO / "scripts" / "build-deb"), "--version", f"{__version__}-1", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert first.returncode == 0, first.stderr
    old = Path(first.stdout.strip().splitlines()[-1])
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-R", str(old), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(
        control.read_text().replace(f"Version: {__version__}-1", f"Version: {__version__}-2"),
        encoding="utf-8",
    )
    new = out / old.name.replace(f"{__version__}-1", f"{__version__}-2")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(new)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree)
    return old, new


@pytest.fixture(scope="module")
def debs_and_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Root]]:
    """The two builds, and a clean Debian 12 root (debootstrap minbase and what the package
    needs), made at the same time: one mostly computes, the other mostly downloads."""
    if shutil.which("debootstrap") is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"],
            check=True,
            capture_output=True,
        )
    folder = tmp_path_factory.mktemp("debian12")
    path = folder / "root"
    log = (folder / "debootstrap.log").open("w+")
    bootstrap = subprocess.Popen(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3.11,systemd,mosquitto,procps",
            "bookworm",
            str(path),
            MIRROR,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        old, new = _build(tmp_path_factory.mktemp("debs"))
        assert bootstrap.wait(900) == 0, (folder / "debootstrap.log").read_text()[-3000:]
    finally:
        if bootstrap.poll() is None:
            bootstrap.kill()
            bootstrap.wait()
        log.close()
    subprocess.run(["mount", "-t", "proc", "proc", str(path / "proc")], check=True)
    try:
        yield old, new, Root(path)
    finally:
        subprocess.run(["umount", "-l", str(path / "proc")], check=False)
        shutil.rmtree(path, ignore_errors=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_package_installs_sets_up_upgrades_and_purges(
    debs_and_root: tuple[Path, Path, Root],
) -> None:
    """In a clean Debian 12: the package installs without starting anything, `lienthong init
    --dev-ca` and `broker-config` set a node with children up, `check` passes what can pass
    in a chroot, the installed units verify, an upgrade keeps the configuration and the state,
    and a purge leaves only the document store and the system user."""
    old, new, root = debs_and_root
    before = root.files()
    for deb in (old, new):
        shutil.copy(deb, root.file(f"/tmp/{deb.name}"))
    root.file("/tmp/directory.toml").write_text(topology_text("four-tier"), encoding="utf-8")

    # -- install: the user and the folders, nothing started, nothing enabled ------------------
    installed = root.run("dpkg", "-i", f"/tmp/{old.name}")
    assert "lienthong init" in installed.stderr  # the next step is said
    assert root.run("lienthong", "--version").stdout.strip() == f"lienthong {__version__}"
    assert root.run("getent", "passwd", "lienthong").stdout.startswith("lienthong:")
    assert root.run("stat", "-c", "%U:%G %a", "/var/lib/lienthong").stdout.split() == [
        "lienthong:lienthong",
        "750",
    ]
    assert root.run("stat", "-c", "%U:%G %a", "/etc/lienthong").stdout.split() == [
        "root:lienthong",
        "750",
    ]
    assert not root.file("/etc/lienthong/lienthong.toml").exists()
    assert not list(root.file("/etc/systemd/system").rglob("lienthong*"))
    # The installed daemon finds its XSDs (inside its package, and for people in /usr/share).
    xsd = root.run(
        "/opt/lienthong/bin/python",
        "-c",
        "from lienthong.resources import shipped_dir; print(shipped_dir('schemas'))",
    ).stdout.strip()
    assert xsd.startswith("/opt/lienthong/lib/python3.11/site-packages/lienthong/")
    root.run("test", "-f", "/usr/share/lienthong/schemas/edoc.xsd")

    # -- set up a node with children ----------------------------------------------------------
    port = free_port()
    init = root.run(
        "lienthong",
        "init",
        "--agency",
        CODE,
        "--parent",
        "127.0.0.1:1",
        "--children",
        f"127.0.0.1:{port}",
        "--directory",
        "/tmp/directory.toml",
        "--dev-ca",
        "/root/dev-ca",
    )
    assert "signers = [" in init.stdout
    assert root.run("stat", "-c", "%U:%G %a", "/etc/lienthong/agency.key").stdout.split() == [
        "root:lienthong",
        "640",
    ]
    broker_config = root.run("lienthong", "broker-config")
    assert "tested mosquitto" in broker_config.stdout
    broker = subprocess.Popen(
        ["chroot", str(root.path), "mosquitto", "-c", "/etc/lienthong-broker/mosquitto.conf"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            check = root.run("lienthong", "check", check=False)
            if "OK    broker children" in check.stdout:
                break
    finally:
        broker.terminate()
        broker.wait(10)
    for line in ("config", "directory", "certificate", "binding", "chain", "broker children"):
        assert f"OK    {line}" in check.stdout, check.stdout
    assert "FAIL  broker parent" in check.stdout  # nothing listens at 127.0.0.1:1
    assert check.returncode == 1

    # -- the installed units ------------------------------------------------------------------
    root.run(
        "systemd-analyze",
        "verify",
        "lienthong.service",
        "lienthong@h49.service",
        "lienthong-broker.service",
    )

    # -- state, then an upgrade ---------------------------------------------------------------
    root.run("runuser", "-u", "lienthong", "--", "lienthong", "inbox")  # makes the store
    assert root.file("/var/lib/lienthong/store.sqlite3").exists()
    kept = [
        "/etc/lienthong/lienthong.toml",
        "/etc/lienthong/agency.key",
        "/etc/lienthong/agency.crt",
        "/etc/lienthong-broker/mosquitto.conf",
        "/var/lib/lienthong/store.sqlite3",
    ]
    sums = {p: _sha(root.file(p)) for p in kept}
    example = root.file("/etc/lienthong/lienthong.toml.example")
    example.write_text(example.read_text() + "# a local note\n", encoding="utf-8")
    root.run("dpkg", "-i", f"/tmp/{new.name}")
    assert root.run("dpkg-query", "-W", "-f=${Version}", "lienthong").stdout == f"{__version__}-2"
    assert root.run("stat", "-c", "%U", "/var/lib/lienthong/store.sqlite3").stdout.strip() == (
        "lienthong"
    )
    assert {p: _sha(root.file(p)) for p in kept} == sums
    assert example.read_text().endswith("# a local note\n")  # a changed conffile is kept
    assert "OK    chain" in root.run("lienthong", "check", check=False).stdout

    # -- remove keeps the configuration; purge leaves the document store and the user ---------
    root.run("dpkg", "-r", "lienthong")
    assert root.file("/etc/lienthong/lienthong.toml").exists()
    assert not root.file("/opt/lienthong").exists()
    purged = root.run("dpkg", "-P", "lienthong")
    assert "kept /var/lib/lienthong" in purged.stderr
    left = {
        p
        for p in root.files() - before
        if not p.startswith(("/tmp/", "/var/lib/dpkg/", "/var/log/", "/root/", "/run/"))
        and p not in ("/tmp", "/var/log/dpkg.log")
    }
    assert left == {"/var/lib/lienthong"} | {
        p for p in left if p.startswith("/var/lib/lienthong/")
    }, sorted(left)
    assert "/var/lib/lienthong/store.sqlite3" in left
    assert root.run("getent", "passwd", "lienthong").returncode == 0
