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
import logging
import re
import time
from typing import Callable

from ..i18n import _
from ..index import SEARCH_HEADERS
from ..store import to_crlf
from .fetch import MAX_PARTS, header_values, parse_message, split_header, walk
from .parser import Cursor, ParseError

log = logging.getLogger(__name__)

__all__ = ["parse_search", "SearchContext", "matches", "search_folder", "transparent",
           "SUPPORTED_CHARSETS"]

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
        text = _text(cur, charset)
        return (word.lower(), text, _raw_needle(text))
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


def _raw_needle(text: str) -> bytes | None:
    """The bytes to look for in a message's raw bytes first (see :func:`transparent`), or None
    when the raw bytes cannot say no: a text with non-ASCII letters (case folding maps some to
    ASCII ones), line ends, a colon or a leading space (the searched text writes each field as
    "Name: value", where the raw bytes may have "Name:value" or "Name:<tab>value")."""
    if not text.isascii() or text.startswith(" ") or any(c in text for c in "\r\n:"):
        return None
    return text.encode("ascii")


def cached_fields(node) -> set[str]:
    """The fields of the folder's index (``maillab.index.FIELDS``) evaluating this tree reads."""
    kind = node[0]
    if kind == "header" and node[1] in SEARCH_HEADERS:
        return {"h_" + node[1]}
    if kind == "date" and node[1] == "sent":
        return {"h_date"}
    if kind in ("body", "text"):
        return {"plain"}
    if kind == "and":
        return set().union(*(cached_fields(n) for n in node[1]))
    if kind == "or":
        return cached_fields(node[1]) | cached_fields(node[2])
    if kind == "not":
        return cached_fields(node[1])
    return set()


# ----------------------------------------------------------------------------- evaluation

# An RFC 2047 encoded word, and a run of them with only white space between.
_ENCODED_WORD = r"=\?[^?\s]{1,75}\?[qQbB]\?[^?\s]*\?="
_ENCODED_RUN = re.compile(_ENCODED_WORD + r"(?:\s+" + _ENCODED_WORD + r")*")


