"""When is the server's answer whole? One reader per protocol, fed bytes, no sockets.

A reader is given the server's bytes as they arrive (:meth:`Reply.feed`) and says when the
answer is complete; bytes past its end are handed back for the next answer. The rules:

* SMTP (RFC 5321 4.2.1): ``250-`` lines go on, the line ``250 `` (code, space) ends the reply.
* POP3 (RFC 1939 3): one line, or, for a positive answer to RETR, TOP, CAPA and LIST/UIDL
  without an argument, lines up to one holding only ``.``.
* IMAP (RFC 3501 2.2.2, 7.5): lines until the tagged line carrying the command's tag, or a
  ``+`` continuation request; a line ending in ``{n}`` is followed by n bytes of data (a literal,
  which may hold anything, even a line that looks like the tag) before the line goes on.
* HTTP (RFC 9112 6.3): the head up to the empty line, then Content-Length bytes, or chunks up to
  the last (size 0) one, or everything until the server closes.
"""

from __future__ import annotations

import re

__all__ = ["Reply", "SmtpReply", "Pop3Reply", "ImapReply", "HttpReply", "split_lines"]

_SMTP_GOES_ON = re.compile(rb"\d{3}-")
_LITERAL_AT_END = re.compile(rb"\{(\d{1,12})\+?\}\r?\n\Z")
_STATUS = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*(\d+)[ \t]*\r?$")
_CHUNKED = re.compile(rb"(?im)^transfer-encoding[ \t]*:.*\bchunked\b")
_CLOSE = re.compile(rb"(?im)^connection[ \t]*:.*\bclose\b")
_KEEP_ALIVE = re.compile(rb"(?im)^connection[ \t]*:.*\bkeep-alive\b")


def split_lines(raw: bytes) -> list[str]:
    """The bytes as lines for reading: no line ends, bad bytes shown as escapes."""
    if not raw:
        return []
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the text ended with a line end: no empty line after it
    return [line.rstrip(b"\r").decode("utf-8", "backslashreplace") for line in lines]


class Reply:
    """One answer of the server, assembled from its bytes as they come."""

    def __init__(self):
        self.raw = bytearray()  # grows in place: a long message arrives in many pieces
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Take the server's bytes; return those past the end of this answer (for the next one)."""
        if self.done:
            return data
        self.raw += data
        end = self._end()
        if end is None:
            return b""
        self.done = True
        rest = bytes(self.raw[end:])
        del self.raw[end:]
        return rest

    def _end(self) -> int | None:
        """The index just past the answer once it is whole, else None."""
        raise NotImplementedError

    def whole_at_close(self) -> bool:
        """Does the server closing the connection end this answer normally (HTTP without a length)?"""
        return False

    @property
    def lines(self) -> list[str]:
        return split_lines(self.raw)


class _LineReply(Reply):
    """An answer made of lines; subclasses say which line ends it."""

    def __init__(self):
        super().__init__()
        self._scanned = 0  # where the next unread line starts

    def _end(self) -> int | None:
        while True:
            newline = self.raw.find(b"\n", self._scanned)
            if newline < 0:
                return None
            line = self.raw[self._scanned:newline + 1]
            self._scanned = newline + 1
            if self._last(line):
                return self._scanned

    def _last(self, line: bytes) -> bool:
        raise NotImplementedError


class SmtpReply(_LineReply):
    def _last(self, line: bytes) -> bool:
        # Only "250-" promises more; anything else ends the reply, a line that is no SMTP reply
        # at all too (the other side is not an SMTP server: waiting would only hang).
        return not _SMTP_GOES_ON.match(line)

    @property
    def code(self) -> str:
        lines = self.lines
        return lines[-1][:3] if lines else ""


class Pop3Reply(_LineReply):
    def __init__(self, multi_line: bool = False):
        super().__init__()
        self.multi_line = multi_line
        self._first = True

    def _last(self, line: bytes) -> bool:
        if self._first:
            self._first = False
            return not (self.multi_line and line.startswith(b"+OK"))
        return line.rstrip(b"\r\n") == b"."

    @property
    def status(self) -> str:
        """"+OK", "-ERR", "+" (a continuation during AUTH) or ""."""
        first = self.lines[0] if self.raw else ""
        for status in ("+OK", "-ERR", "+"):
            if first.startswith(status):
                return status
        return ""


