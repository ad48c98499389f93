"""SEARCH: parse RFC 3501 search keys into a small tree, and test messages against it.

Text is compared as RFC 3501 asks: case-insensitive substring. Headers are decoded first
(RFC 2047 encoded words, via ``email.header``) and bodies are decoded (base64 or
quoted-printable, then their charset, via ``email``), so a learner searching for ``Grüße`` finds
it however the sender encoded it. A message that may have many parts is cut into its parts by
``fetch.parse_message`` (which stops at ``MAX_PARTS`` parts) and each part decoded on its own:
the ``email`` package given a whole message of 200,000 empty parts took 4.6 s of the loop.
"""

from __future__ import annotations

import codecs
import email
import email.header
import email.policy
import email.utils
import re
import time
from dataclasses import dataclass
from typing import Callable

from ..i18n import _
from .fetch import header_values, parse_message, split_header, walk
from .parser import Cursor, ParseError

__all__ = ["parse_search", "SearchContext", "matches", "needs_message", "SUPPORTED_CHARSETS"]

SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")
# Up to this many delimiter lines and message/* parts the email package reads a whole message;
# beyond, the parts come from fetch.parse_message (see SearchContext.entities).
FEW_PARTS = 200
_HINT = ("SEARCH wants keys such as ALL, UNSEEN, FROM alice, SUBJECT \"hello\", SINCE 1-Feb-2024, "
         "or OR key1 key2")

FLAG_KEYS = {"ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
             "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
             "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
             "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
             "UNSEEN": ("\\Seen", False)}
HEADER_KEYS = {"BCC": "bcc", "CC": "cc", "FROM": "from", "SUBJECT": "subject", "TO": "to"}
DATE_KEYS = {"BEFORE": ("internal", "before"), "ON": ("internal", "on"), "SINCE": ("internal", "since"),
             "SENTBEFORE": ("sent", "before"), "SENTON": ("sent", "on"), "SENTSINCE": ("sent", "since")}


def parse_search(cur: Cursor, *, allow_charset: bool = True):
    """Parse ``[CHARSET x] key key ...`` to a tree; keys in a row are ANDed."""
    charset = "UTF-8"  # strictly US-ASCII, but learners type UTF-8 by hand: accept it
    if allow_charset and cur.data[cur.pos:cur.pos + 8].upper() == b"CHARSET ":
        cur.pos += 8
        charset = cur.astring("charset").decode("ascii", "replace").upper()
        try:
            codecs.lookup(charset)
        except LookupError:
            raise ParseError(_("unknown charset {charset}; use CHARSET UTF-8").format(charset=charset),
                             code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")") from None
        if charset == "US-ASCII":
            charset = "UTF-8"
        cur.sp()
    keys = [_key(cur, charset)]
    while cur.maybe_sp():
        keys.append(_key(cur, charset))
    return keys[0] if len(keys) == 1 else ("and", keys)


def _text(cur: Cursor, charset: str) -> str:
    raw = cur.astring("search text")
    try:
        return raw.decode(charset, "replace").casefold()
    except (LookupError, ValueError):  # a codec that is not a text encoding (base64, idna ...)
        raise ParseError(_("{charset} is not a charset for text; use CHARSET UTF-8").format(charset=charset),
                         code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")") from None


