"""Directory versions: signed by the authority, refused when forged, older, expired or wrong."""

from __future__ import annotations

import datetime as dt
import tomllib
from typing import Any

import pytest

from lienthong.devnet.network import topology_text
from lienthong.dirholder import DirectoryHolder
from lienthong.dirversion import (
    Alias,
    DirectoryVersion,
    VersionRefused,
    bootstrap_version,
    check_applicable,
    diff,
    make_version,
    read_version,
)
from lienthong.routing import Forward, Local, next_hop, split_by_next_hop
from lienthong.trust.pki import CertifiedKey, issue_agency, make_ca

NOW = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
MONTH = dt.timedelta(days=30)
PROVINCE = "000.00.00.H49"
DISTRICT = "000.00.05.H49"


@pytest.fixture(scope="module")
def authority() -> CertifiedKey:
    """The directory authority's key and certificate."""
    return issue_agency(make_ca("test CA", key_type="ec"), "directory authority", key_type="ec")


def _doc() -> dict[str, Any]:
    return tomllib.loads(topology_text("four-tier"))


def _version(
    authority: CertifiedKey,
    number: int,
    document: dict[str, Any] | None = None,
    *,
    issued: dt.datetime = NOW,
    expires: dt.datetime | None = None,
    aliases: tuple[Alias, ...] = (),
) -> bytes:
    return make_version(
        document or _doc(),
        number=number,
        issued=issued,
        expires=expires or issued + MONTH,
        key=authority.key,
        cert=authority.certificate,
        aliases=aliases,
    )


def _read(authority: CertifiedKey, data: bytes) -> DirectoryVersion:
    return read_version(data, authority.certificate)


def test_a_signed_version_reads_back_with_its_number_dates_and_directory(
    authority: CertifiedKey,
) -> None:
    """What make_version signs, read_version returns: number, dates, agencies."""
    version = _read(authority, _version(authority, 3))
    assert version.number == 3
    assert version.issued == NOW
    assert version.expires == NOW + MONTH
    assert PROVINCE in version.directory
    assert not version.bootstrap


def test_the_same_input_gives_the_same_body_bytes(authority: CertifiedKey) -> None:
    """The body is canonical JSON: two signings differ at most in the signature line."""
    first = _version(authority, 1).split(b"\n", 1)[1]
    second = _version(authority, 1).split(b"\n", 1)[1]
    assert first == second


def test_a_changed_body_byte_is_refused_as_forged(authority: CertifiedKey) -> None:
    """One byte changed after signing: refused as forged, nothing of the body believed."""
    data = _version(authority, 1).replace(b"Qu\xe1\xba\xa3ng Nam", b"Qu\xe1\xba\xa3ng Ngai")
    with pytest.raises(VersionRefused) as caught:
        _read(authority, data)
    assert caught.value.reason == "forged"
    assert "does not verify with the directory authority certificate" in str(caught.value)


def test_a_version_signed_by_another_key_is_refused_as_forged(authority: CertifiedKey) -> None:
    """A valid signature by a key other than the authority's is a forgery here."""
    other = issue_agency(make_ca("other CA", key_type="ec"), "impostor", key_type="ec")
    with pytest.raises(VersionRefused) as caught:
        _read(authority, _version(other, 9))
    assert caught.value.reason == "forged"
    assert "names the signer" in str(caught.value)


def test_an_rsa_authority_signs_and_verifies(authority: CertifiedKey) -> None:
    """RSA authority keys work as EC ones do."""
    rsa_authority = issue_agency(make_ca("rsa CA", key_type="ec"), "authority", key_type="rsa")
    assert _read(rsa_authority, _version(rsa_authority, 2)).number == 2


@pytest.mark.parametrize(
    "data",
    [b"", b"not a version", b'{"format":"x"}\n{}', b"[]\n{}"],
)
def test_garbage_is_refused_as_malformed(authority: CertifiedKey, data: bytes) -> None:
    """Bytes that are not a version file get a clear malformed refusal."""
    with pytest.raises(VersionRefused) as caught:
        _read(authority, data)
    assert caught.value.reason == "malformed"


def test_a_wrong_directory_is_never_signed(authority: CertifiedKey) -> None:
    """make_version checks the document as a receiver would before signing it."""
    document = _doc()
    document["agency"].append({"code": "not a code"})
    with pytest.raises(VersionRefused) as caught:
        _version(authority, 1, document)
    assert caught.value.reason == "malformed"
    assert "agency[" in str(caught.value)


def test_expiry_before_issue_is_never_signed(authority: CertifiedKey) -> None:
    """A version must expire after it is issued."""
    with pytest.raises(VersionRefused, match="expires before it is issued"):
        _version(authority, 1, expires=NOW - MONTH)


