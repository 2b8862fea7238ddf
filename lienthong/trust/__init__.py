"""The trust core: sign and verify edXML packages, check certificates. Pure: no I/O.

Files are read by :mod:`lienthong.keyfiles`; the development PKI lives in
:mod:`lienthong.trust.pki`.
"""

from lienthong.trust.keys import SigningIdentity
from lienthong.trust.sign import AlreadySigned, sign_package
from lienthong.trust.truststore import TrustStore
from lienthong.trust.verify import Verification, VerifyPolicy, verify_package

__all__ = [
    "AlreadySigned",
    "SigningIdentity",
    "TrustStore",
    "Verification",
    "VerifyPolicy",
    "sign_package",
    "verify_package",
]
