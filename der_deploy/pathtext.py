"""One lossless text form for file paths, in every output format (JSON, JSONL, CSV, table, messages).

POSIX file names are bytes and need not be UTF-8 (a Latin-1 ``caf\\xe9.jpg``). Python hands such names
around as ``str`` with lone surrogates (PEP 383), which strict JSON parsers reject and UTF-8 files cannot
hold. :func:`path_text` writes them as plain, valid text; :func:`path_from_text` gives the exact bytes back.

The rule (the C++ SDK's CLI implements the same one):
1. take the path's bytes (``os.fsencode``);
2. scan them left to right as UTF-8 (RFC 3629: no overlong forms, no surrogates U+D800..U+DFFF, nothing
   above U+10FFFF). A well-formed sequence is written as its character, except that ``\\`` is written
   ``\\\\``; every byte that is not part of a well-formed sequence is written ``\\xNN`` (two lower-case hex
   digits), and the scan resumes at the next byte.
So a UTF-8 name containing no backslash is written unchanged, and the result is always valid Unicode.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_ESCAPE = re.compile(r"\\(\\|x([0-9a-f]{2}))")


def path_text(path: str | bytes | os.PathLike) -> str:
    """The lossless, valid-Unicode text of ``path`` (see the module doc); also used for messages quoting paths."""
    # surrogateescape turns exactly the bytes that are not well-formed UTF-8 into U+DC80..U+DCFF, one per byte.
    text = os.fsencode(path).decode("utf-8", "surrogateescape")
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def path_bytes(text: str) -> bytes:
    """The exact bytes :func:`path_text` was given; ValueError for text it cannot have written."""
    out = bytearray()
    pos = 0
    while True:
        cut = text.find("\\", pos)
        chunk = text[pos:] if cut < 0 else text[pos:cut]
        try:
            out += chunk.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"not a path_text string: lone surrogate in {text!r}") from None
        if cut < 0:
            return bytes(out)
        m = _ESCAPE.match(text, cut)
        if m is None:
            raise ValueError(f"not a path_text string: bad escape at {cut} in {text!r} (use \\\\ or \\xNN)")
        out += b"\\" if m.group(2) is None else bytes([int(m.group(2), 16)])
        pos = m.end()


def path_from_text(text: str) -> Path:
    """Inverse of :func:`path_text`: ``os.fsencode(path_from_text(path_text(p))) == os.fsencode(p)``."""
    return Path(os.fsdecode(path_bytes(text)))
