"""The axis wire format as values: operations, parameters, HMAC, hash-file, replies; and the
``[gateway]`` configuration with its clients."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lienthong.config import parse_config
from lienthong.devnet.axis_client import AxisClient, java_string_hash
from lienthong.errors import ConfigError
from lienthong.gateway import axis, load_clients
from lienthong.gateway.axis import AxisError, Client, HashCheck, HashPolicy

SECRET = "bí mật"
CLIENT = Client("qlvb", SECRET, frozenset({"000.00.01.H49"}), frozenset({"000.00.01.H49"}))


def request_of(sdk: AxisClient, operation: str = "getAgenciesList") -> axis.AxisRequest:
    """What the gateway parses from the headers ``sdk`` would send."""
    return axis.parse_request(f"/x/{operation}", sdk.signed_headers())


def sdk_client(**params: str) -> AxisClient:
    """An SDK client object that has put ``params`` in its header map."""
    client = AxisClient("/x", "qlvb", SECRET)
    client.headers.put("Content-Type", "application/json")
    for key, value in params.items():
        client.headers.put(key, value)
    return client


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/sendEdoc", "sendEdoc"),
        ("//getEdoc", "getEdoc"),
        ("/a/b//updateStatus", "updateStatus"),
        ("/x/getAgenciesList/", "getAgenciesList"),
        ("/", ""),
    ],
)
def test_the_operation_is_the_last_path_segment(path: str, operation: str) -> None:
    """Any prefix, a double slash, or a trailing slash still names the operation."""
    assert axis.operation_of(path) == operation


@given(st.binary(min_size=32, max_size=32))
def test_java_hex_writes_bytes_without_padding(digest: bytes) -> None:
    """hash-file hex is Integer.toHexString per byte: 0x0c is "c", 0xab is "ab"."""
    assert axis.java_hex(digest) == "".join(hex(b)[2:] for b in digest)


def digest_of(*pieces: bytes) -> axis.BodyDigest:
    """A body digest fed ``pieces`` one by one."""
    digest = axis.BodyDigest()
    for piece in pieces:
        digest.update(piece)
    return digest


@given(st.binary(min_size=1, max_size=300), st.lists(st.integers(0, 302), max_size=4))
def test_a_body_fed_in_pieces_is_matched_with_and_without_its_crlf(
    package: bytes, cuts: list[int]
) -> None:
    """Wherever the pieces split the body, hash-file of the package names its size."""
    body = package + b"\r\n"
    bounds = sorted({0, len(body), *(min(c, len(body)) for c in cuts)})
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    plain = hashlib.sha256(package).digest()
    assert digest_of(*pieces).package_size(axis.java_hex(plain)) == len(package)
    whole = hashlib.sha256(body).hexdigest()
    assert digest_of(*pieces).package_size(whole) == len(body)


def test_the_sendedoc_body_must_match_hash_file() -> None:
    """One trailing CRLF is stripped; hash-file matches in unpadded or plain hex; a body that
    is not the package signed, or an empty one, is refused."""
    package = b"<edXML>\r\n</edXML>\r\n"
    digest = hashlib.sha256(package).digest()
    body = package + b"\r\n"
    assert digest_of(body).package_size(axis.java_hex(digest)) == len(package)
    assert digest_of(body[:5], body[5:]).package_size(digest.hex().upper()) == len(package)
    with pytest.raises(AxisError, match="damaged or replaced"):
        digest_of(body).package_size("abc")
    with pytest.raises(AxisError, match="body is empty"):
        digest_of(b"\r\n").package_size(axis.java_hex(hashlib.sha256(b"").digest()))


def test_a_streamed_field_goes_between_the_two_halves() -> None:
    """success_around splits a reply where a large string value is streamed in."""
    head, tail = axis.success_around(axis.GET_EDOC, "data")
    assert json.loads(head + b"QUJD" + tail) == json.loads(axis.success(axis.GET_EDOC, data="QUJD"))


def test_hmac_checks_tell_the_header_encodings_apart() -> None:
    """ASCII and UTF-8 verify as sent, Latin-1 after re-encoding, '?' cannot, a wrong key never."""
    message = '{"XroadVnpt-note":"Phòng Tài chính"}'
    mac = axis.hmac_hex(SECRET, message.encode("utf-8"))
    assert axis.check_hash(SECRET, message.encode("utf-8"), mac) is HashCheck.VERIFIED
    assert axis.check_hash(SECRET, message.encode("latin-1"), mac) is HashCheck.VERIFIED_LATIN1
    mangled = b'{"XroadVnpt-note":"V?n th?"}'
    mangled_mac = axis.hmac_hex(SECRET, '{"XroadVnpt-note":"Văn thư"}'.encode())
    assert axis.check_hash(SECRET, mangled, mangled_mac) is HashCheck.UNVERIFIABLE
    ascii_message = b'{"XroadVnpt-note":"plain"}'
    assert axis.check_hash("other", ascii_message, axis.hmac_hex(SECRET, ascii_message)) is (
        HashCheck.MISMATCH
    )


def test_parameters_come_from_the_signed_json_only_by_exact_name() -> None:
    """A header contradicting the signed JSON loses, an unsigned one is ignored; docId and
    docid are two parameters."""
    sdk = sdk_client(docId="42", docid="7")
    headers = [*sdk.signed_headers(), (b"XroadVnpt-extra", b"unsigned")]
    headers = [(k, b"99") if k == b"XroadVnpt-docId" else (k, v) for k, v in headers]
    auth = axis.authenticate(
        axis.parse_request("/getEdoc", headers), {"qlvb": CLIENT}, HashPolicy.REFUSE
    )
    assert auth.check is HashCheck.VERIFIED
    assert (auth.param("docId"), auth.param("docid")) == ("42", "7")
    assert auth.param("DOCID") is None
    assert auth.param("extra") is None


@pytest.mark.parametrize(
    ("operation", "missing"),
    [("getEdoc", "docId"), ("updateStatus", "docid"), ("sendEdoc", "hash-file")],
)
def test_required_parameters_must_be_signed(operation: str, missing: str) -> None:
    """An operation whose required parameter is only an unsigned header is refused."""
    sdk = sdk_client(status="done")
    headers = [*sdk.signed_headers(), (f"XroadVnpt-{missing}".encode(), b"1")]
    with pytest.raises(AxisError, match=f"needs the parameter XroadVnpt-{missing}") as info:
        axis.authenticate(
            axis.parse_request(f"/{operation}", headers), {"qlvb": CLIENT}, HashPolicy.REFUSE
        )
    assert info.value.code is axis.ErrorCode.BAD_REQUEST


def test_latin1_parameters_are_decoded_as_sent() -> None:
    """A Latin-1 header value verifies and reads back as the characters the client had."""
    auth = axis.authenticate(
        request_of(sdk_client(filePath="D:/Tài chính")), {"qlvb": CLIENT}, HashPolicy.REFUSE
    )
    assert auth.check is HashCheck.VERIFIED_LATIN1
    assert auth.param("filePath") == "D:/Tài chính"


def test_refusals_name_the_reason() -> None:
    """No sign-header, an unknown client, a wrong secret, an unverifiable HMAC under refuse."""
    bare = axis.parse_request("/getEdoc", [(b"XroadVnpt-systemid", b"qlvb")])
    cases = [
        (bare, "has no XroadVnpt-sign-header"),
        (request_of(AxisClient("/x", "ghost", SECRET)), "unknown client systemid 'ghost'"),
        (request_of(AxisClient("/x", "qlvb", "wrong")), "does not match"),
        (request_of(sdk_client(note="Văn thư")), "cannot be checked"),
    ]
    for request, words in cases:
        with pytest.raises(AxisError, match=words) as info:
            axis.authenticate(request, {"qlvb": CLIENT}, HashPolicy.REFUSE)
        assert info.value.code is axis.ErrorCode.UNAUTHENTICATED
    accepted = axis.authenticate(cases[3][0], {"qlvb": CLIENT}, HashPolicy.ACCEPT)
    assert accepted.check is HashCheck.UNVERIFIABLE


@pytest.mark.parametrize("operation", [*axis.OPERATIONS, "nosuch"])
def test_replies_are_ascii_json_with_every_field_and_no_null(operation: str) -> None:
    """Failures carry the operation's own field empty; None never reaches the JSON."""
    failed = json.loads(axis.failure(operation, AxisError(axis.ErrorCode.REFUSED, "Sai mã")))
    assert failed["status"] == "FAIL"
    assert failed["ErrorCode"] == "4"
    for key, empty in axis.OWN_FIELDS.get(operation, {}).items():
        assert failed[key] == empty
    raw = axis.success(operation, data=[{"name": "Sở Nội vụ", "mail": None}])
    assert raw.isascii()
    assert b"null" not in raw
    assert b"\n" not in raw
    assert json.loads(raw)["data"][0] == {"name": "Sở Nội vụ", "mail": ""}


