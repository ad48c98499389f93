"""Fuzz targets for the IMAP core and the MIME parsers behind FETCH and SEARCH.

A *target* is a function ``target(data: bytes) -> str | None``: it runs one input and returns
None when the answer was fine, or a short text saying what was wrong with it ("SERVERBUG ...",
"malformed response ..."). An exception escaping it is a bug too. The test suite drives these
targets with hypothesis (``tests/test_fuzz_imap_pop3.py``), ``bench/fuzz.py`` with a long
mutation run; both use the seeds below as a starting point.

:class:`ImapTarget` turns the first byte of an input into the state the session starts in (not
authenticated, authenticated, a folder selected read-write or read-only, in IDLE, in the middle
of AUTHENTICATE) and feeds the rest as what the client sent, in up to three chunks. The mailbox
holds ordinary and hostile messages, so FETCH and SEARCH meet the MIME parsers' worst cases.
"""

from __future__ import annotations

import re
import tempfile
import time

from ..net import ServerContext
from ..store import Store, to_crlf
from ..transcript import Recorder
from . import fetch as fetchmod
from . import search as searchmod
from .core import ImapSession, State
from .parser import Cursor
from .testing import SAMPLES, UNUSUAL

__all__ = ["StoreTarget", "ImapTarget", "mime_target", "check_imap_answer", "HOSTILE_MESSAGES",
           "HEAVY_MESSAGES", "IMAP_SEEDS",
           "IMAP_TOKENS", "MIME_SEEDS", "MIME_TOKENS"]

# Messages built to hurt a MIME parser: each once hung, grew memory or raised somewhere.
HOSTILE_MESSAGES = [
    b"Content-Type: text/plain)\r\nContent-Disposition: )attachment)\r\nContent-Language: )\r\n\r\nx",
    b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n----\r\n--\r\n",
    b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i) for i in range(80))
    + b"\r\ninnermost\r\n",
    b"Content-Type: message/rfc822\r\n\r\n" * 60 + b"Subject: deep\r\n\r\nx",
    b"From: " + b"(" * 5000 + b"\r\nTo: " + b"<" * 3000 + b"\r\nSubject: =?utf-8?q?" + b"=FF" * 2000
    + b"?=\r\nDate: " + b"9" * 500 + b"\r\n\r\nbody",
    b"Subject: folded\r\n" + b" more\r\n" * 5000 + b"\r\n=?utf-8?b?////?=",
    b"Content-Type: text/plain; charset=nope-8; format=\"\\\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!",
    b"Content-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=utf-16\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=\r\n=4=\r\n--x--",
    b"\r\n\r\n\r\n",
    b":\r\n:\r\n\r\n",
]

