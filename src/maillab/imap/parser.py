"""Reading IMAP commands: framing (lines and literals) and a cursor over one command's arguments.

An IMAP command is one line, unless it carries *literals*: ``{5}`` at the end of a line
announces that exactly 5 bytes follow (after CRLF), and then the command line continues.
``{5+}`` (LITERAL+, RFC 7888) does the same without waiting for the server's ``+``.

The :class:`Framer` cuts a byte stream into complete commands (keeping each command's raw
bytes, literals included) and says when the server must send a ``+`` continuation. The
:class:`Cursor` then reads the arguments of one command the way RFC 3501's grammar says.
Neither knows anything about sockets.
"""

from __future__ import annotations

import calendar
import datetime
import re
import time
from dataclasses import dataclass

from ..i18n import _

__all__ = ["ParseError", "Framer", "Cursor", "SeqSet", "quote", "astring", "nstring",
           "encode_mailbox", "decode_mailbox", "format_datetime", "parse_datetime", "MONTHS"]

MAX_LINE = 64 * 1024  # one line of a command (literals not counted)
MAX_COMMAND = 1024 * 1024  # a whole command without its APPEND literal
MAX_LITERAL = 64 * 1024  # a literal in anything but APPEND
MAX_APPEND = 50 * 1024 * 1024  # an APPENDed message

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

_LITERAL_AT_END = re.compile(rb"\{(\d{1,12})(\+?)\}\r?\n\Z")
ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0, 32)) | {127}


class ParseError(Exception):
    """A command that does not follow the grammar. ``hint`` says in plain words what to do."""

    def __init__(self, hint: str, code: str | None = None):
        super().__init__(hint)
        self.hint = hint
        self.code = code  # a response code such as "BADCHARSET (UTF-8)", if any


class NotModifiedUtf7(ParseError):
    """A folder name in raw 8-bit text (``CREATE Φίλοι``). As Dovecot 2.3 (no UTF8=ACCEPT): BAD
    for an atom, NO for a quoted string or literal; the hint shows the name to type instead."""

    def __init__(self, raw: bytes, quoted: bool):
        hint = _("folder names travel in ASCII, in modified UTF-7 (RFC 3501 section 5.1.3)")
        try:  # (the reply stays ASCII: it shows the name as it should have been sent)
            encoded = encode_mailbox(raw.decode("utf-8")).decode()
            if len(encoded) <= 200:
                hint += "; " + _("for the name you typed, send {encoded}").format(encoded=encoded)
        except UnicodeDecodeError:
            pass
        super().__init__(hint)
        self.status = "NO" if quoted else "BAD"


# ----------------------------------------------------------------------------- framing

@dataclass
class Line:
    """A complete command (or, while a command waits for more text, one reply line)."""
    raw: bytes


@dataclass
class LiteralAnnounced:
    """The command so far ends with ``{size}`` or ``{size+}``; ``prefix`` is its text up to there."""
    prefix: bytes
    size: int
    synchronizing: bool


@dataclass
class TooLong:
    """A line longer than :data:`MAX_LINE`; its bytes are thrown away up to the next newline."""
    what: str = "line"