def _key(cur: Cursor, charset: str, depth: int = 0):
    if depth > 100:
        raise ParseError(_("search keys nested too deeply"))
    c = cur.peek()
    if c == b"(":
        cur.pos += 1
        keys = [_key(cur, charset, depth + 1)]
        while cur.peek() != b")":
            cur.sp()
            keys.append(_key(cur, charset, depth + 1))
        cur.pos += 1
        return ("and", keys)
    if c.isdigit() or c == b"*":
        return ("seq", cur.seqset())
    if not c:
        raise ParseError(_(_HINT))
    word = cur.atom(what="search key").upper()
    if word == "ALL":
        return ("all",)
    if word in FLAG_KEYS:
        return ("flag",) + FLAG_KEYS[word]
    if word in ("NEW", "OLD", "RECENT"):
        return (word.lower(),)
    if word in HEADER_KEYS:
        cur.sp()
        return ("header", HEADER_KEYS[word], _text(cur, charset))
    if word == "HEADER":
        cur.sp()
        name = cur.astring("header field name").decode("ascii", "replace").lower()
        cur.sp()
        return ("header", name, _text(cur, charset))
    if word in ("BODY", "TEXT"):
        cur.sp()
        return (word.lower(), _text(cur, charset))
    if word in ("KEYWORD", "UNKEYWORD"):
        cur.sp()
        return ("keyword", cur.atom(what="keyword"), word == "KEYWORD")
    if word in ("LARGER", "SMALLER"):
        cur.sp()
        return (word.lower(), cur.number("size in bytes"))
    if word in DATE_KEYS:
        cur.sp()
        return ("date",) + DATE_KEYS[word] + (cur.date(),)
    if word == "UID":
        cur.sp()
        return ("uid", cur.seqset())
    if word == "NOT":
        cur.sp()
        return ("not", _key(cur, charset, depth + 1))
    if word == "OR":
        cur.sp()
        a = _key(cur, charset, depth + 1)
        cur.sp()
        return ("or", a, _key(cur, charset, depth + 1))
    raise ParseError(_("unknown search key {word}: ").format(word=word) + _(_HINT))


def needs_message(node) -> bool:
    """Whether evaluating this tree reads the message file (headers or body)."""
    kind = node[0]
    if kind in ("header", "body", "text") or (kind == "date" and node[1] == "sent"):
        return True
    if kind == "and":
        return any(needs_message(n) for n in node[1])
    if kind == "or":
        return needs_message(node[1]) or needs_message(node[2])
    if kind == "not":
        return needs_message(node[1])
    return False


# ----------------------------------------------------------------------------- evaluation

# An RFC 2047 encoded word, and a run of them with only white space between.
_ENCODED_WORD = r"=\?[^?\s]{1,75}\?[qQbB]\?[^?\s]*\?="
_ENCODED_RUN = re.compile(_ENCODED_WORD + r"(?:\s+" + _ENCODED_WORD + r")*")
# Up to this many characters a header is decoded by the email package at once. Its search for
# encoded words is quadratic in the length when they do not end ("=?utf-8?q?x " 8,000 times, a
# 96 kB Subject, took 40 s): a longer header is decoded one run of well-formed words at a time.
DECODE_AT_ONCE = 1000


def _decode_words(text: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # malformed encoded words: search the text as it is
        return text


def decode_header_value(value: bytes) -> str:
    text = value.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    if len(text) <= DECODE_AT_ONCE:
        return _decode_words(text)
    return _ENCODED_RUN.sub(lambda m: _decode_words(m.group()), text)


def _decode_payload(part) -> str:
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown, not a text encoding, a NUL in its name ...
        return payload.decode("utf-8", "replace")


@dataclass
class SearchContext:
    """One message as the search sees it; message data is read only when a key needs it."""

    seq: int
    uid: int
    flags: frozenset
    size: int
    internaldate: float
    recent: bool
    load: Callable[[], bytes]  # the message bytes (CRLF)
    star_seq: int = 0
    star_uid: int = 0
    _raw: bytes | None = None
    _headers: dict | None = None
    _entities: list | None = None
    _body: str | None = None
    _full: str | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.load()
        return self._raw

    @property
    def headers(self) -> dict[bytes, list[bytes]]:
        if self._headers is None:
            self._headers = header_values(split_header(self.raw)[0])
        return self._headers

    def entities(self) -> list:
        """Each MIME entity in order, as an ``email`` message. A message with few parts is
        read by the ``email`` package at once; one that may have many is cut into parts by
        ``fetch.parse_message`` (bounded) and each part read on its own (a container: its
        header only; a leaf: header and body)."""
        if self._entities is None:
            raw = self.raw
            if raw.count(b"\n--") + raw.lower().count(b"message/") <= FEW_PARTS:
                self._entities = list(_parse(raw).walk())
                return self._entities
            self._entities = []
            for part in walk(parse_message(raw)):
                if part.children is not None or part.message is not None or part.type.lower() == b"multipart":
                    # A container (or a multipart left unsplit at the limits): its header only.
                    self._entities.append(_parse(part.header))
                else:  # (message/delivery-status and the like hold blocks of their own)
                    self._entities.extend(_parse(raw[part.start:part.end]).walk())
        return self._entities

    def body_text(self) -> str:
        if self._body is None:
            self._body = "\n".join(_text_of(e) for e in self.entities() if _has_text(e)).casefold()
        return self._body

    def full_text(self) -> str:
        """TEXT searches everything: the header, the MIME headers of the parts and their text."""
        if self._full is None:
            texts = []
            for entity in self.entities():
                texts += _fields(entity)
                if _has_text(entity):
                    texts.append(_text_of(entity))
            self._full = "\n".join(texts).casefold()
        return self._full

    def header_text(self, name: str) -> list[str]:
        return [decode_header_value(v).casefold() for v in self.headers.get(name.encode("ascii", "replace"), [])]


def _parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.compat32)


