"""The format commands: validate, inspect and new, run in-process and as the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lienthong.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_validate_valid_files(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """Valid files print ``FILE: valid`` each and exit 0."""
    files = [str(data_dir / "edoc_valid.xml"), str(data_dir / "status.xml")]
    status, out, _ = _run(capsys, "validate", *files)
    assert status == 0
    assert out.splitlines() == [f"{f}: valid" for f in files]


def test_validate_lists_every_error(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """A file with errors prints one ``FILE: PATH: MESSAGE`` line per error and exits 1."""
    bad = str(data_dir / "invalid_manifest_mismatch.xml")
    good = str(data_dir / "edoc_valid.xml")
    status, out, _ = _run(capsys, "validate", bad, good)
    assert status == 1
    lines = out.splitlines()
    assert f"{good}: valid" in lines
    bad_lines = [line for line in lines if line.startswith(f"{bad}: ")]
    assert len(bad_lines) == 2
    assert f"{bad}: AttachmentEncoded/Attachment/ContentId: " in out


def test_validate_warns_of_deviations(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """Deviations print as warnings and exit 0; with ``--strict`` they fail with exit 1."""
    path = str(data_dir / "deviation_many_problems.xml")
    status, out, _ = _run(capsys, "validate", path)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"{path}: valid (with deviations)"
    assert len(lines) == 4
    assert f"{path}: warning: edXMLEnvelope/edXMLHeader/MessageHeader/OtherInfo/Priority: " in out
    assert "[integer]" in out
    status, out, _ = _run(capsys, "validate", "--strict", path)
    assert status == 1
    assert f"{path}: deviation: edXMLEnvelope/edXMLHeader/MessageHeader/From/Telephone: " in out
    assert "valid" not in out.splitlines()[0]


def test_validate_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A file that cannot be read is a one-line error and exit 1."""
    status, _, err = _run(capsys, "validate", str(tmp_path / "nope.xml"))
    assert status == 1
    assert err.strip().startswith("lienthong: cannot read file")
    assert len(err.strip().splitlines()) == 1


def test_inspect_summary(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """inspect prints kind, DocumentId, sender with name, recipients, attachments and signing."""
    status, out, _ = _run(capsys, "inspect", str(data_dir / "attachment_zipped.xml"))
    assert status == 0
    assert "kind:         edoc" in out
    assert "000.00.00.G22,2025/09/30,7816/VPCP-TTĐT" in out
    assert "000.00.00.G22 (Văn phòng Chính phủ)" in out
    assert "000.00.12.H49 (UBND huyện Núi Thành)" in out
    assert "congvan.pdf (application/pdf, 480 bytes)" in out
    assert "priority:     1 (urgent)" in out
    assert "signed:       no" in out
    assert "000.00.00.G22 at 2025-09-30 14:05:10" in out


def test_inspect_status_and_business(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """inspect shows a status code's meaning and a revocation's target."""
    _, out, _ = _run(capsys, "inspect", str(data_dir / "variant_status_wrapper.xml"))
    assert "status:       03 (accepted)" in out
    _, out, _ = _run(capsys, "inspect", str(data_dir / "revoke.xml"))
    assert "business:     revoke of 000.00.00.G22,2025/09/30,7816/VPCP-TTĐT" in out


def test_inspect_lists_deviations(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """inspect of real traffic prints the summary, then each deviation with its kind; exit 0."""
    status, out, _ = _run(capsys, "inspect", str(data_dir / "real_axis_2025.xml"))
    assert status == 0
    assert "attachments:  1" in out
    assert "(no agency) at 2025-09-30 14:05:13" in out
    assert "deviation:    edXMLEnvelope/edXMLHeader/MessageHeader/SignerInfo: is missing" in out
    assert "[business_document_id]" in out


def test_inspect_names_a_foreign_layout(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """A file with attachments outside AttachmentEncoded: exit 1, the error names where they
    are, and no attachment count that leaves them out."""
    status, out, _ = _run(capsys, "inspect", str(data_dir / "invalid_attachments_in_envelope.xml"))
    assert status == 1
    assert "error:        edXMLEnvelope/edXMLAttachments: holds 1 attachment(s)" in out
    assert "not in the QCVN 102 layout" in out
    assert "attachments:" not in out


def test_inspect_refused_file(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """inspect of a hostile file exits 1 with the file and the reason on one line."""
    path = data_dir / "hostile_external_entity.xml"
    status, _, err = _run(capsys, "inspect", str(path))
    assert status == 1
    assert str(path) in err
    assert "DOCTYPE" in err


def test_new_writes_a_valid_package(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """new writes a package that validate accepts, with the attachment inside."""
    attachment = tmp_path / "công văn.pdf"
    attachment.write_bytes(b"%PDF-1.4 test")
    output = tmp_path / "out.xml"
    status, _, err = _run(
        capsys, "new", "--from", "000.00.00.G22", "--to", "000.00.00.H49",
        "--to", "000.00.12.H49", "--subject", "Về việc thử", "--attach", str(attachment),
        "--number", "15", "--notation", "VPCP-TH", "-o", str(output),
    )  # fmt: skip
    assert status == 0, err
    status, out, _ = _run(capsys, "validate", str(output))
    assert (status, out.strip()) == (0, f"{output}: valid")
    _, out, _ = _run(capsys, "inspect", str(output))
    assert "công văn.pdf (application/pdf, 13 bytes)" in out
    assert "number:       15/VPCP-TH" in out


def test_new_bad_code(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed recipient code is a one-line error naming it, exit 1, nothing written."""
    status, out, err = _run(
        capsys, "new", "--from", "000.00.00.G22", "--to", "000.00.00.h49", "--subject", "x"
    )
    assert status == 1
    assert out == ""
    assert "000.00.00.h49" in err
    assert len(err.strip().splitlines()) == 1


def test_new_missing_attachment(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing attachment file is a one-line error naming it."""
    missing = tmp_path / "missing.pdf"
    status, _, err = _run(
        capsys, "new", "--from", "000.00.00.G22", "--to", "000.00.00.H49", "--subject", "x",
        "--attach", str(missing),
    )  # fmt: skip
    assert status == 1
    assert f"cannot read attachment {missing}" in err


def test_console_script_end_to_end(tmp_path: Path) -> None:
    """The installed ``lienthong`` script writes a package to stdout that it then validates."""
    script = Path(sys.executable).parent / "lienthong"
    if not script.exists():
        script = ROOT / ".venv" / "bin" / "lienthong"
    made = subprocess.run(
        [str(script), "new", "--from", "000.00.00.G22", "--to", "000.00.00.H49",
         "--subject", "Thử nghiệm"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    package = tmp_path / "p.xml"
    package.write_bytes(made.stdout)
    checked = subprocess.run(
        [str(script), "validate", str(package)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.strip() == f"{package}: valid"
