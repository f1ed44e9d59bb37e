"""path_text / path_from_text: one lossless, valid-Unicode text form for any POSIX path (issue 11 §3.2)."""
from __future__ import annotations

import json
import os
import random

import pytest

from der_deploy.pathtext import path_bytes, path_from_text, path_text


def reference_text(raw: bytes) -> str:
    """An independent, byte-level implementation of the documented rule (RFC 3629 well-formed table)."""
    out, i = [], 0
    while i < len(raw):
        b = raw[i]
        n, lo, hi = 0, 0x80, 0xBF
        if b < 0x80:
            n = 1
        elif 0xC2 <= b <= 0xDF:
            n = 2
        elif 0xE0 <= b <= 0xEF:
            n = 3
            lo, hi = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F)}.get(b, (0x80, 0xBF))
        elif 0xF0 <= b <= 0xF4:
            n = 4
            lo, hi = {0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(b, (0x80, 0xBF))
        ok = n > 0 and i + n <= len(raw) and (n == 1 or (lo <= raw[i + 1] <= hi and all(
            0x80 <= c <= 0xBF for c in raw[i + 2:i + n])))
        if ok:
            ch = raw[i:i + n].decode("utf-8")
            out.append("\\\\" if ch == "\\" else ch)
            i += n
        else:
            out.append(f"\\x{b:02x}")
            i += 1
    return "".join(out)


@pytest.mark.parametrize("raw, text", [
    (b"photos/cat.jpg", "photos/cat.jpg"),
    ("caf\u00e9.jpg".encode(), "caf\u00e9.jpg"),  # valid UTF-8 stays as is
    (b"caf\xe9.jpg", "caf\\xe9.jpg"),  # Latin-1 byte
    (b"a\\b.png", "a\\\\b.png"),
    (b"a\\xe9.png", "a\\\\xe9.png"),  # a literal backslash-x is not confused with an escape
    (b"\xf0\x9f\x98\x80.png", "\U0001F600.png"),
    (b"\xf0\x9f\x98.png", "\\xf0\\x9f\\x98.png"),  # truncated 4-byte sequence
    (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # UTF-8-encoded surrogate: not valid UTF-8
    (b"\xc0\xaf", "\\xc0\\xaf"),  # overlong "/"
    (b"\xe9A\xff", "\\xe9A\\xff"),
])
def test_known_vectors(raw, text):
    assert path_text(raw) == text == reference_text(raw)
    assert path_bytes(text) == raw
    assert os.fsencode(path_from_text(text)) == raw
    assert path_text(os.fsdecode(raw)) == text  # the str Python hands around (surrogateescape) gives the same


def test_random_round_trip_and_strict_json():
    rng = random.Random(0)
    alphabet = [bytes([b]) for b in range(1, 256) if b != 0x2F] + ["é".encode(), "\u20ac".encode(), "😀".encode()]
    for _ in range(3000):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        text = path_text(raw)
        assert text == reference_text(raw)
        assert path_bytes(text) == raw
        text.encode("utf-8")  # strict: no lone surrogate can reach a file
        doc = json.dumps({"path": text}, ensure_ascii=False)
        assert json.loads(json.dumps({"path": text}))["path"].encode("utf-8")  # ASCII JSON too: no lone surrogates
        assert json.loads(doc)["path"] == text


@pytest.mark.parametrize("bad", ["a\\", "a\\q", "a\\xE9", "a\\x9", "\udce9"])
def test_text_it_cannot_have_written_is_refused(bad):
    with pytest.raises(ValueError, match="not a path_text string"):
        path_bytes(bad)