class Framer:
    """Cut incoming bytes into commands. Call :meth:`feed`, then :meth:`events` to collect.

    When a literal is announced the framer stops and reports :class:`LiteralAnnounced`; the
    owner then calls :meth:`accept_literal` (and sends ``+`` if it was synchronizing) or
    :meth:`reject_literal`. Until then no further bytes are parsed.
    """

    def __init__(self):
        self._buf = bytearray()
        self._cmd = bytearray()  # the command being assembled, literals included
        self._literal_left = 0
        self._discard_left = 0  # literal bytes to throw away (a refused LITERAL+)
        self._discarding_line = False  # throwing away the rest of an overlong line
        self._discard_command = False  # a refused literal: throw the rest of the command away
        self._waiting: LiteralAnnounced | None = None
        self.line_mode = False  # True: every line is one event, literals are not looked for

    @property
    def waiting(self) -> LiteralAnnounced | None:
        return self._waiting

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._cmd)

    @property
    def in_command(self) -> bool:
        """True while part of a command has arrived (a literal is being read, say)."""
        return bool(self._cmd) or self._literal_left > 0 or self._waiting is not None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def accept_literal(self) -> None:
        w = self._waiting
        assert w is not None
        self._waiting = None
        self._literal_left = w.size

    def reject_literal(self) -> None:
        """Refuse an announced literal. A synchronizing one is never sent; a LITERAL+ one is
        already on its way, so its bytes and the rest of the command are read and dropped."""
        w = self._waiting
        assert w is not None
        self._waiting = None
        self._cmd = bytearray()
        if not w.synchronizing:
            self._discard_left = w.size
            self._discard_command = True

    def next_event(self):
        """The next complete event, or None when more bytes are needed."""
        buf = self._buf
        while True:
            if self._waiting is not None:
                return None
            if self._discard_left:
                n = min(self._discard_left, len(buf))
                del buf[:n]
                self._discard_left -= n
                if self._discard_left:
                    return None
                continue
            if self._literal_left:
                n = min(self._literal_left, len(buf))
                if n:
                    self._cmd += buf[:n]
                    del buf[:n]
                    self._literal_left -= n
                if self._literal_left:
                    return None
                continue
            nl = buf.find(b"\n")
            if self._discarding_line:
                if nl < 0:
                    buf.clear()
                    return None
                del buf[:nl + 1]
                self._discarding_line = False
                continue
            if nl < 0:
                if len(buf) > MAX_LINE:
                    buf.clear()
                    self._cmd = bytearray()
                    self._discarding_line = True
                    return TooLong()
                return None
            if nl + 1 > MAX_LINE:
                del buf[:nl + 1]
                self._cmd = bytearray()
                return TooLong()
            line = bytes(buf[:nl + 1])
            del buf[:nl + 1]
            if self._discard_command:
                m = _LITERAL_AT_END.search(line)
                if m and not self.line_mode:
                    self._discard_left = int(m.group(1))  # a further literal of the dropped command
                else:
                    self._discard_command = False
                continue
            if self.line_mode:
                return Line(line)
            m = _LITERAL_AT_END.search(line)
            self._cmd += line
            if m:
                if len(self._cmd) > MAX_COMMAND:
                    self._cmd = bytearray()
                    self._discard_left = int(m.group(1))
                    self._discard_command = True
                    return TooLong("command")
                self._waiting = LiteralAnnounced(bytes(self._cmd[:len(self._cmd) - len(line) + m.start()]),
                                                 int(m.group(1)), m.group(2) != b"+")
                return self._waiting
            cmd = bytes(self._cmd)
            self._cmd = bytearray()
            if len(cmd) > MAX_COMMAND + MAX_APPEND:
                return TooLong("command")
            return Line(cmd)


# ----------------------------------------------------------------------------- arguments

class SeqSet:
    """A sequence set such as ``1:4,7,9:*`` (``*`` is kept as None until resolved)."""

    def __init__(self, ranges: list[tuple[int | None, int | None]], text: str = ""):
        self.ranges = ranges
        self.text = text

    def resolve(self, star: int) -> list[tuple[int, int]]:
        out = []
        for a, b in self.ranges:
            a = star if a is None else a
            b = star if b is None else b
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, n: int, star: int) -> bool:
        for a, b in self.resolve(star):
            if a <= n <= b:
                return True
        return False

    def max_number(self) -> int:
        return max((x for r in self.ranges for x in r if x is not None), default=0)

    def select(self, sorted_values: list[int], star: int) -> list[int]:
        """The values of a sorted list that lie in the set, in order, without repeats."""
        import bisect
        ranges = self.resolve(star)
        if len(ranges) == 1:  # (1:* and the like: already in order, without repeats)
            a, b = ranges[0]
            return sorted_values[bisect.bisect_left(sorted_values, a):bisect.bisect_right(sorted_values, b)]
        picked: set[int] = set()
        for a, b in ranges:
            i = bisect.bisect_left(sorted_values, a)
            j = bisect.bisect_right(sorted_values, b)
            if j - i > 0:
                picked.update(sorted_values[i:j])
        return sorted(picked)

    def __repr__(self) -> str:
        return f"SeqSet({self.text!r})"