def _decode_words(text: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # malformed encoded words: search the text as it is
        return text


def decode_header_value(value: bytes) -> str:
    """A field's value as SEARCH compares it: each run of encoded words decoded (the white space
    between them dropped), the text around them as written, as Dovecot does. (The email package
    given the whole value decodes nothing when it also holds raw UTF-8, inserts a space between
    an encoded word and the text that touches it, and its search for encoded words is quadratic
    in the length when they do not end: a 96 kB Subject of "=?utf-8?q?x " took 40 s.)"""
    text = value.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    return _ENCODED_RUN.sub(lambda m: _decode_words(m.group()), text)


def _decode_payload(part) -> str:
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown, not a text encoding, a NUL in its name ...
        return payload.decode("utf-8", "replace")


class SearchContext:
    """One message as the search sees it; message data is read only when a key needs it.

    ``cached`` holds the fields of the folder's index the search asked for (name -> value),
    when the search runs over a folder (:func:`search_folder`).
    """

    __slots__ = ("seq", "uid", "flags", "size", "internaldate", "recent", "load", "star_seq",
                 "star_uid", "cached", "load_stored", "_stored", "_raw", "_headers", "_entities",
                 "_body", "_full")

    def __init__(self, seq: int, uid: int, flags: frozenset, size: int, internaldate: float,
                 recent: bool, load: Callable[[], bytes], star_seq: int = 0, star_uid: int = 0,
                 cached: dict | None = None):
        self.seq, self.uid, self.flags, self.size = seq, uid, flags, size
        self.internaldate = internaldate  # a number, or a callable that gives it
        self.recent, self.load, self.star_seq, self.star_uid = recent, load, star_seq, star_uid
        self.cached = cached or {}
        self.load_stored: Callable[[], bytes] | None = None  # the bytes as stored (any line ends)
        self._raw = self._stored = self._headers = self._entities = self._body = self._full = None

    def next_message(self, seq: int, uid: int, flags: frozenset, size: int, internaldate,
                     recent: bool, cached: dict | None) -> None:
        """Make this context another message's (a search over a folder makes one context)."""
        self.seq, self.uid, self.flags, self.size = seq, uid, flags, size
        self.internaldate, self.recent, self.cached = internaldate, recent, cached or {}
        self._raw = self._stored = self._headers = self._entities = self._body = self._full = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.load() if self._stored is None else to_crlf(self._stored)
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
                    # A container (or a multipart left unsplit at the limits): its header only,
                    # and no text (the email package gives a container a list of parts).
                    container = _parse(part.header)
                    container.set_payload([])
                    self._entities.append(container)
                else:  # (message/delivery-status and the like hold blocks of their own)
                    self._entities.extend(_leaf_entities(part))
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
        key = "h_" + name
        if key in self.cached:
            value = self.cached[key]
            return [] if value is None else value.split("\x00")
        return [decode_header_value(v).casefold() for v in self.headers.get(name.encode("ascii", "replace"), [])]

    def date(self) -> float:
        if callable(self.internaldate):
            self.internaldate = self.internaldate()
        return self.internaldate

    def without(self, needle: bytes | None) -> bool:
        """True when the message's raw bytes show that its searched text cannot hold
        ``needle`` (lower-case ASCII): the message is :func:`transparent` and they lack it."""
        if needle is None or not self.cached.get("plain"):
            return False
        if self._raw is None and self.load_stored is not None:
            # (line ends do not matter to a needle without one: no CRLF copy for this look)
            self._stored = self.load_stored()
            return needle not in self._stored.lower()
        return needle not in self.raw.lower()

    def surely_has(self, needle: bytes | None) -> bool:
        """True when ``needle`` (lower-case ASCII) lies in one of the message's byte ranges that
        the folder's index says are its searched texts exactly (see :func:`searched_ranges`)."""
        ranges = self.cached.get("plain")
        if needle is None or not isinstance(ranges, str) or not ranges.startswith("r"):
            return False
        lowered = self.raw.lower()
        for bounds in ranges[1:].split(","):
            start, _, end = bounds.partition("-")
            if end and lowered.find(needle, int(start), int(end)) >= 0:
                return True
        return False

    def learned_ranges(self) -> str | None:
        """After the message was decoded: the index's new ``plain`` value for a transparent
        message whose searched texts were not compared with its bytes yet (else None)."""
        if self.cached.get("plain") != 1 or self._entities is None:
            return None
        return searched_ranges(self.raw, [_text_of(e) for e in self._entities if _has_text(e)])


def _parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.compat32)


def _leaf_entities(part) -> list:
    """The entities of a part ``fetch.parse_message`` did not split, as ``email`` messages.

    A part left whole at MAX_DEPTH or MAX_PARTS may still nest: the ``email`` package would
    follow a multipart or message/* inside it one Python frame per level, to a RecursionError
    at about a thousand. Such a part is one entity here, its body kept as written."""
    entity = _parse(part.header)
    if entity.get_content_maintype() == "multipart" or (
            entity.get_content_maintype() == "message" and entity.get_content_subtype() != "delivery-status"):
        entity.set_payload(part.body.decode("ascii", "surrogateescape"))  # as the parser would
        return [entity]
    return list(_parse(part.raw[part.start:part.end]).walk())


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
    if "h_date" in ctx.cached:
        date = ctx.cached["h_date"]
    else:
        dates = ctx.headers.get(b"date")
        date = dates[0].decode("ascii", "replace") if dates else None
    if date:
        parsed = email.utils.parsedate_tz(date)
        if parsed:
            return parsed[0], parsed[1], parsed[2]
    return 1970, 1, 1


def matches(node, ctx: SearchContext) -> bool:
    kind = node[0]
    if kind == "header":
        key = "h_" + node[1]
        if key in ctx.cached and "\x00" not in node[2]:  # the index's values, NUL between them
            value = ctx.cached[key]
            return value is not None and node[2] in value
        values = ctx.header_text(node[1])
        return any(node[2] in v for v in values)
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
    if kind == "body":
        return not ctx.without(node[2]) and (ctx.surely_has(node[2]) or node[1] in ctx.body_text())
    if kind == "text":
        return not ctx.without(node[2]) and (ctx.surely_has(node[2]) or node[1] in ctx.full_text())
    if kind == "date":
        _k, which, op, day = node
        got = _day(ctx.date()) if which == "internal" else _sent_day(ctx)
        if op == "before":
            return got < day
        if op == "on":
            return got == day
        return got >= day
    raise ValueError(kind)