def test_older_same_expired_and_dropping_the_node_are_refused(authority: CertifiedKey) -> None:
    """check_applicable names the reason for each kind of version that must not replace ours."""
    current = _read(authority, _version(authority, 5))
    cases: list[tuple[bytes, str, str]] = [
        (_version(authority, 4), "older", "not newer than version 5"),
        (current.raw, "same", "already in force"),
        (_version(authority, 6, issued=NOW - 3 * MONTH), "expired", "expired at"),
    ]
    dropped = _doc()
    dropped["agency"] = [a for a in dropped["agency"] if a["code"] != PROVINCE]
    dropped["agency"] = [a for a in dropped["agency"] if not a["code"].endswith(".H49")]
    cases.append((_version(authority, 7, dropped), "not-a-node", f"does not list {PROVINCE}"))
    for data, reason, words in cases:
        with pytest.raises(VersionRefused) as caught:
            check_applicable(_read(authority, data), current, PROVINCE, NOW)
        assert caught.value.reason == reason
        assert words in str(caught.value)
    check_applicable(_read(authority, _version(authority, 6)), current, PROVINCE, NOW)


def test_bootstrap_is_replaced_by_any_signed_version_and_never_expires(
    authority: CertifiedKey,
) -> None:
    """Version 0 is the node's own file: no expiry, and version 1 replaces it."""
    boot = bootstrap_version(_doc(), NOW)
    assert boot.bootstrap
    assert not boot.expired(NOW + 100 * MONTH)
    check_applicable(_read(authority, _version(authority, 1)), boot, PROVINCE, NOW)


def test_aliases_route_a_renamed_code_to_its_new_agency_until_their_day(
    authority: CertifiedKey,
) -> None:
    """A document to an old code is routed to the new code while the alias lasts."""
    document = _doc()
    old = "000.02.05.H49"
    alias = Alias(old, "000.01.05.H49", dt.date(2025, 12, 31))
    version = _read(authority, _version(authority, 2, document, aliases=(alias,)))
    routing = version.routing_directory(dt.date(2025, 7, 1))
    assert next_hop(PROVINCE, routing, old) == Forward("000.01.05.H49", DISTRICT, "child")
    assert split_by_next_hop(DISTRICT, routing, [old, "000.01.05.H49"]).by_hop == {
        "000.01.05.H49": ("000.01.05.H49",)
    }
    assert isinstance(next_hop("000.01.05.H49", routing, old), Local)
    later = version.routing_directory(dt.date(2026, 1, 1))
    assert split_by_next_hop(PROVINCE, later, [old]).refused


def test_the_codes_of_an_agency_join_its_old_and_new_codes_past_their_day(
    authority: CertifiedKey,
) -> None:
    """Both codes of a renamed agency name it, from either side and after the alias lapsed
    (receipts of documents sent before the reform carry the old one)."""
    old, new = "000.02.05.H49", "000.01.05.H49"
    alias = Alias(old, new, dt.date(2025, 12, 31))
    version = _read(authority, _version(authority, 2, _doc(), aliases=(alias,)))
    assert version.codes_of(old) == version.codes_of(new) == {old, new}
    assert version.codes_of(PROVINCE) == {PROVINCE}


def test_an_alias_for_a_code_still_listed_is_refused(authority: CertifiedKey) -> None:
    """An alias names a code that is gone, towards one that is listed."""
    alias = Alias(DISTRICT, PROVINCE, dt.date(2025, 12, 31))
    with pytest.raises(VersionRefused, match="still listed"):
        _version(authority, 2, aliases=(alias,))


def test_diff_names_added_removed_and_moved_agencies(authority: CertifiedKey) -> None:
    """A commune moved to its province, a new department with a signer, a district gone."""
    old = _read(authority, _version(authority, 1)).directory
    document = _doc()
    commune = next(a for a in document["agency"] if a["code"] == "000.01.05.H49")
    commune["parent"] = PROVINCE
    document["agency"] = [a for a in document["agency"] if a["code"] != DISTRICT]
    document["agency"].append(
        {"code": "000.00.02.H49", "name": "Sở Tài chính", "signers": ["ab" * 32]}
    )
    new = _read(authority, _version(authority, 2, document)).directory
    lines = diff(old, new)
    assert f"+ 000.00.02.H49 Sở Tài chính (under {PROVINCE})" in lines
    assert "- 000.00.05.H49 UBND huyện Duy Xuyên" in lines
    assert f"~ 000.01.05.H49 parent: {DISTRICT} -> {PROVINCE}" in lines
    assert diff(new, new) == []


def test_the_holder_lets_an_alias_lapse_at_the_end_of_its_utc_day(
    authority: CertifiedKey,
) -> None:
    """The directory a node routes with keeps an alias up to the last second of its day, drops
    it from the first second of the next, and follows a clock set back."""
    old = "000.02.05.H49"
    alias = Alias(old, "000.01.05.H49", dt.date(2025, 12, 31))
    version = _read(authority, _version(authority, 2, _doc(), aliases=(alias,)))
    midnight = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    now = [midnight - 1.0]
    holder = DirectoryHolder(version, now[0], clock=lambda: now[0])
    routing_before = holder.directory
    assert not split_by_next_hop(PROVINCE, routing_before, [old]).refused
    assert holder.directory is routing_before  # the same day: nothing made again
    now[0] = midnight
    assert split_by_next_hop(PROVINCE, holder.directory, [old]).refused
    now[0] = midnight - 12 * 3600.0
    assert not split_by_next_hop(PROVINCE, holder.directory, [old]).refused
