"""Write packages with large attachments to files in pieces, for tests, benchmarks and demos.

A package of hundreds of megabytes is never built in memory: the template package is split
around the text of its ``ContentTransferEncoded`` element and the new attachment's base64 is
written between the halves, a piece at a time.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
from pathlib import Path

_TEXT = re.compile(rb"(<(?:[\w.-]+:)?ContentTransferEncoded>)([^<]*)(</)")
_PIECE = 57 * 16 * 1024  # raw bytes per piece: a whole number of 76-character base64 lines


def write_large_package(
    template: bytes,
    dst: Path,
    size: int,
    *,
    line_ending: bytes | None = b"\n",
    seed: int = 0,
) -> str:
    """Write ``template`` to ``dst`` with its (first) attachment replaced by ``size`` bytes.

    The bytes are pseudo-random from ``seed``; their base64 is cut into 76-character lines
    ending with ``line_ending`` (``b"\\r\\n"`` as some producers write it), or is one line when
    ``line_ending`` is None. Returns the SHA-256 (hex) of the attachment's bytes.
    """
    match = _TEXT.search(template)
    if match is None:
        raise ValueError("the template has no ContentTransferEncoded element")
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with dst.open("wb") as out:
        out.write(template[: match.end(1)])
        left = size
        while left:
            raw = rng.randbytes(min(_PIECE, left))
            left -= len(raw)
            digest.update(raw)
            if line_ending is None:
                out.write(base64.b64encode(raw))
            else:
                lines = base64.encodebytes(raw)
                out.write(lines if line_ending == b"\n" else lines.replace(b"\n", line_ending))
        out.write(template[match.start(3) :])
    return digest.hexdigest()