_SEQ_RE = re.compile(rb"(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*")


class Cursor:
    """Reads the arguments of one command. Every reader raises :class:`ParseError` with a hint."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos
        # the command's end: its final CRLF (or LF) is not part of any argument
        end = len(data)
        if data.endswith(b"\r\n"):
            end -= 2
        elif data.endswith(b"\n"):
            end -= 1
        self.end = end

    # ---- basics
    def at_end(self) -> bool:
        return self.pos >= self.end

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos:min(self.pos + n, self.end)]

    def rest(self) -> bytes:
        return self.data[self.pos:self.end]

    def expect_end(self, what: str = "") -> None:
        if not self.at_end():
            extra = self.rest()[:40].decode("utf-8", "replace")
            raise ParseError(_("unexpected text at the end of the command: {extra}").format(extra=extra))

    def sp(self) -> None:
        if self.peek() != b" ":
            if self.at_end():
                raise ParseError(_("this command needs more arguments"))
            raise ParseError(_("expected one space between arguments"))
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def expect(self, token: bytes) -> None:
        if self.data[self.pos:self.pos + len(token)].upper() != token.upper() or self.pos + len(token) > self.end:
            raise ParseError(_("expected {token}").format(token=token.decode()))
        self.pos += len(token)

    def try_token(self, token: bytes) -> bool:
        if self.data[self.pos:self.pos + len(token)].upper() == token.upper() and self.pos + len(token) <= self.end:
            self.pos += len(token)
            return True
        return False

    # ---- tokens
    def atom(self, extra_allowed: bytes = b"", what: str = "word") -> str:
        """An atom; ``extra_allowed`` adds characters (e.g. ``]`` or ``%*``) for special places."""
        return self.atom_bytes(extra_allowed, what).decode("utf-8", "replace")

    def atom_bytes(self, extra_allowed: bytes = b"", what: str = "word") -> bytes:
        start = self.pos
        data, end = self.data, self.end
        allowed = set(extra_allowed)
        while self.pos < end:
            c = data[self.pos]
            if c in ATOM_SPECIALS and c not in allowed:
                break
            self.pos += 1
        if self.pos == start:
            raise ParseError(_("expected a {what} here").format(what=what))
        return data[start:self.pos]

    def number(self, what: str = "number") -> int:
        start = self.pos
        while self.pos < self.end and 48 <= self.data[self.pos] <= 57:
            self.pos += 1
        if self.pos == start:
            raise ParseError(_("expected a {what} here").format(what=what))
        n = int(self.data[start:self.pos])
        if n > 2**32 - 1:
            raise ParseError(_("{what} is too large").format(what=what))
        return n

    def quoted(self) -> bytes:
        assert self.peek() == b'"'
        self.pos += 1
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= self.end:
                raise ParseError(_('a quoted string must end with a closing "'))
            c = data[self.pos]
            if c == 0x22:
                self.pos += 1
                return bytes(out)
            if c == 0x5C:
                self.pos += 1
                if self.pos >= self.end or data[self.pos] not in (0x22, 0x5C):
                    raise ParseError(_('inside quotes, a backslash may only come before " or \\'))
                c = data[self.pos]
            elif c in (0x0D, 0x0A):
                raise ParseError(_("a quoted string cannot contain a line break; use a literal {n}"))
            out.append(c)
            self.pos += 1

    def literal(self) -> bytes:
        m = re.compile(rb"\{(\d+)\+?\}\r?\n").match(self.data, self.pos)
        if not m:
            raise ParseError(_("a literal looks like {5} followed by a line break and 5 bytes"))
        n = int(m.group(1))
        start = m.end()
        if start + n > len(self.data):
            raise ParseError(_("the literal is shorter than announced"))
        self.pos = start + n
        return self.data[start:start + n]

    def string(self, what: str = "string") -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"{":
            return self.literal()
        raise ParseError(_('expected a {what} in double quotes (or a literal) here').format(what=what))

    def astring(self, what: str = "argument") -> bytes:
        c = self.peek()
        if c in (b'"', b"{"):
            return self.string(what)
        if not c:
            raise ParseError(_("this command needs more arguments ({what} missing)").format(what=what))
        return self.atom_bytes(b"]", what)

    def nstring_or_nil(self) -> bytes | None:
        if self.try_nil():
            return None
        return self.string()

    def try_nil(self) -> bool:
        if self.data[self.pos:self.pos + 3].upper() == b"NIL" and (
                self.pos + 3 >= self.end or self.data[self.pos + 3] in ATOM_SPECIALS):
            self.pos += 3
            return True
        return False

    def mailbox(self) -> str:
        quoted = self.peek() in (b'"', b"{")
        raw = self.astring("folder name")
        if not raw.isascii():  # RFC 3501 5.1.3: folder names are 7-bit, in modified UTF-7
            raise NotModifiedUtf7(raw, quoted)
        try:
            name = decode_mailbox(raw)
        except ValueError:
            raise ParseError(_("folder names use modified UTF-7 (RFC 3501 section 5.1.3)")) from None
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        """A LIST pattern: an atom that may hold % and *, or a string."""
        c = self.peek()
        if c in (b'"', b"{"):
            raw = self.string("pattern")
        else:
            raw = self.atom_bytes(b"%*]", "pattern")
        try:
            return decode_mailbox(raw)
        except ValueError:
            raise ParseError(_("folder names use modified UTF-7 (RFC 3501 section 5.1.3)")) from None

    def seqset(self) -> SeqSet:
        m = _SEQ_RE.match(self.data, self.pos)
        if not m or m.end() > self.end or (m.end() < self.end and self.data[m.end()] not in b" )"):
            raise ParseError(_("expected a message set such as 1, 2:4 or 1:* here"))
        self.pos = m.end()
        text = m.group().decode()
        ranges = []
        for part in text.split(","):
            lo, _sep, hi = part.partition(":")
            a = None if lo == "*" else int(lo)
            b = a if not hi else (None if hi == "*" else int(hi))
            if a == 0 or b == 0:
                raise ParseError(_("message numbers start at 1 (0 is not a message number)"))
            if (a or 0) > 2**32 - 1 or (b or 0) > 2**32 - 1:
                raise ParseError(_("message number too large"))
            ranges.append((a, b))
        return SeqSet(ranges, text)

    def paren_list(self, item) -> list:
        """``(item item ...)``; ``item`` is a function reading one element."""
        if self.peek() != b"(":
            raise ParseError(_("expected a list in parentheses here"))
        self.pos += 1
        out = []
        if self.peek() == b")":
            self.pos += 1
            return out
        while True:
            out.append(item())
            if self.peek() == b")":
                self.pos += 1
                return out
            self.sp()

    def flag(self) -> str:
        if self.peek() == b"\\":
            self.pos += 1
            if self.peek() == b"*":
                self.pos += 1
                return "\\*"
            name = self.atom(what="flag name")
            return "\\" + name
        return self.atom(what="flag")

    def flag_list(self) -> list[str]:
        return self.paren_list(self.flag)

    def date(self) -> tuple[int, int, int]:
        """A search date such as 1-Feb-2024 (or quoted)."""
        quoted = self.peek() == b'"'
        if quoted:
            text = self.quoted().decode("ascii", "replace")
        else:
            text = self.atom(what="date")
        m = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", text)
        if not m or m.group(2).capitalize() not in MONTHS:
            raise ParseError(_("dates look like 1-Feb-2024 (day-Month-year, English month)"))
        return int(m.group(3)), MONTHS.index(m.group(2).capitalize()) + 1, int(m.group(1))


# ----------------------------------------------------------------------------- writing

def quote(value: str | bytes) -> bytes:
    """A string as IMAP sends it: quoted if it can be, otherwise a literal."""
    b = value.encode("utf-8") if isinstance(value, str) else value
    if all(0x20 <= c < 0x7F for c in b) and len(b) < 1000:
        return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(b) + b


def nstring(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else quote(value)


def astring(value: str | bytes) -> bytes:
    """An atom when the text allows it, otherwise a quoted string or literal."""
    b = value.encode("utf-8") if isinstance(value, str) else value
    if b and all(c not in ATOM_SPECIALS and c < 0x80 for c in b) and b.upper() != b"NIL":
        return b
    return quote(b)


def format_datetime(ts: float) -> str:
    """Internal date as IMAP writes it: ``"17-Jul-1996 02:44:25 -0700"`` (server's local zone)."""
    lt = time.localtime(ts)
    off = lt.tm_gmtoff or 0
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return (f"{lt.tm_mday:02d}-{MONTHS[lt.tm_mon - 1]}-{lt.tm_year:04d} "
            f"{lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d} {sign}{off // 3600:02d}{off % 3600 // 60:02d}")


_DT_RE = re.compile(r"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$")


def parse_datetime(text: str) -> float:
    m = _DT_RE.match(text)
    if not m or m.group(2).capitalize() not in MONTHS:
        raise ParseError(_('a date-time looks like "17-Jul-1996 02:44:25 -0700"'))
    day, mon, year, hh, mm, ss, sign, zh, zm = (int(g) if g.isdigit() else g for g in m.groups())
    month = MONTHS.index(mon.capitalize()) + 1
    try:  # a day, hour or year that does not exist (31-Feb, 25:00, year 0) is a client's error
        datetime.datetime(year, month, day, hh, mm, min(ss, 59))  # (a leap second :60 is fine)
        if ss > 60 or zm > 59:
            raise ValueError(ss)
    except ValueError:
        raise ParseError(_('there is no such date or time: {text}').format(text=text.strip())) from None
    t = calendar.timegm((year, month, day, hh, mm, ss, 0, 0, 0))
    off = (zh * 3600 + zm * 60) * (1 if sign == "+" else -1)
    return float(t - off)


# ----------------------------------------------------------------------------- mailbox names

def encode_mailbox(name: str) -> bytes:
    """Unicode folder name -> modified UTF-7 (RFC 3501 5.1.3)."""
    import base64
    out = bytearray()
    pending: list[str] = []

    def flush():
        if pending:
            b = base64.b64encode("".join(pending).encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
            out.extend(b"&" + b + b"-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode())
        else:
            pending.append(ch)
    flush()
    return bytes(out)


def decode_mailbox(raw: bytes) -> str:
    """Modified UTF-7 -> Unicode. Raises ValueError on malformed input. Raw UTF-8 is accepted too."""
    import base64
    if b"&" not in raw:
        return raw.decode("utf-8")
    out = []
    i = 0
    while i < len(raw):
        if raw[i:i + 1] != b"&":
            j = raw.find(b"&", i)
            j = len(raw) if j < 0 else j
            out.append(raw[i:j].decode("utf-8"))
            i = j
            continue
        j = raw.find(b"-", i)
        if j < 0:
            raise ValueError("unterminated &")
        if j == i + 1:
            out.append("&")
        else:
            b64 = raw[i + 1:j].replace(b",", b"/")
            b64 += b"=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
        i = j + 1
    return "".join(out)
