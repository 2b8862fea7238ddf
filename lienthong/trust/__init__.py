"""The trust core: sign and verify edXML packages, check certificates. No network, no asyncio.

Packages are given as bytes, or for large ones as files read in pieces
(:mod:`lienthong.trust.stream`: :func:`sign_file`, :func:`verify_file`). Key and trust-store
files are read by :mod:`lienthong.keyfiles`; the development PKI lives in
:mod:`lienthong.trust.pki`.
"""

from lienthong.trust.keys import SigningIdentity
from lienthong.trust.sign import AlreadySigned, sign_package
from lienthong.trust.stream import sign_file, verify_file
from lienthong.trust.truststore import TrustStore
from lienthong.trust.verify import Verification, VerifyPolicy, verify_package

__all__ = [
    "AlreadySigned",
    "SigningIdentity",
    "TrustStore",
    "Verification",
    "VerifyPolicy",
    "sign_file",
    "sign_package",
    "verify_file",
    "verify_package",
]