# ----------------------------------------------------------------------------- a whole folder

# A search gives the server's other sessions their turn about this often (seconds).
SLICE = 0.0005


def search_folder(tree, folder, uids: list[int], recent: set[int]):
    """Test the messages ``uids`` (a session's list, in order) of a store folder against ``tree``.

    A generator: it yields ``b""`` now and then (every :data:`SLICE` seconds of work), so that a
    server can answer its other sessions meanwhile, and returns the ``(seq, uid)`` pairs that
    match. What the folder's index knows (header fields, whether raw bytes may answer first) is
    read in batches from it rather than from the messages.
    """
    fields = tuple(sorted(cached_fields(tree)))
    found = []
    learned = []  # (the index's new "plain" value, uid, base): see searched_ranges
    clock = time.perf_counter
    since = clock()
    batch = 256
    current = [None]  # the message being tested (its MessageInfo)
    ctx = SearchContext(0, 0, frozenset(), 0, 0.0, False, lambda: to_crlf(_stored(folder, current[0])),
                        len(uids), uids[-1] if uids else 0)
    ctx.load_stored = lambda: _stored(folder, current[0])
    for start in range(0, len(uids), batch):
        chunk = uids[start:start + batch]
        known = folder.lookup(chunk)
        cached = _described(folder, [u for u, k in zip(chunk, known) if k], fields) if fields else {}
        for seq, uid, got in zip(range(start + 1, start + batch + 1), chunk, known):
            if got is None:
                continue  # expunged by someone else meanwhile
            info, flags = got
            current[0] = info
            values = cached.get(uid)
            ctx.next_message(seq, uid, flags, info.size, lambda i=info: i.internaldate, uid in recent,
                             dict(zip(fields, values)) if values is not None else None)
            try:
                if matches(tree, ctx):
                    found.append((seq, uid))
                ranges = ctx.learned_ranges() if values is not None else None
            except KeyError:
                continue  # its file went away meanwhile
            if ranges is not None:
                learned.append((ranges, uid, info.base))
            if clock() - since > SLICE:
                yield b""
                since = clock()
    if learned:
        _note(folder, learned)
    return found


def _note(folder, learned: list) -> None:
    try:
        folder.note_plain(learned)
    except Exception:  # (a cache: the next search learns it again)
        log.exception("SEARCH: the folder index could not record what a search learned")


def _stored(folder, info) -> bytes:
    """A message's bytes as stored, straight from its file (unbuffered: read whole at once);
    from the folder when the file moved (its flags changed) or went (KeyError)."""
    try:
        with open(info.file, "rb", buffering=0) as f:
            return f.readall()
    except OSError:
        return folder.read(info.uid, crlf=False)


def _described(folder, uids: list[int], fields: tuple[str, ...]) -> dict:
    """The index's fields of these messages; none when describing one of them fails (a bug
    found on some hostile message must not stop a search that can do without the index)."""
    try:
        return folder.described(uids, fields)
    except Exception:
        log.exception("SEARCH: the folder index could not describe a message")
        return {}


# Charsets in which ASCII bytes stand for the same ASCII text.
_ASCII_CHARSETS = {b"us-ascii", b"ascii", b"utf-8", b"utf8", b"latin1", b"latin-1"} | {
    b"iso-8859-%d" % i for i in range(1, 17)} | {b"windows-125%d" % i for i in range(9)}
_IDENTITY_ENCODINGS = {b"7bit", b"8bit", b"binary"}
_ENCODING_FIELD = re.compile(rb"(?im)^content-transfer-encoding[ \t]*:\s*([^\s;]*)")
# (the email package strips any white space around a parameter's "=", a folded line's too)
_CHARSET_PARAM = re.compile(rb'(?i)charset\s*=\s*"?([^\s;"]*)')
# An RFC 2231 charset parameter (charset*=, charset*0=): the email package decodes with it.
_CHARSET_2231 = re.compile(rb"(?i)charset\*")
# A CR or LF not in a CRLF: the email package ends a line there too, the checks here do not.
_LONE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# A header line that is neither a continuation nor a field ("Name:..."): the email package ends
# the header there, so what follows is body to it.
_NOT_A_FIELD_LINE = re.compile(rb"^(?![ \t])(?![!-9;-~]+:)", re.M)


