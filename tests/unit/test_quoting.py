"""Reading an upstream error answer to check it quotes nothing jitgate signed with."""

from __future__ import annotations

import gzip
import zlib

from jitgate.gateway.quoting import CHECK_LIMIT, needles, readable, why_withheld

SIGNED = (
    "ASIAJITGATEOWNKEY0001",
    "IQoJb3JpZ2luX2VjEJr/abcdefghijklmnopqrstuvwxyz0123==",
    "9f" * 32,
)


def test_bodies_are_read_as_sent_or_decompressed_within_the_limit() -> None:
    text = b"<Error><Code>AccessDenied</Code></Error>"
    assert readable(text, None) == text
    assert readable(text, "identity") == text
    assert readable(gzip.compress(text), "gzip") == text
    assert readable(zlib.compress(text), "deflate") == text
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert readable(raw.compress(text) + raw.flush(), "deflate") == text  # headerless deflate
    assert readable(b"\x00\x01", "br") is None  # an encoding jitgate cannot read
    assert readable(b"not gzip at all", "gzip") is None
    bomb = gzip.compress(b"\x00" * (CHECK_LIMIT + 10))
    assert readable(bomb, "gzip") is None  # never inflated past the limit


def test_the_token_is_found_through_escapes_and_as_hex() -> None:
    token = SIGNED[1]
    for quoted in (
        token.replace("/", "\\/"),  # JSON
        token.replace("/", "&#x2F;").replace("=", "&#61;"),  # XML
        b"abcdefghijklmnopqrstuvwxyz0123".hex(" "),  # S3's CanonicalRequestBytes
    ):
        assert why_withheld(quoted.encode(), True, None, [], SIGNED) is not None, quoted
    assert why_withheld(b"<Error><Code>NoSuchKey</Code></Error>", True, None, [], SIGNED) is None
    assert why_withheld(b"", True, None, [SIGNED[0].encode()], SIGNED) is not None  # a header
    assert why_withheld(b"x" * 10, False, None, [], SIGNED) is not None  # not read whole
    assert why_withheld(b"x", True, None, [], ()) is None  # nothing was signed
    assert SIGNED[0].encode() in needles(SIGNED) and SIGNED[2].encode() in needles(SIGNED)