def test_java_string_hash_matches_java() -> None:
    """The test client orders headers by Java's String.hashCode (known values)."""
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("timestamp") == 55126294


# -- configuration ----------------------------------------------------------------------------

BASE = '[node]\ncode = "000.00.00.H49"\n'


def test_gateway_clients_are_read_from_the_config(tmp_path: Path) -> None:
    """[gateway.clients.<systemid>] tables become clients; a secret file is read and trimmed."""
    (tmp_path / "qlvb.secret").write_text("s3cret\n")
    path = tmp_path / "lienthong.toml"
    path.write_text(
        BASE
        + '[gateway]\nport = 0\nsocket = "gw.sock"\nunverifiable_hash = "accept"\n'
        + '[gateway.clients.qlvb]\nsecret_file = "qlvb.secret"\n'
        + 'send_for = ["000.00.01.H49"]\nreceive_for = ["000.00.01.H49", "000.00.00.H49"]\n'
        + '[gateway.clients."other-app"]\nsecret = "x"\nreceive_for = ["000.00.00.H49"]\n'
    )
    from lienthong.config import load_config

    settings = load_config(path).gateway
    assert settings.socket == tmp_path / "gw.sock"
    clients = load_clients(settings)
    assert clients["qlvb"].secret == "s3cret"
    assert clients["qlvb"].receive_for == {"000.00.01.H49", "000.00.00.H49"}
    assert clients["other-app"].send_for == frozenset()


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (
            '[gateway.clients.a]\nsend_for = ["00.1-2"]\n',
            "gateway.clients.a.send_for",
            "agency code",
        ),
        ("[gateway.clients.a]\nsend_for = 3\n", "gateway.clients.a.send_for", "list of strings"),
        ("[gateway.clients.a]\nsecrets = 1\n", "gateway.clients.a.secrets", "unknown key"),
        ("[gateway]\nclients = 1\n", "gateway.clients", "table of tables"),
        ('[gateway]\nunverifiable_hash = "log"\n', "gateway.unverifiable_hash", "refuse or accept"),
    ],
)
def test_gateway_config_errors_name_the_key(text: str, key: str, words: str) -> None:
    """A wrong client setting is refused naming its dotted key."""
    with pytest.raises(ConfigError, match=words) as info:
        parse_config(BASE + text)
    assert info.value.key == key


def test_a_client_needs_exactly_one_secret() -> None:
    """Neither or both of secret and secret_file: refused naming the client."""
    for body in ('receive_for = ["000.00.00.H49"]\n', 'secret = "a"\nsecret_file = "f"\n'):
        settings = parse_config(BASE + "[gateway.clients.c]\n" + body).gateway
        with pytest.raises(ConfigError, match="exactly one of secret") as info:
            load_clients(settings)
        assert info.value.key == "gateway.clients.c"