def transparent(raw: bytes, root) -> bool:
    """Whether every text TEXT and BODY search in (:meth:`SearchContext.full_text`) is found as
    it is in the message's raw bytes, apart from the line ends and the space the searched text
    puts after each field's colon (:func:`_raw_needle` leaves a text that starts with a space
    to decoding).

    Then a search for an ASCII word without a colon or line end that is not in the raw bytes
    (compared in lower case) is not in the message either, and the search needs no decoding.
    That holds when the message is ASCII with CRLF line ends, has no RFC 2047 encoded words, and
    every part whose text is searched (text/*, message/*) has no transfer encoding (7bit, 8bit,
    binary) and a charset in which ASCII bytes are ASCII text (not given as an RFC 2231
    parameter). Checked on the raw bytes, so that a part the email package sees differently from
    ``fetch.parse_message`` (past its limits, inside a message/global, with a boundary it reads
    otherwise) cannot slip by: every Content-Transfer-Encoding field and charset parameter
    anywhere in the message must be one of those, unless it lies in the header of a part whose
    body is not searched (an attachment such as application/pdf, which may be base64) and which
    the email package ends where ``fetch.parse_message`` does (every line a field or a
    continuation).
    """
    if not raw.isascii() or b"=?" in raw or _CHARSET_2231.search(raw) or _LONE_LINE_END.search(raw):
        return False
    parts = list(walk(root))
    if len(parts) >= min(FEW_PARTS, MAX_PARTS):
        return False  # (the search may cut such a message differently)
    for p in parts:  # headers the email package ends where fetch.parse_message does
        header = raw[p.start:p.body_start].rstrip(b"\r\n")
        if header and _NOT_A_FIELD_LINE.search(header):
            return False
    skipped = [(p.start, p.body_start) for p in parts
               if p.children is None and p.message is None and not _searched_type(p)]

    def allowed(pos: int, value: bytes, ok: set) -> bool:
        return value.lower() in ok or any(a <= pos < b for a, b in skipped)
    return (all(allowed(m.start(), m.group(1), _IDENTITY_ENCODINGS) for m in _ENCODING_FIELD.finditer(raw))
            and all(allowed(m.start(), m.group(1), _ASCII_CHARSETS) for m in _CHARSET_PARAM.finditer(raw)))


def searched_ranges(raw: bytes, texts: list[str]) -> str:
    """The index's ``plain`` value of a :func:`transparent` message whose searched texts (each
    entity's that TEXT and BODY search, in order, as the ``email`` package decoded them) are
    ``texts``: "r" and the byte ranges of ``raw`` (CRLF line ends) that are exactly those texts
    ("r243-974,1028-1722"), when ``fetch.parse_message``'s leaf bodies are; 2 otherwise.

    A search word without line ends found in one of those ranges is in the searched text, so
    such a message needs no decoding to match either (:meth:`SearchContext.surely_has`)."""
    ranges = [(p.body_start, p.end) for p in walk(parse_message(raw))
              if p.children is None and p.message is None and _searched_type(p)]
    if len(ranges) != len(texts) or any(raw[a:b].decode("ascii", "replace") != text
                                        for (a, b), text in zip(ranges, texts)):
        return 2
    return "r" + ",".join(f"{a}-{b}" for a, b in ranges)


def _searched_type(part) -> bool:
    """Whether the email package takes this leaf part for text/* or message/* (its body is
    searched). Its rule: the first Content-Type's value up to a ";" must hold exactly one "/";
    otherwise the part is text/plain (or message/rfc822 in a digest)."""
    if part.type.lower() in (b"text", b"message"):
        return True
    value = part.first(b"content-type")  # (there is one: the part's type is not the default)
    kind = value.split(b";", 1)[0].strip().lower()
    return kind.count(b"/") != 1 or kind.split(b"/")[0] in (b"text", b"message")
