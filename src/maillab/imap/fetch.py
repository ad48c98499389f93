"""FETCH: message structure (BODYSTRUCTURE, ENVELOPE), sections (BODY[1.2.HEADER]<0.100>), items.

IMAP hands out exact byte ranges of a message: ``BODY[2]`` is precisely the bytes between two
MIME boundary lines. The stdlib ``email`` package rebuilds messages rather than keeping byte
offsets, so the *cutting* into parts happens here, on the raw bytes, following RFC 2045/2046
(header ends at the first empty line, a boundary line is ``--boundary`` at a line start and the
CRLF before it belongs to it). Everything that interprets text (RFC 2047 encoded words, dates,
transfer encodings, charsets) comes from the ``email`` package (see ``search.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..i18n import _
from .parser import Cursor, ParseError, nstring, quote

__all__ = ["Part", "parse_message", "FetchItem", "parse_fetch_items", "envelope", "bodystructure",
           "section_bytes", "header_fields", "distinct_items", "answer_size", "walk", "MAX_DEPTH",
           "MAX_PARTS", "INDEX_FIELDS", "from_index"]

MAX_DEPTH = 50  # nesting of multiparts and message/rfc822 parts we follow


# ----------------------------------------------------------------------------- headers

_HEADER_LINE = re.compile(rb"([^\x00-\x20\x7f:]+)[ \t]*:")


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header including the empty line that ends it, body). Without an empty line: all header."""
    end = header_end(raw, 0, len(raw))
    return raw[:end], raw[end:]


def header_end(raw: bytes, start: int, end: int) -> int:
    """Where the body of the entity ``raw[start:end]`` begins (just after its empty line)."""
    if raw.startswith(b"\r\n", start, end):
        return start + 2
    i = raw.find(b"\r\n\r\n", start, end)
    return end if i < 0 else i + 4


def header_lines(header: bytes) -> list[tuple[bytes, bytes]]:
    """Split a header into (lower-case name, the field's raw bytes with its folded lines)."""
    fields: list[tuple[bytes, list[bytes]]] = []  # a field's lines are joined once, at the end:
    # adding each folded line to the bytes so far made 80,000 folded lines take 3 s
    for line in header.split(b"\r\n")[:-1] if header.endswith(b"\r\n") else header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
            continue
        m = _HEADER_LINE.match(line)
        fields.append((m.group(1).lower() if m else b"", [line]))
    return [(name, b"\r\n".join(lines) + b"\r\n") for name, lines in fields]


def header_values(header: bytes) -> dict[bytes, list[bytes]]:
    """name (lower case) -> unfolded values (CRLFs removed, surrounding whitespace stripped)."""
    values: dict[bytes, list[bytes]] = {}
    for name, raw in header_lines(header):
        if not name:
            continue
        value = raw.split(b":", 1)[1] if b":" in raw else b""
        values.setdefault(name, []).append(value.replace(b"\r\n", b"").strip(b" \t"))
    return values


