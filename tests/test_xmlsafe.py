"""The hardened XML parser refuses hostile input before it costs anything."""

from __future__ import annotations

import pytest

from lienthong.errors import PeerInputError, XmlRefused
from lienthong.xmlsafe import parse_xml

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
]>
<edXML>&lol2;</edXML>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>
<edXML>&xxe;</edXML>"""


def _refusal(data: bytes, **limits: int) -> XmlRefused:
    with pytest.raises(XmlRefused) as info:
        parse_xml(data, **limits)
    return info.value


def test_plain_xml_parses() -> None:
    """Well-formed XML without a DTD comes back as its root element."""
    root = parse_xml(b"<edXML><a>x</a></edXML>")
    assert root.tag == "edXML"
    assert root[0].text == "x"


def test_billion_laughs_is_refused_as_dtd() -> None:
    """An entity bomb is refused for its DOCTYPE, never expanded."""
    assert _refusal(BILLION_LAUGHS).reason == "dtd"


def test_external_entity_is_refused_and_not_read() -> None:
    """An external entity pointing at a local file is refused; the file's text never appears."""
    err = _refusal(EXTERNAL_ENTITY)
    assert err.reason == "dtd"
    assert isinstance(err, PeerInputError)


def test_doctype_in_utf16_is_refused() -> None:
    """A DOCTYPE hidden from the byte scan by UTF-16 is still refused after parsing."""
    text = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE edXML><edXML/>'
    assert _refusal(text.encode("utf-16")).reason == "dtd"


def test_too_deep_is_refused_with_the_limit_named() -> None:
    """Nesting past the depth limit is refused, and the message gives the limit."""
    err = _refusal(b"<a>" * 30 + b"</a>" * 30, max_depth=20)
    assert err.reason == "too-deep"
    assert "20" in str(err)


def test_too_large_is_refused_before_parsing() -> None:
    """Input over the size limit is refused even when it is not XML at all."""
    err = _refusal(b"x" * 101, max_bytes=100)
    assert err.reason == "too-large"
    assert "101" in str(err)


@pytest.mark.parametrize("data", [b"", b"<a>", b"not xml", b"<a></b>"])
def test_malformed_is_refused(data: bytes) -> None:
    """Empty and ill-formed input is refused as malformed."""
    assert _refusal(data).reason == "malformed"
