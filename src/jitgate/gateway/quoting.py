"""Never pass the agent an upstream answer that quotes jitgate's own signing material.

AWS's signature errors quote the request they refused: S3's SignatureDoesNotMatch names the
access key id, the signature it was given and the canonical request (session token included,
also as hex bytes); the JSON services quote the canonical string. Relayed, such an answer is a
request signed by jitgate that the agent could replay to AWS directly, unrecorded, after its
grant ends. So every error answer (status 400 or more) is read whole, up to CHECK_LIMIT, and
withheld when it quotes any of it, or when it cannot be checked: too large, or in an encoding
jitgate cannot read.

What is looked for: the access key id and the signature as they are, and every run of 16 or
more letters and digits of the session token, so that an escaped '/', '+' or '=' (JSON's
``\\/``, XML's ``&#x2F;``) does not hide it; in the body (decompressed when gzip or deflate)
and in the header values; the longest such run also as hex, for S3's ``CanonicalRequestBytes``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

CHECK_LIMIT = 256 * 1024
_TOKEN_RUN = re.compile(r"[A-Za-z0-9]{16,}")
_XML_CODE = re.compile(rb"<Code>([A-Za-z0-9.:_-]{1,128})</Code>")
_JSON_TYPE = re.compile(rb'"__type"\s*:\s*"(?:[^"#]*#)?([A-Za-z0-9.:_-]{1,128})"')


def needles(signed_with: tuple[str, ...]) -> list[bytes]:
    """What an answer must not contain, from (access key id, session token, signature)."""
    key_id, token, signature = signed_with
    runs = _TOKEN_RUN.findall(token)
    plain = [item.encode() for item in (key_id, signature, token, *runs) if item]
    if runs:  # S3 also quotes the canonical request (token included) as hex bytes
        longest = max(runs, key=len).encode()
        plain += [longest.hex().encode(), longest.hex(" ").encode()]
    return plain


def readable(body: bytes, encoding: str | None) -> bytes | None:
    """The body as text can be searched, or None when it cannot be read within CHECK_LIMIT."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip", "deflate"):
        return None
    wbits = 47 if coding != "deflate" else zlib.MAX_WBITS  # 47: gzip or zlib header, detected
    try:
        decoder = zlib.decompressobj(wbits)
        text = decoder.decompress(body, CHECK_LIMIT + 1)
    except zlib.error:
        if coding != "deflate":
            return None
        try:  # "deflate" is often sent raw, without zlib's header
            decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            text = decoder.decompress(body, CHECK_LIMIT + 1)
        except zlib.error:
            return None
    if len(text) > CHECK_LIMIT or decoder.unconsumed_tail:
        return None
    return text


def why_withheld(
    body: bytes,
    complete: bool,
    encoding: str | None,
    header_values: Iterable[bytes],
    signed_with: tuple[str, ...],
) -> str | None:
    """Why an error answer may not reach the agent, or None when it may."""
    if not signed_with:
        return None  # nothing was signed: the call never left
    if not complete:
        return f"its answer is larger than the {CHECK_LIMIT // 1024} KiB jitgate checks"
    text = readable(body, encoding)
    if text is None:
        return f"its answer is encoded ({encoding}) in a way jitgate cannot check"
    searched = {body, text, b"\n".join(header_values)}
    if any(needle in part for needle in needles(signed_with) for part in searched):
        return "its answer quoted jitgate's own signing material"
    return None


def error_code(body: bytes, errortype: str | None) -> str | None:
    """The AWS error code of an error answer: XML's <Code>, JSON's __type or the header."""
    found = _XML_CODE.search(body) or _JSON_TYPE.search(body)
    if found:
        return found.group(1).decode()
    return errortype.split(":", 1)[0][:128] if errortype else None