class ImapReply(Reply):
    """Lines until the tagged one (``tag=None``: the greeting, one line), or a ``+`` request."""

    def __init__(self, tag: bytes | None):
        super().__init__()
        self.tag = tag
        self._line_start = 0  # start of the response line being read (it may span literals)
        self._scanned = 0
        self._literal_left = 0
        self.last_line = b""  # the response line that ended the answer

    def _end(self) -> int | None:
        while True:
            if self._literal_left:
                take = min(self._literal_left, len(self.raw) - self._scanned)
                self._scanned += take
                self._literal_left -= take
                if self._literal_left:
                    return None
            newline = self.raw.find(b"\n", self._scanned)
            if newline < 0:
                return None
            piece = self.raw[self._scanned:newline + 1]
            self._scanned = newline + 1
            literal = _LITERAL_AT_END.search(piece)
            if literal:
                self._literal_left = int(literal.group(1))
                continue
            line = self.raw[self._line_start:self._scanned]
            self._line_start = self._scanned
            if self._last(line):
                self.last_line = line.rstrip(b"\r\n")
                return self._scanned

    def _last(self, line: bytes) -> bool:
        if self.tag is None or line.startswith(b"+"):
            return True
        if line.startswith(b"* BAD"):
            return True  # the server could not read the line at all, so no tag will come
        return line.split(b" ", 1)[0] == self.tag

    @property
    def status(self) -> str:
        """OK, NO or BAD of the tagged line; "+" for a continuation request; "" otherwise."""
        words = self.last_line.split()
        if words[:1] == [b"+"] or self.last_line.startswith(b"+"):
            return "+"
        if len(words) > 1 and words[0] == self.tag:
            return words[1].decode("ascii", "replace").upper()
        return ""


class HttpReply(Reply):
    """A whole HTTP response (interim 1xx responses are read past)."""

    def __init__(self, head_only: bool = False):
        super().__init__()
        self.head_only = head_only  # the answer to HEAD: headers, never a body
        self._start = 0  # where the final (not 1xx) response starts
        self._until_close = False

    def _end(self) -> int | None:
        while True:
            head_end = self.raw.find(b"\r\n\r\n", self._start)
            if head_end < 0:
                return None
            body = head_end + 4
            head = self.raw[self._start:body]
            status = _STATUS.match(head)
            code = int(status.group(1)) if status else 0
            if 100 <= code < 200 and code != 101:
                self._start = body  # "100 Continue": the real answer follows
                continue
            if self.head_only or code in (101, 204, 304) or status is None:
                return body
            length = _CONTENT_LENGTH.search(head)
            if length:
                end = body + int(length.group(1))
                return end if len(self.raw) >= end else None
            if _CHUNKED.search(head):
                return _chunks_end(self.raw, body)
            self._until_close = True
            return None

    def whole_at_close(self) -> bool:
        return self._until_close

    @property
    def status(self) -> int:
        m = _STATUS.match(self.raw[self._start:])
        return int(m.group(1)) if m else 0

    @property
    def head(self) -> bytes:
        return self.raw[self._start:self.raw.find(b"\r\n\r\n", self._start) + 4]

    @property
    def body(self) -> bytes:
        """The final response's body as it came (after any 1xx answer and the head)."""
        return self.raw[self._start + len(self.head):]

    @property
    def closes(self) -> bool:
        """Will the server close the connection after this response?"""
        head = self.head
        if _CLOSE.search(head) or self._until_close:
            return True
        return head.startswith(b"HTTP/1.0") and not _KEEP_ALIVE.search(head)


def _chunks_end(raw: bytes, pos: int) -> int | None:
    """The end of a chunked body starting at ``pos`` (RFC 9112 7.1), or None if not all there."""
    while True:
        newline = raw.find(b"\r\n", pos)
        if newline < 0:
            return None
        size_text = raw[pos:newline].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return newline + 2  # not chunked after all: stop here rather than wait for ever
        pos = newline + 2
        if size == 0:
            break
        pos += size + 2  # the data and its CRLF
        if pos > len(raw):
            return None
    while True:  # trailer fields, then an empty line
        newline = raw.find(b"\r\n", pos)
        if newline < 0:
            return None
        if newline == pos:
            return pos + 2
        pos = newline + 2