def header_fields(header: bytes, names: list[str], exclude: bool) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT: the chosen fields in their order, then an empty line."""
    wanted = {n.lower().encode() for n in names}
    out = [raw for name, raw in header_lines(header) if name and ((name in wanted) != exclude)]
    return b"".join(out) + b"\r\n"


# ----------------------------------------------------------------------------- content type

# Bytes of one address list or MIME parameter field that are interpreted; the rest is left out
# (cut after the last whole address). A field is read byte by byte here: 16 KiB is 400 addresses
# and about 20 ms, while a 10 MB field (folded lines are allowed) once took seconds per FETCH.
MAX_STRUCTURED = 16 * 1024


def _bounded(value: bytes) -> bytes:
    if len(value) <= MAX_STRUCTURED:
        return value
    cut = value.rfind(b",", 0, MAX_STRUCTURED)
    return value[:cut if cut > 0 else MAX_STRUCTURED]


def _tokens(value: bytes):
    """Tokens of a structured MIME header value: atoms, quoted strings and specials; no comments.

    Every branch moves ``i`` forward by at least one byte, so any input ends (a stray ``)``
    outside a comment once made this loop spin forever: issue 10).
    """
    i, n = 0, len(value)
    while i < n:
        c = value[i:i + 1]
        if c in b" \t\r\n":
            i += 1
        elif c == b"(":
            depth = 0
            while i < n:
                ch = value[i:i + 1]
                if ch == b"\\":
                    i += 2
                    continue
                if ch == b"(":
                    depth += 1
                elif ch == b")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        elif c == b")":  # a comment's end without its start: not part of any token
            i += 1
        elif c == b'"':
            i += 1
            out = bytearray()
            while i < n and value[i:i + 1] != b'"':
                if value[i:i + 1] == b"\\":
                    i += 1
                out += value[i:i + 1]
                i += 1
            if i >= n:  # no closing quote: no quoted string, so the parameter it ends is
                return  # dropped (as Dovecot 2.3 does); the earlier ones are kept
            i += 1
            yield ("q", bytes(out))
        elif c in b"/;=":
            i += 1
            yield ("s", c)
        else:
            j = i + 1
            while j < n and value[j:j + 1] not in b' \t\r\n()";=/':
                j += 1
            yield ("a", value[i:j])
            i = j


def parse_content_type(value: bytes | None):
    """(type, subtype, [(name, value)...]) with names and values as written; None if unusable."""
    if value is None:
        return None
    toks = list(_tokens(_bounded(value)))
    if len(toks) < 3 or toks[0][0] != "a" or toks[1] != ("s", b"/") or toks[2][0] != "a":
        return None
    return toks[0][1], toks[2][1], _params(toks[3:])


def _params(toks) -> list[tuple[bytes, bytes]]:
    params = []
    i = 0
    while i < len(toks):
        if (toks[i] == ("s", b";") and i + 3 < len(toks) and toks[i + 1][0] == "a"
                and toks[i + 2] == ("s", b"=") and toks[i + 3][0] in ("a", "q")):
            params.append((toks[i + 1][1], toks[i + 3][1]))
            i += 4
        else:
            i += 1
    return params


def parse_disposition(value: bytes | None):
    if value is None:
        return None
    toks = list(_tokens(_bounded(value)))
    if not toks or toks[0][0] != "a":
        return None
    return toks[0][1], _params(toks[1:])


# ----------------------------------------------------------------------------- MIME tree

@dataclass
class Part:
    """One MIME entity: where its header and body lie in the message, and what lies inside.

    Parts keep offsets into the one ``raw`` message rather than copies of their bytes, so a
    deeply nested message costs its size once, not once per level.
    """

    raw: bytes  # the whole message, shared by all its parts
    start: int  # the entity's first header byte
    body_start: int  # just after the empty line that ends its header
    end: int
    type: bytes  # as written, e.g. b"text"
    subtype: bytes
    params: list[tuple[bytes, bytes]]
    children: list["Part"] | None = None  # multipart
    message: "Part | None" = None  # message/rfc822: the message inside
    _values: dict | None = field(default=None, repr=False)

    @property
    def header(self) -> bytes:
        return self.raw[self.start:self.body_start]

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start:self.end]

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    def body_lines(self) -> int:
        """Lines of the body, as Dovecot counts them: an unterminated last line does not count."""
        return self.raw.count(b"\n", self.body_start, self.end)

    @property
    def values(self) -> dict[bytes, list[bytes]]:
        if self._values is None:
            self._values = header_values(self.header)
        return self._values

    def first(self, name: bytes) -> bytes | None:
        v = self.values.get(name)
        return v[0] if v else None

    def param(self, name: bytes) -> bytes | None:
        for k, v in self.params:
            if k.lower() == name:
                return v
        return None


# MIME parts of one message we split out; the rest stays unsplit in the last one. Dovecot 2.3
# stops at 10,000; here a part costs up to ~100 us in BODYSTRUCTURE and in SEARCH, so 1,000
# keeps the worst message to about a tenth of a second of the server's loop.
MAX_PARTS = 1_000


def parse_message(raw: bytes, default=(b"text", b"plain")) -> Part:
    """Parse a message (or a body part) given with CRLF line ends into its tree of parts.

    Hostile structure is bounded: at most :data:`MAX_DEPTH` levels and :data:`MAX_PARTS`
    parts are split out; deeper or further content stays inside the part that holds it.
    """
    return _parse(raw, 0, len(raw), default, 0, [MAX_PARTS])


def _parse(raw: bytes, start: int, end: int, default, depth: int, parts_left: list[int]) -> Part:
    parts_left[0] -= 1
    part = Part(raw, start, header_end(raw, start, end), end, default[0], default[1], [])
    ct = parse_content_type(part.first(b"content-type"))
    if ct is not None:
        part.type, part.subtype, part.params = ct
    if part.type.lower() == b"text" and part.param(b"charset") is None:
        part.params = part.params + [(b"charset", b"us-ascii")]  # RFC 2045 5.2 (and Dovecot)
    kind = part.type.lower()
    if depth >= MAX_DEPTH or parts_left[0] <= 0:
        return part
    if kind == b"multipart":
        boundary = part.param(b"boundary")
        child_default = (b"message", b"rfc822") if part.subtype.lower() == b"digest" else (b"text", b"plain")
        spans = split_multipart(raw, part.body_start, end, boundary, parts_left[0]) if boundary else []
        part.children = [_parse(raw, s, e, child_default, depth + 1, parts_left) for s, e in spans]
    elif kind == b"message" and part.subtype.lower() == b"rfc822":
        part.message = _parse(raw, part.body_start, end, (b"text", b"plain"), depth + 1, parts_left)
    return part


def walk(part: Part):
    """The part and all parts inside it, in order (as ``email.message.Message.walk``)."""
    yield part
    for inner in part.children if part.children is not None else [part.message] if part.message else []:
        yield from walk(inner)


def split_multipart(raw: bytes, start: int, end: int, boundary: bytes,
                    limit: int = MAX_PARTS) -> list[tuple[int, int]]:
    """Where the body parts of the multipart body ``raw[start:end]`` lie (RFC 2046 5.1.1).

    A delimiter line is ``--boundary`` at the start of the body or after a CRLF (the CRLF
    belongs to it, and cannot be the one that ended the previous delimiter line), then
    optionally ``--`` (the close delimiter), spaces or tabs, and a CRLF or the end. A missing
    close delimiter is forgiven. At most ``limit`` parts: the last one then holds the rest.
    One pass over the body, whatever it holds.
    """
    marker = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = None
    floor = pos = start  # a delimiter's leading CRLF may not start before floor
    while True:
        i = raw.find(marker, pos, end)
        if i < 0:
            break
        pos = i + 1
        if i != start and (i - 2 < floor or not raw.startswith(b"\r\n", i - 2, i)):
            continue  # not at the start of a line
        j = i + len(marker)
        close = raw.startswith(b"--", j, end)
        if close:
            j += 2
        while j < end and raw[j] in (0x20, 0x09):
            j += 1
        if j < end and not raw.startswith(b"\r\n", j, end):
            continue  # more text on the line: not a delimiter
        if part_start is not None:
            if len(spans) + 1 >= limit:
                break  # this part keeps the rest of the body
            spans.append((part_start, i - 2))
        if close:
            return spans
        part_start = floor = pos = min(j + 2, end)
    if part_start is not None:
        spans.append((part_start, end))
    return spans


# ----------------------------------------------------------------------------- ENVELOPE

_ADDR_SPECIALS = b'()<>@,;:\\".[]'


def _addr_tokens(value: bytes):
    """Tokens for RFC 5322 address lists: (kind, text); kinds a(tom) q(uoted) c(omment) s(pecial)
    d(omain literal), and p for a "." followed by white space (obs-phrase: a display name such
    as "John Q. Public"; in an addr-spec the space is dropped, as before)."""
    i, n = 0, len(value)
    out = []
    while i < n:
        c = value[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x28:  # (
            depth, j, text = 0, i, bytearray()
            while j < n:
                ch = value[j]
                if ch == 0x5C and j + 1 < n:
                    text.append(value[j + 1])
                    j += 2
                    continue
                if ch == 0x28:
                    depth += 1
                    if depth > 1:
                        text.append(ch)
                elif ch == 0x29:
                    depth -= 1
                    if depth == 0:
                        j += 1
                        break
                    text.append(ch)
                else:
                    text.append(ch)
                j += 1
            out.append(("c", bytes(text)))
            i = j
        elif c == 0x22:  # "
            j, text = i + 1, bytearray()
            while j < n and value[j] != 0x22:
                if value[j] == 0x5C and j + 1 < n:
                    j += 1
                text.append(value[j])
                j += 1
            out.append(("q", bytes(text)))
            i = j + 1
        elif c == 0x5B:  # [
            j = value.find(b"]", i)
            j = n if j < 0 else j + 1
            out.append(("d", value[i:j]))
            i = j
        elif c == 0x2E and i + 1 < n and value[i + 1] in b" \t\r\n":
            out.append(("p", b"."))  # a dot that a space follows: "John Q. Public" keeps it
            i += 1
        elif c in _ADDR_SPECIALS:
            out.append(("s", bytes([c])))
            i += 1
        else:
            j = i
            while j < n and value[j] not in b" \t\r\n" and value[j] not in _ADDR_SPECIALS:
                j += 1
            out.append(("a", value[i:j]))
            i = j
    return out


def _phrase(toks) -> bytes | None:
    """A display name from its words: one space between words, none before a dot, and after a
    dot only where the header had one ("John Q. Public", "Q.Public")."""
    words = [t for t in toks if t[0] in "aqp" or t == ("s", b".")]
    if not words:
        return None
    out = bytearray()
    glued = True  # the next word follows without a space (at the start, after "Q.")
    for kind, text in words:
        if kind in "sp":
            if not glued and out.endswith(b"."):  # "Mr. . Smith", as Dovecot keeps it
                out += b" "
            out += text
            glued = kind == "s"
            continue
        if not glued:
            out += b" "
        out += text
        glued = False
    return bytes(out)


def _addr_spec(toks) -> tuple[bytes | None, bytes | None]:
    """(local part, domain) of an addr-spec's tokens."""
    toks = [t for t in toks if t[0] != "c"]
    at = max((i for i, t in enumerate(toks) if t == ("s", b"@")), default=-1)
    local_toks, dom_toks = (toks[:at], toks[at + 1:]) if at >= 0 else (toks, [])

    def join(ts):
        out = bytearray()
        for kind, text in ts:
            out += (b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"') if kind == "q" else text
        return bytes(out) if out else None
    return join(local_toks), join(dom_toks)


def parse_addresses(value: bytes) -> list[tuple]:
    """An address list as ENVELOPE wants it: (name, adl, mailbox, host) tuples; groups are
    marked by (None, None, groupname, None) ... (None, None, None, None)."""
    toks = _addr_tokens(value)
    out: list[tuple] = []
    i, n = 0, len(toks)
    in_group = False
    while i < n:
        t = toks[i]
        if t == ("s", b","):
            i += 1
            continue
        if t == ("s", b";"):
            if in_group:
                out.append((None, None, None, None))
                in_group = False
            i += 1
            continue
        # find where this mailbox (or group name) ends
        j, angle = i, 0
        kind = "mailbox"
        while j < n:
            tj = toks[j]
            if tj == ("s", b"<"):
                angle += 1
            elif tj == ("s", b">"):
                angle = max(0, angle - 1)
            elif angle == 0 and tj in (("s", b","), ("s", b";")):
                break
            elif angle == 0 and tj == ("s", b":") and not in_group:
                kind = "group"
                break
            j += 1
        unit = toks[i:j]
        if kind == "group":
            out.append((None, None, _phrase(unit) or b"", None))
            in_group = True
            i = j + 1
            continue
        i = j
        adl = None
        if ("s", b"<") in unit:
            lt = unit.index(("s", b"<"))
            gt = unit.index(("s", b">")) if ("s", b">") in unit else len(unit)
            name = _phrase(unit[:lt])
            inner = unit[lt + 1:gt]
            if ("s", b":") in inner and inner[0] == ("s", b"@"):
                colon = inner.index(("s", b":"))
                adl = b"".join(t[1] for t in inner[:colon])
                inner = inner[colon + 1:]
            local, host = _addr_spec(inner)
        else:
            comments = [u[1] for u in unit if u[0] == "c"]
            name = comments[-1] if comments else None
            local, host = _addr_spec(unit)
        if local is None and host is None:  # nothing but comments (or nothing) between commas
            continue
        out.append((name, adl, local if local is not None else b"MISSING_MAILBOX",
                    host if host is not None else b"MISSING_DOMAIN"))
    if in_group:
        out.append((None, None, None, None))
    return out


def _address_list(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    addrs = parse_addresses(_bounded(value))
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(nstring(x) for x in a) + b")" for a in addrs) + b")"


def envelope(part: Part) -> bytes:
    """ENVELOPE (RFC 3501 7.4.2): date, subject, from, sender, reply-to, to, cc, bcc,
    in-reply-to, message-id; sender and reply-to fall back to from."""
    first = part.first
    frm = first(b"from")
    sender = first(b"sender") or frm
    reply_to = first(b"reply-to") or frm
    fields = [nstring(first(b"date") or None), nstring(first(b"subject")),
              _address_list(frm), _address_list(sender), _address_list(reply_to),
              _address_list(first(b"to")), _address_list(first(b"cc")), _address_list(first(b"bcc")),
              nstring(first(b"in-reply-to")), nstring(first(b"message-id"))]
    return b"(" + b" ".join(fields) + b")"


# ----------------------------------------------------------------------------- BODYSTRUCTURE

def _plist(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(quote(k) + b" " + quote(v) for k, v in params) + b")"


def _disposition(part: Part) -> bytes:
    d = parse_disposition(part.first(b"content-disposition"))
    if d is None:
        return b"NIL"
    return b"(" + quote(d[0]) + b" " + _plist(d[1]) + b")"


def _language(part: Part) -> bytes:
    value = part.first(b"content-language")
    if value is None:
        return b"NIL"
    langs = [t[1] for t in _tokens(_bounded(value)) if t[0] == "a"]  # atoms: "en,fr" is one
    langs = [x for l in langs for x in l.split(b",") if x]
    if not langs:
        return b"NIL"
    if len(langs) == 1:
        return quote(langs[0])
    return b"(" + b" ".join(quote(l) for l in langs) + b")"


def bodystructure(part: Part, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY, as RFC 3501 7.4.2 describes them."""
    if part.children is not None:
        if not part.children:  # a multipart without parts: shown as an empty text part
            inner = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0' + (
                b" NIL NIL NIL NIL)" if extended else b")")
        else:
            inner = b"".join(bodystructure(c, extended) for c in part.children)
        out = inner + b" " + quote(part.subtype)
        if extended:
            out += b" " + b" ".join([_plist(part.params), _disposition(part), _language(part),
                                     nstring(part.first(b"content-location"))])
        return b"(" + out + b")"
    enc = part.first(b"content-transfer-encoding")
    fields = [quote(part.type), quote(part.subtype), _plist(part.params),
              nstring(part.first(b"content-id")), nstring(part.first(b"content-description")),
              quote(enc if enc else b"7bit"), str(part.body_size).encode()]
    if part.message is not None:
        fields += [envelope(part.message), bodystructure(part.message, extended),
                   str(part.body_lines()).encode()]
    elif part.type.lower() == b"text":
        fields.append(str(part.body_lines()).encode())
    if extended:
        fields += [nstring(part.first(b"content-md5")), _disposition(part), _language(part),
                   nstring(part.first(b"content-location"))]
    return b"(" + b" ".join(fields) + b")"


# ----------------------------------------------------------------------------- sections

@dataclass
class Section:
    """What ``BODY[...]`` names: part numbers, then HEADER / HEADER.FIELDS[.NOT] / TEXT / MIME."""

    parts: list[int]
    spec: str = ""  # "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: list[str] = field(default_factory=list)
    fields_text: list[str] = field(default_factory=list)  # as the client wrote them

    def text(self) -> str:
        s = ".".join(str(p) for p in self.parts)
        if self.spec:
            s = f"{s}.{self.spec}" if s else self.spec
        if self.spec.startswith("HEADER.FIELDS"):
            s += " (" + " ".join(self.fields_text) + ")"
        return s


def _find(root: Part, numbers: list[int]) -> Part | None:
    """The part that numbers such as [2, 1] name (RFC 3501 6.4.5), or None."""
    cur, where = root, "message"  # where: "message", "part" (chosen among children) or "body"
    for i, n in enumerate(numbers):
        if where == "part" and cur.message is not None:
            cur, where = cur.message, "message"  # numbers go on inside an attached message
        if cur.children is not None and where != "body":
            if not 1 <= n <= len(cur.children):
                return None
            cur, where = cur.children[n - 1], "part"
        elif n == 1 and where == "message":
            where = "body"  # a message that is not multipart: part 1 is its body
        elif n == 1 and where == "part":
            where = "body"  # a single part's part 1 is itself, once (as Dovecot answers)
        else:
            return None
    return cur


def section_bytes(root: Part, raw: bytes, section: Section) -> bytes | None:
    """The bytes a section names (None when the message has no such part)."""
    if not section.parts:
        if section.spec == "":
            return raw
        msg = root
    else:
        part = _find(root, section.parts)
        if part is None:
            return b""  # no such part: an empty string, as Dovecot answers
        if section.spec == "":
            return part.body
        if section.spec == "MIME":
            return part.header
        if part.message is None:
            # HEADER/TEXT of a part that is not a message: nothing there.
            return b""
        msg = part.message
    spec = section.spec
    if spec == "HEADER":
        return msg.header
    if spec == "TEXT":
        return msg.body
    if spec in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return header_fields(msg.header, section.fields, spec.endswith(".NOT"))
    return None


# ----------------------------------------------------------------------------- FETCH items

@dataclass
class FetchItem:
    name: str  # "FLAGS", "BODY", "BODYSTRUCTURE", "BODY[]" ...
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def needs_message(self) -> bool:
        return self.name not in ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE")

    @property
    def sets_seen(self) -> bool:
        return (self.section is not None and not self.peek) or self.name in ("RFC822", "RFC822.TEXT")


# Items answered without reading the message: from the store, and (ENVELOPE, BODY,
# BODYSTRUCTURE) from the folder's index, which names them by these fields.
INDEX_FIELDS = {"ENVELOPE": "envelope", "BODY": "body", "BODYSTRUCTURE": "bodystructure"}
FROM_INDEX = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", *INDEX_FIELDS}


def from_index(items: list[FetchItem]) -> bool:
    """Whether a FETCH of these items needs no message read (see INDEX_FIELDS)."""
    return all(item.name in FROM_INDEX for item in items)


SIMPLE_ITEMS = {"FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
                "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID"}
MACROS = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
          "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
          "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]}
_FETCH_HINT = "FETCH wants data items such as FLAGS, UID, ENVELOPE, BODY[], BODY.PEEK[HEADER] or RFC822.SIZE"


def _item(cur: Cursor) -> FetchItem:
    start = cur.pos
    while cur.peek().isalnum() or cur.peek() == b".":  # bytes.isalnum: ASCII letters and digits only
        cur.pos += 1
    name = cur.data[start:cur.pos].decode("ascii").upper()
    if not name:
        raise ParseError(_(_FETCH_HINT))
    if cur.peek() == b"[":
        if name not in ("BODY", "BODY.PEEK"):
            raise ParseError(_("only BODY[...] and BODY.PEEK[...] take a section in brackets"))
        cur.pos += 1
        section = _section(cur)
        partial = None
        if cur.peek() == b"<":
            cur.pos += 1
            a = cur.number("start offset")
            cur.expect(b".")
            b = cur.number("length")
            cur.expect(b">")
            if b == 0:
                raise ParseError(_("a partial fetch <start.length> needs a length above 0"))
            partial = (a, b)
        return FetchItem("BODY[]", section, name == "BODY.PEEK", partial)
    if name not in SIMPLE_ITEMS:
        raise ParseError(_("unknown FETCH item {name}: ").format(name=name) + _(_FETCH_HINT))
    return FetchItem(name)


def _section(cur: Cursor) -> Section:
    sec = Section([])
    while True:
        if cur.peek() == b"]":
            cur.pos += 1
            return sec
        c = cur.peek()
        if c.isdigit():
            n = cur.number("part number")
            if n == 0:
                raise ParseError(_("part numbers start at 1"))
            sec.parts.append(n)
            if cur.peek() == b".":
                cur.pos += 1
                continue
            cur.expect(b"]")
            return sec
        word = cur.atom(what="section name").upper()
        if word in ("HEADER", "TEXT") or (word == "MIME" and sec.parts):
            sec.spec = word
        elif word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            sec.spec = word
            cur.sp()
            names = cur.paren_list(lambda: cur.astring("header field name"))
            if not names:
                raise ParseError(_("HEADER.FIELDS needs at least one field name, e.g. (SUBJECT FROM)"))
            sec.fields_text = [n.decode("ascii", "replace") for n in names]
            sec.fields = [n.upper() for n in sec.fields_text]
            sec.fields_text = sec.fields
        else:
            raise ParseError(_("a section is a part number and/or HEADER, HEADER.FIELDS (...), "
                               "HEADER.FIELDS.NOT (...), TEXT or MIME, e.g. BODY[1.TEXT]"))
        cur.expect(b"]")
        return sec


def distinct_items(items: list[FetchItem]) -> list[FetchItem]:
    """The items without repeats, in their first order: ``(UID UID BODY.PEEK[] BODY.PEEK[])``
    is answered with each item once, as Dovecot does. (BODY[] and BODY.PEEK[] stay two items.)"""
    seen = set()
    out = []
    for item in items:
        key = (item.name, item.section.text() if item.section else None, item.peek, item.partial)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def answer_size(items: list[FetchItem], size: int) -> int:
    """About how many bytes the items take for a message of ``size`` bytes: what its bytes
    (whole or a section, at most the whole) contribute; structure items are not counted."""
    total = 0
    for item in items:
        if item.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODY[]"):
            total += min(size, item.partial[1]) if item.partial else size
    return total


def parse_fetch_items(cur: Cursor) -> list[FetchItem]:
    """The data items of a FETCH (after the message set): a macro, one item or a list."""
    if cur.peek() == b"(":
        cur.pos += 1
        items = []
        while True:
            items.append(_item(cur))
            if cur.peek() == b")":
                cur.pos += 1
                break
            cur.sp()
        return items
    word_end = cur.pos
    while word_end < cur.end and cur.data[word_end:word_end + 1].isalpha():
        word_end += 1
    word = cur.data[cur.pos:word_end].decode("ascii").upper()
    if word in MACROS and (word_end == cur.end or cur.data[word_end:word_end + 1] == b" "):
        cur.pos = word_end
        return [FetchItem(n) for n in MACROS[word]]
    return [_item(cur)]