# More parts than fetch.MAX_PARTS: its BODYSTRUCTURE takes a tenth of a second, so it is fuzzed
# on its own (mime_target, the test suite) rather than in every session's mailbox.
HEAVY_MESSAGES = [b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\n" * 12_000 + b"--b--\r\n"]
MESSAGES = [to_crlf(m if isinstance(m, bytes) else m.encode()) for m in SAMPLES + UNUSUAL] + HOSTILE_MESSAGES

# Commands learners and clients send, for a mutation fuzzer to start from.
IMAP_SEEDS = [
    b"a1 CAPABILITY\r\n", b"a1 LOGIN alice alice-pw\r\n", b"a1 AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXB3\r\n",
    b"a1 AUTHENTICATE PLAIN\r\nAGFsaWNlAGFsaWNlLXB3\r\n", b"a2 SELECT INBOX\r\n", b"a2 EXAMINE INBOX\r\n",
    b'a3 LIST "" "*"\r\n', b'a3 LIST (SPECIAL-USE) "" % RETURN (CHILDREN SUBSCRIBED)\r\n', b'a3 LSUB "" *\r\n',
    b"a4 STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)\r\n", b"a5 CREATE Projects.Alpha\r\n",
    b"a5 RENAME Projects Done\r\n", b"a5 DELETE Done\r\n", b"a5 SUBSCRIBE Trash\r\n",
    b"a6 APPEND INBOX (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {12+}\r\nSubject: x\r\n\r\n",
    b"a6 APPEND INBOX {5}\r\nhello\r\n", b"a7 FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)\r\n",
    b"a7 FETCH 1:* BODYSTRUCTURE\r\n", b"a7 FETCH 1:3 (BODY.PEEK[1.2.MIME] BODY[HEADER.FIELDS (FROM TO)]<0.10>)\r\n",
    b"a7 UID FETCH 1:* (BODY.PEEK[TEXT] BODY.PEEK[2.HEADER] RFC822.HEADER)\r\n", b"a7 FETCH 2 FULL\r\n",
    b"a8 SEARCH OR FROM bob NOT SUBJECT lunch\r\n", b"a8 UID SEARCH CHARSET UTF-8 TEXT {5+}\r\ngr\xc3\xbc\xc3\x9f\r\n",
    b"a8 SEARCH SENTSINCE 1-Jan-2020 LARGER 100 (UNSEEN FLAGGED) UID 1:*\r\n",
    b"a9 STORE 1:2 +FLAGS.SILENT (\\Deleted $Label)\r\n", b"a9 UID STORE 3 FLAGS (\\Seen)\r\n",
    b"b1 COPY 1:* Trash\r\n", b"b1 UID MOVE 2 Junk\r\n", b"b2 EXPUNGE\r\n", b"b2 UID EXPUNGE 1:2\r\n",
    b"b3 IDLE\r\nDONE\r\n", b"b4 NAMESPACE\r\n", b'b4 ID ("name" "fuzz")\r\n', b"b4 ENABLE UTF8=ACCEPT\r\n",
    b"b5 CLOSE\r\n", b"b5 UNSELECT\r\n", b"b6 NOOP\r\n", b"b6 CHECK\r\n", b"b7 STARTTLS\r\n", b"b8 LOGOUT\r\n",
]
IMAP_TOKENS = [b" ", b"\r\n", b"\n", b"(", b")", b"[", b"]", b"<", b">", b"{", b"}", b"{0}\r\n", b"{3+}\r\n",
               b"{99999999}\r\n", b'"', b"\\", b"*", b"%", b"1:*", b"*:4294967295", b"0", b"NIL", b"UID ",
               b"BODY.PEEK[", b"HEADER.FIELDS.NOT (", b"CHARSET ", b"&", b"&AOk-", b"\xc3\xa9", b"\xff", b"\x00",
               b"INBOX", b"x" * 300, b"*" * 80]

MIME_SEEDS = MESSAGES + HEAVY_MESSAGES
MIME_TOKENS = [b"\r\n", b"\r\n\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n", b"--b\r\n", b"--b--",
               b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n", b"=?utf-8?q?",
               b"?=", b"(", b")", b'"', b"\\", b"<", b">", b"@", b",", b";", b":", b"charset=", b"\xff", b" "]

_TAGGED = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+ (OK|NO|BAD) ")
_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\Z")


def check_imap_answer(out: bytes) -> str | None:
    """None if ``out`` is a run of well-formed IMAP responses without an internal error,
    else what is wrong: every response is ``* ...``, ``+ ...`` or ``tag OK|NO|BAD ...``, ends
    with CRLF, and holds no CR or LF outside its literals."""
    i, n = 0, len(out)
    while i < n:
        start = i
        while True:
            j = out.find(b"\r\n", i)
            if j < 0:
                return f"response without CRLF at its end: {out[start:start + 80]!r}"
            segment = out[i:j]
            if b"\r" in segment or b"\n" in segment:
                return f"a bare CR or LF inside a response: {out[start:j + 2][:120]!r}"
            m = _LITERAL_AT_END.search(segment)
            if not m:
                i = j + 2
                break
            i = j + 2 + int(m.group(1))
            if i > n:
                return f"a literal longer than the answer: {out[start:start + 80]!r}"
        line = out[start:i]
        if b"[SERVERBUG]" in line:
            return f"SERVERBUG {line[:200]!r}"
        if not (line.startswith((b"* ", b"+ ", b"+\r\n")) or _TAGGED.match(line)):
            return f"not an IMAP response: {line[:120]!r}"
    return None


class StoreTarget:
    """A protocol target on a store of its own in a temporary folder, made afresh every
    ``reset_every`` inputs (mailboxes change under APPEND, EXPUNGE, DELE ...); subclasses fill
    it in :meth:`fill`. Sessions run as a server runs them, one command per turn: a turn that
    holds the loop longer than ``turn_limit`` seconds, or an answer longer than
    ``output_limit`` bytes, is a failure."""

    def __init__(self, reset_every: int = 300, output_limit: int = 64 * 1024 * 1024, turn_limit: float = 1.0):
        self.reset_every = reset_every
        self.output_limit = output_limit
        self.turn_limit = turn_limit
        self._uses = 0
        self._tmp = None
        self.ctx = None

    def fill(self, store: Store) -> None:
        raise NotImplementedError

    def next_input(self) -> None:
        """Call at the start of every input: a fresh store when it is time for one."""
        if self._uses % self.reset_every == 0:
            self.close()
            self._tmp = tempfile.TemporaryDirectory(prefix="maillab-fuzz-")
            store = Store(self._tmp.name, hash_n=2**4)
            self.fill(store)
            self.ctx = ServerContext(store, Recorder(), "mail.example.com", "example.com")
        self._uses += 1

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()
        self.ctx = self._tmp = None


class ImapTarget(StoreTarget):
    """An IMAP session fed one input."""

    STATES = ("not authenticated", "authenticated", "selected", "examined", "idle", "authenticate")

    def fill(self, store: Store) -> None:
        acct = store.add_account("alice", "alice-pw", "example.com")
        store.add_account("bob", "bob-pw", "example.com")
        for i, message in enumerate(MESSAGES):
            acct.folder("INBOX").deliver(message, ["\\Seen"] if i % 2 else [])
        acct.create_folder("Projects.Alpha")
        acct.folder("Projects.Alpha").deliver(MESSAGES[0])

    def session(self, state: str) -> ImapSession:
        """A session already in ``state`` (one of :attr:`STATES`)."""
        s = ImapSession(self.ctx, "127.0.0.1:1", commands_per_turn=1)
        s.greeting()
        if state != "not authenticated" and state != "authenticate":
            s.account = self.ctx.store.account("alice")  # logged in without a password check
            s.user, s.state = "alice", State.AUTHENTICATED
        if state in ("selected", "idle"):
            s.receive_data(b"s SELECT INBOX\r\n")
        elif state == "examined":
            s.receive_data(b"s EXAMINE INBOX\r\n")
        if state == "idle":
            s.receive_data(b"i IDLE\r\n")
        elif state == "authenticate":
            s.receive_data(b"p AUTHENTICATE PLAIN\r\n")
        s.data_to_send()
        return s

    def __call__(self, data: bytes) -> str | None:
        self.next_input()
        state = self.STATES[data[0] % len(self.STATES)] if data else self.STATES[0]
        body = data[1:]
        s = self.session(state)
        out = bytearray()
        try:
            # Cut the input where its second byte says: a client's bytes arrive in any pieces.
            cut = (data[1] * len(body) // 256) if len(data) > 1 else 0
            for chunk in (body[:cut], body[cut:]):
                started = time.perf_counter()
                s.receive_data(chunk)
                while True:
                    out += s.data_to_send(1 << 20)
                    took, started = time.perf_counter() - started, time.perf_counter()
                    if took > self.turn_limit:
                        return f"one turn held the loop for {took:.2f} s"
                    if len(out) > self.output_limit:
                        return f"answer longer than {self.output_limit} bytes"
                    if not s.has_more:
                        break
        finally:
            s.connection_lost()
        return check_imap_answer(bytes(out))


_SEARCH_KEYS = [b"TEXT report", b"BODY caf", b"SUBJECT =?", b"FROM a", b"HEADER Content-Type mixed",
                b"SENTSINCE 1-Jan-2000", b"SENTON 1-Jan-1970", b"NOT TO x", b"CC \"\"", b"BCC z"]
_SEARCH_TREES = [searchmod.parse_search(Cursor(k)) for k in _SEARCH_KEYS]


def _parts(part, path=()):
    yield path, part
    if part.children is not None:
        for i, child in enumerate(part.children, 1):
            yield from _parts(child, path + (i,))
    elif part.message is not None:
        yield from _parts(part.message, path + (1,))


def _one_list(data: bytes) -> list | None:
    """``data`` read as one parenthesized IMAP list (None if it is not one). Over 256 KiB
    only its ends are looked at: reading it would cost seconds."""
    from .testing import _sexp
    if len(data) > 256 * 1024:
        return [None] * 10 if data.startswith(b"(") and data.endswith(b")") else None
    parsed, end = _sexp(data)
    return parsed[0] if end == len(data) and len(parsed) == 1 and isinstance(parsed[0], list) else None


def mime_target(data: bytes) -> str | None:
    """One message (``data``, line ends made CRLF) through what FETCH and SEARCH do with it:
    the MIME tree, BODYSTRUCTURE, BODY, ENVELOPE, the sections of its first parts, and the
    SEARCH keys that read headers and decoded bodies."""
    raw = to_crlf(data)
    root = fetchmod.parse_message(raw)
    for extended in (True, False):
        structure = fetchmod.bodystructure(root, extended)
        if _one_list(structure) is None:
            return f"BODYSTRUCTURE is not one parenthesized list: {structure[:120]!r}"
    envelope = _one_list(fetchmod.envelope(root))
    if envelope is None or len(envelope) != 10:
        return f"ENVELOPE is not a list of ten fields: {fetchmod.envelope(root)[:120]!r}"
    for count, (path, _part) in enumerate(_parts(root)):
        if count == 20:  # a client asks for a few sections at a time
            break
        if len(path) > fetchmod.MAX_DEPTH + 2:
            return f"a part {len(path)} levels deep"
        for spec in ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS"):
            if spec == "MIME" and not path:
                continue
            section = fetchmod.Section(list(path), spec, ["SUBJECT", "FROM"], ["SUBJECT", "FROM"])
            got = fetchmod.section_bytes(root, raw, section)
            if got is not None and len(got) > len(raw) + 4:  # (HEADER.FIELDS adds an empty line)
                return f"section {section.text()} larger than the message"
    ctx = searchmod.SearchContext(1, 1, frozenset(), len(raw), 0.0, False, lambda: raw)
    for tree in _SEARCH_TREES:
        searchmod.matches(tree, ctx)
    return None