def _has_text(part) -> bool:
    return not part.is_multipart() and part.get_content_maintype() in ("text", "message")


def _text_of(part) -> str:
    text = getattr(part, "_maillab_text", None)  # decoded once for BODY and TEXT alike
    if text is None:
        text = part._maillab_text = _decode_payload(part)
    return text


def _fields(part) -> list[str]:
    out = []
    for k, v in part.items():
        if isinstance(v, str):
            v = decode_header_value(v.encode("utf-8", "surrogateescape"))
        out.append(f"{k}: {v}")  # (a Header object's str() is its decoded text)
    return out


def _day(ts: float) -> tuple[int, int, int]:
    lt = time.localtime(ts)
    return lt.tm_year, lt.tm_mon, lt.tm_mday


def _sent_day(ctx: SearchContext) -> tuple[int, int, int]:
    """The day of the Date: header as written (its own zone). Without a usable Date: header,
    1 January 1970, as Dovecot counts it."""
    dates = ctx.headers.get(b"date")
    if dates:
        parsed = email.utils.parsedate_tz(dates[0].decode("ascii", "replace"))
        if parsed:
            return parsed[0], parsed[1], parsed[2]
    return 1970, 1, 1


def matches(node, ctx: SearchContext) -> bool:
    kind = node[0]
    if kind == "and":
        return all(matches(n, ctx) for n in node[1])
    if kind == "all":
        return True
    if kind == "flag":
        return (node[1] in ctx.flags) == node[2]
    if kind == "keyword":
        return (node[1] in ctx.flags) == node[2]
    if kind == "recent":
        return ctx.recent
    if kind == "new":
        return ctx.recent and "\\Seen" not in ctx.flags
    if kind == "old":
        return not ctx.recent
    if kind == "larger":
        return ctx.size > node[1]
    if kind == "smaller":
        return ctx.size < node[1]
    if kind == "seq":
        return node[1].contains(ctx.seq, ctx.star_seq)
    if kind == "uid":
        return node[1].contains(ctx.uid, ctx.star_uid)
    if kind == "not":
        return not matches(node[1], ctx)
    if kind == "or":
        return matches(node[1], ctx) or matches(node[2], ctx)
    if kind == "header":
        values = ctx.header_text(node[1])
        return any(node[2] in v for v in values)
    if kind == "body":
        return node[1] in ctx.body_text()
    if kind == "text":
        return node[1] in ctx.full_text()
    if kind == "date":
        _k, which, op, day = node
        got = _day(ctx.internaldate) if which == "internal" else _sent_day(ctx)
        if op == "before":
            return got < day
        if op == "on":
            return got == day
        return got >= day
    raise ValueError(kind)
