"""Transcripts: every line each client and server said, per service and connection.

Servers record raw bytes as they cross the socket (``Connection.client(data)`` and
``Connection.server(data)``); the recorder splits them into lines. Learners read transcripts
in notebooks; graders use them as evidence of what the learner's code really sent.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections import deque
from typing import Iterable, Iterator, NamedTuple

from .i18n import N_, _, translate_text

__all__ = ["Recorder", "Connection", "Line", "Transcript", "SequenceDiagram", "ROUTINE"]

CLIENT, SERVER, EVENT = "C", "S", "*"
MAX_LINE = 8 * 1024  # bytes of one line that are kept; the rest is counted and marked
ENTRY_OVERHEAD = 200  # bytes of memory a Line or block costs besides its text (for the budget)
REFUSED_KEPT = 20  # refused commands in a row that are kept; later ones are only counted

log = logging.getLogger("maillab.transcript")

# The recorder's own event lines. They are recorded in English (graders and tests read them, and
# a server thread speaks no learner's language) and shown in the learner's language: these
# marks put them in the catalog, where translate_text finds them with their values filled in.
EVENT_TEXTS = (N_("connection from {0}"), N_("connection opened"), N_("connection closed"),
               N_("connection lost: {0}"), N_("{0} more client lines not kept"),
               N_("{0} more server lines not kept"))


def shown_event(text: str) -> str:
    """An event line as the learner reads it: in the learner's language when it is known."""
    return translate_text(text)


def _refusal_pattern(service: str) -> re.Pattern | None:
    """A pattern that matches a line end followed by a server line refusing the client's
    command, for this protocol: searched in b"\\n" + a run of lines, it finds such a line
    anywhere in the run (a literal first character makes the search quick)."""
    protocol = service.partition(":")[0]
    if protocol in ("smtp", "submission", "smtps"):
        return re.compile(rb"\n[45][0-9][0-9]")  # a 4xx or 5xx reply
    if protocol in ("pop3", "pop3s"):
        return re.compile(rb"\n-ERR")
    if protocol in ("imap", "imaps"):
        # a tagged (not "* " or "+ ") NO or BAD with text after it
        return re.compile(rb"\n(?!\* |\+ )[^ \n]* (?:BAD|NO) ")
    return None  # no notion of a refused line (HTTP): only the other limits apply


def _has_long_line(buf: bytes, size: int) -> bool:
    """Whether a line in ``buf[:size]`` is longer than MAX_LINE. Such a line covers one of the
    aligned stretches of MAX_LINE/2 bytes from end to end, so only when a stretch holds no line
    end are the lines measured one by one (a few searches instead of a split of the whole run)."""
    step = MAX_LINE // 2
    if all(buf.find(b"\n", k, k + step) >= 0 for k in range(0, size, step)):
        return False
    return max(map(len, buf[:size].split(b"\n"))) > MAX_LINE


class Line(NamedTuple):
    """One line of a transcript (a named tuple: cheap to make, and servers make many)."""

    time: float  # time.time() when the line was complete
    service: str  # e.g. "smtp:example.com", "pop3", "imap"
    conn: int  # connection number, unique within the lab
    who: str  # "C" client, "S" server, "*" event (connect, close, TLS, ...)
    raw: bytes  # the bytes of the line, with its line ending if it had one
    peer: str = ""  # "host:port" of the client

    @property
    def text(self) -> str:
        """The line without its ending, decoded for reading (bad bytes shown as escapes)."""
        return self.raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")

    def __str__(self) -> str:
        if self.who == EVENT:
            return f"-- {shown_event(self.text)}"
        return f"{'C:' if self.who == CLIENT else 'S:'} {self.text}"


class _Block(NamedTuple):
    """Several complete lines that one side of a connection sent in one go (a long reply, a
    message after DATA), kept as one object and split into :class:`Line` objects only when
    the transcript is read: recording a 1,000-line FETCH answer makes one object, not 1,000."""

    time: float
    service: str
    conn: int
    who: str
    raw: bytes  # the lines, each with its line ending
    peer: str
    count: int  # how many lines

    def lines(self) -> list[Line]:
        time_, service, conn, who, peer, make = (self.time, self.service, self.conn, self.who,
                                                 self.peer, tuple.__new__)
        # make(Line, ...) is Line(...) without a Python call per line
        return [make(Line, (time_, service, conn, who, part + b"\n", peer))
                for part in self.raw[:-1].split(b"\n")]


class Connection:
    """The recorder's handle for one connection. Thread-safe through the recorder's lock.

    What one connection may keep is bounded, and every cut leaves an event line saying so:

    * a line keeps at most :data:`MAX_LINE` bytes;
    * each side keeps at most ``recorder.per_connection`` lines and
      ``recorder.per_connection_bytes`` bytes;
    * once the server has refused :data:`REFUSED_KEPT` commands in a row (garbage, a client
      that never logs in), further refused commands and their refusals are counted, not kept,
      until the server accepts something again.
    """

    def __init__(self, recorder: "Recorder", service: str, conn_id: int, peer: str):
        self.recorder = recorder
        self.service = service
        self.id = conn_id
        self.peer = peer
        self.user: str | None = None  # set by the server after a successful login
        self._partial = {CLIENT: b"", SERVER: b""}
        self._partial_cut = {CLIENT: 0, SERVER: 0}  # bytes of the current line beyond MAX_LINE
        self._kept = {CLIENT: 0, SERVER: 0}
        self._kept_bytes = {CLIENT: 0, SERVER: 0}
        self.skipped = {CLIENT: 0, SERVER: 0}  # lines counted but not kept (over the limit)
        self._refusal = _refusal_pattern(service)
        self.refusals_in_a_row = 0
        self._refused_skipped = [0, 0]  # lines and bytes not kept while refusals go on
        self._held: Line | None = None  # a client line waiting for the server's verdict
        self.closed = False

    def _feed(self, who: str, data: bytes) -> None:
        rec = self.recorder
        if self._kept[who] >= rec.per_connection or self._kept_bytes[who] >= rec.per_connection_bytes:
            self.skipped[who] += data.count(b"\n")  # a huge download: count its lines, keep none
            return
        buf = self._partial[who] + data
        complete = buf.rfind(b"\n") + 1  # bytes of the complete lines, line ends included
        count = buf.count(b"\n", 0, complete)
        partial = buf[complete:]
        carried = self._partial_cut[who]  # bytes cut earlier from the first of these lines
        if count:  # that line ends here; what follows is a new one
            self._partial_cut[who] = 0
        if len(partial) > MAX_LINE:  # no line end in sight: keep the line's start only
            self._partial_cut[who] += len(partial) - MAX_LINE
            partial = partial[:MAX_LINE]
        self._partial[who] = partial
        if not count:
            return
        now = time.time()
        if not carried and self._keeps_all(who, buf, count, complete):
            # The usual case (a message after DATA, an accepted command and its answer): every
            # line kept as it is, as the loop below would keep it, without its checks per line.
            self._kept[who] += count
            self._kept_bytes[who] += complete
            if count == 1:
                rec._add(Line(now, self.service, self.id, who, buf[:complete], self.peer))
            else:
                rec._add(_Block(now, self.service, self.id, who, buf[:complete], self.peer, count))
            return
        lines = buf[:complete - 1].split(b"\n")
        out: list[Line] = []
        for i, line in enumerate(lines):
            cut = (carried if i == 0 else 0) + max(0, len(line) - MAX_LINE)
            kept = self._past_refusals(Line(now, self.service, self.id, who,
                                            line[:MAX_LINE] + b"\n", self.peer), cut)
            for one in kept:
                if not self._room(who, len(one.raw), out):
                    self.skipped[who] += len(lines) - i - 1  # the rest of this chunk
                    rec._extend(out)
                    return
                out.append(one)
            if cut and kept:
                out.append(self._event_line(_("{0} more bytes of this line not kept").format(cut)))
        rec._extend(out)

    def _keeps_all(self, who: str, buf: bytes, count: int, size: int) -> bool:
        """True when the ``count`` lines in the first ``size`` bytes of ``buf`` are all kept
        whole, as they are, and change no count of refused commands: no line is too long, this
        side's limits are not reached with them, and they are the client's while no refused
        commands are being counted, or the server's after an accepted command, none of them a
        refusal."""
        rec = self.recorder
        if (self._kept[who] + count > rec.per_connection
                or self._kept_bytes[who] + size > rec.per_connection_bytes
                or _has_long_line(buf, size)):
            return False
        if self._refusal is None:
            return True
        if who == CLIENT:
            return self.refusals_in_a_row < REFUSED_KEPT
        return self.refusals_in_a_row == 0 and self._refusal.search(b"\n" + buf, 0, size + 1) is None

    def _is_refusal(self, line: bytes) -> bool:
        return self._refusal is not None and self._refusal.match(b"\n" + line) is not None

    def _room(self, who: str, size: int, out: list[Line]) -> bool:
        """Count a line against this side's limits; False (and a marker, once) when full."""
        rec = self.recorder
        self._kept[who] += 1
        self._kept_bytes[who] += size
        if self._kept[who] <= rec.per_connection and self._kept_bytes[who] <= rec.per_connection_bytes:
            return True
        self.skipped[who] += 1
        side = "client" if who == CLIENT else "server"
        out.append(self._event_line(
            f"transcript limit of {rec.per_connection} {side} lines or "
            f"{rec.per_connection_bytes // 1024} KiB for this connection reached: "
            f"further {side} lines are counted, not kept"))
        return False

    def _past_refusals(self, line: Line, cut: int) -> list[Line]:
        """The lines to keep now, given the run of refused commands so far (see the class).

        While refused commands go on, a client line waits (``_held``) for the server's verdict:
        refused, it is counted and dropped; accepted, it is kept after a marker line that says
        how many were not kept."""
        if self._refusal is None:
            return [line]
        counting = self.refusals_in_a_row >= REFUSED_KEPT
        if line.who == CLIENT:
            if not counting:
                return [line]
            self._drop_held()
            self._held = line
            return []
        if line.raw.startswith((b"* ", b"+ ")):  # IMAP untagged data and continuations
            return [] if counting else [line]
        if self._is_refusal(line.raw):
            self.refusals_in_a_row += 1
            if counting:
                self._drop_held()
                self._refused_skipped[0] += 1
                self._refused_skipped[1] += len(line.raw) + cut
                return []
            if self.refusals_in_a_row == REFUSED_KEPT:
                return [line, self._event_line(_(
                    "{0} commands in a row were refused: further refused commands and their "
                    "answers are counted, not kept").format(REFUSED_KEPT))]
            return [line]
        return self._end_refusals() + [line]

    def _drop_held(self) -> None:
        if self._held is not None:
            self._refused_skipped[0] += 1
            self._refused_skipped[1] += len(self._held.raw)
            self._held = None

    def _end_refusals(self) -> list[Line]:
        """The marker of a run of refused commands that were not kept, and the held line."""
        lines, size = self._refused_skipped
        out = []
        if lines:
            out.append(self._event_line(_("{0} refused lines ({1} bytes) were not kept").format(
                lines, size)))
        if self._held is not None:
            out.append(self._held)
        self._refused_skipped, self._held, self.refusals_in_a_row = [0, 0], None, 0
        return out

    def client(self, data: bytes) -> None:
        """Bytes the client sent."""
        self._feed(CLIENT, data)

    def server(self, data: bytes) -> None:
        """Bytes the server sent."""
        self._feed(SERVER, data)

    def _event_line(self, text: str) -> Line:
        return Line(time.time(), self.service, self.id, EVENT, text.encode("utf-8", "replace"), self.peer)

    def event(self, text: str) -> None:
        self.recorder._add(self._event_line(text))

    def close(self, reason: str = "connection closed") -> None:
        if self.closed:
            return
        self.recorder._extend(self._end_refusals())
        for who in (CLIENT, SERVER):
            if self._partial[who]:  # a line without its ending, e.g. a client that hung up mid-line
                self.recorder._add(Line(time.time(), self.service, self.id, who, self._partial[who],
                                        self.peer))
                self._partial[who] = b""
                if self._partial_cut[who]:
                    self.event(_("{0} more bytes of this line not kept").format(self._partial_cut[who]))
        self.closed = True
        for who, n in self.skipped.items():
            if n:
                self.event(("{0} more client lines not kept" if who == CLIENT else
                            "{0} more server lines not kept").format(n))
        self.event(reason)


class Recorder:
    """All transcript lines of one lab, in order, within a memory budget.

    Keeps at most ``limit`` lines and about ``max_bytes`` bytes of memory (lines' text plus
    their bookkeeping); when either is reached the oldest lines go first (``dropped`` counts
    them, and the lab's log says so once). Each connection has limits of its own
    (``per_connection`` lines and ``per_connection_bytes`` bytes per side; see
    :class:`Connection`).
    """

    def __init__(self, limit: int = 200_000, per_connection: int = 20_000, *,
                 max_bytes: int = 6 * 1024 * 1024, per_connection_bytes: int = 2 * 1024 * 1024):
        # 6 MiB keeps some 50,000 lines of ordinary sessions: a grader's run of a notebook
        # needs a few thousand, and a class server holds one lab per student.
        self.limit = limit
        self.max_bytes = max_bytes
        self.per_connection = per_connection  # lines kept per connection and side
        self.per_connection_bytes = per_connection_bytes  # bytes kept per connection and side
        self._lines: deque[Line] = deque()
        self._bytes = 0
        self._count = 0  # lines kept (a block counts its lines)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._users: dict[int, str] = {}
        self.dropped = 0

    def open(self, service: str, peer: str = "") -> Connection:
        conn = Connection(self, service, next(self._ids), peer)
        conn.event("connection from {0}".format(peer) if peer else "connection opened")
        return conn

    def _add(self, entry: Line | _Block) -> None:
        self._extend([entry])

    def _extend(self, entries: list[Line | _Block]) -> None:
        """Add lines (and blocks of lines) under one lock."""
        if not entries:
            return
        count = sum(e.count if type(e) is _Block else 1 for e in entries)
        size = sum(len(e.raw) for e in entries) + ENTRY_OVERHEAD * len(entries)
        with self._lock:
            self._lines.extend(entries)
            self._count += count
            self._bytes += size
            first_drop = self.dropped == 0
            while self._lines and (self._count > self.limit or self._bytes > self.max_bytes):
                self._drop_oldest()
        if first_drop and self.dropped:
            log.warning("transcript memory limit reached (%d lines, %d MiB): the oldest lines are "
                        "dropped from now on", self.limit, self.max_bytes // (1024 * 1024))

    def _drop_oldest(self) -> None:
        """Drop the oldest line, or as many of the oldest block's first lines as the limits
        need (the rest of the block stays)."""
        old = self._lines[0]
        if type(old) is not _Block:
            self._lines.popleft()
            self._count -= 1
            self._bytes -= len(old.raw) + ENTRY_OVERHEAD
            self.dropped += 1
            return
        lines_over, bytes_over = self._count - self.limit, self._bytes - self.max_bytes
        cut, n = 0, 0
        while n < old.count and (n < lines_over or cut < bytes_over):
            cut = old.raw.index(b"\n", cut) + 1
            n += 1
        if n == old.count:
            self._lines.popleft()
            self._bytes -= ENTRY_OVERHEAD
        else:  # (an assignment: the sealed line store refuses appendleft)
            self._lines[0] = old._replace(raw=old.raw[cut:], count=old.count - n)
        self._count -= n
        self._bytes -= cut
        self.dropped += n

    @property
    def memory(self) -> int:
        """About how many bytes the kept lines take."""
        with self._lock:
            return self._bytes

    def lines(self) -> list[Line]:
        with self._lock:
            entries = list(self._lines)
        out: list[Line] = []
        for entry in entries:
            if type(entry) is _Block:
                out.extend(entry.lines())
            else:
                out.append(entry)
        return out

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()
            self._bytes = self._count = 0


class Transcript:
    """A list of transcript lines with filters and displays for notebooks."""

    def __init__(self, lines: Iterable[Line]):
        self.lines = list(lines)

    # ---- selection
    def filter(self, service: str | None = None, conn: int | None = None, who: str | None = None,
               since: float | None = None) -> "Transcript":
        """Lines of one service (``"smtp"`` matches every SMTP server), connection, side or time."""
        def keep(line: Line) -> bool:
            if service is not None and not (line.service == service
                                            or line.service.startswith(service + ":")):
                return False
            if conn is not None and line.conn != conn:
                return False
            if who is not None and line.who != who:
                return False
            return since is None or line.time >= since
        return Transcript(l for l in self.lines if keep(l))

    def connections(self) -> list[int]:
        """Connection numbers in the order they appeared."""
        return list(dict.fromkeys(l.conn for l in self.lines))

    def sessions(self) -> list["Transcript"]:
        return [self.filter(conn=c) for c in self.connections()]

    def client_lines(self) -> list[str]:
        return [l.text for l in self.lines if l.who == CLIENT]

    def server_lines(self) -> list[str]:
        return [l.text for l in self.lines if l.who == SERVER]

    def client_bytes(self) -> bytes:
        """Everything the client(s) sent, byte for byte."""
        return b"".join(l.raw for l in self.lines if l.who == CLIENT)

    def answer_to(self, command: str) -> str:
        """The first line the server answered to the client's first ``command`` (``"DELE"``;
        IMAP's tag is skipped), or "" when no such command was sent or answered."""
        asked = None
        for line in self.lines:
            if asked is None:
                if line.who == CLIENT and _command(line) == command.upper():
                    asked = line.conn
            elif line.who == SERVER and line.conn == asked:
                return line.text
        return ""

    def last(self, sent: str | None = None) -> "Transcript":
        """The most recent connection only; with ``sent``, the most recent one in which the
        client sent a line holding that text (a notebook's check finds its own session even when
        another one ran after it, and none when its session has not run yet)."""
        conns = self.connections()
        if sent is not None:
            asked = {l.conn for l in self.lines if l.who == CLIENT and sent in l.text}
            conns = [c for c in conns if c in asked]
        return self.filter(conn=conns[-1]) if conns else Transcript([])

    # ---- sequence protocol
    def __iter__(self) -> Iterator[Line]:
        return iter(self.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i):
        return Transcript(self.lines[i]) if isinstance(i, slice) else self.lines[i]

    # ---- display
    def __str__(self) -> str:
        out, current = [], None
        for l in self.lines:
            if l.conn != current:
                current = l.conn
                out.append(_("=== {service} connection {conn} ({peer}) ===").format(
                    service=l.service, conn=l.conn, peer=l.peer))
            out.append(str(l))
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"<Transcript {len(self.lines)} lines, {len(self.connections())} connections>"

    def diagram(self, *, fold: int = 3, max_arrows: int = 120, width: int = 72,
                skip: Iterable[str] | None = None) -> "SequenceDiagram":
        """These lines as a mermaid sequence diagram (renders in JupyterLab; ``.text`` is mermaid).

        Consecutive lines from one side become one arrow showing the first ``fold`` lines (a
        multi-line reply, or a message's text); long lines are cut to ``width`` characters.
        Exchanges whose command is in ``skip`` (by default :data:`ROUTINE`: CAPABILITY, STATUS,
        ID, ...) are not drawn: one note per run of them says which; ``skip=()`` draws all.
        """
        return SequenceDiagram.from_lines(self.lines, fold=fold, max_arrows=max_arrows, width=width,
                                          skip=ROUTINE if skip is None else skip)

    def _repr_html_(self) -> str:
        import html
        colours = {CLIENT: "#0b5394", SERVER: "#38761d", EVENT: "#888888"}
        rows, current = [], None
        for l in self.lines:
            if l.conn != current:
                current = l.conn
                rows.append(f'<tr><td colspan="3" style="background:#eee;text-align:left">'
                            + html.escape(_("{service}, connection {conn}").format(
                                service=l.service, conn=l.conn))
                            + f" {html.escape(l.peer)}</td></tr>")
            stamp = time.strftime("%H:%M:%S", time.localtime(l.time)) + f".{int(l.time * 1000) % 1000:03d}"
            side = {CLIENT: _("client"), SERVER: _("server"), EVENT: ""}[l.who]
            text = shown_event(l.text) if l.who == EVENT else l.text
            rows.append(f'<tr style="color:{colours[l.who]}"><td style="color:#999">{stamp}</td>'
                        f"<td>{side}</td><td style=\"text-align:left;font-family:monospace;"
                        f"white-space:pre-wrap\">{html.escape(text)}</td></tr>")
        return "<table>" + "".join(rows) + "</table>"


# ---------------------------------------------------------------------------- diagrams

# Commands a client sends out of routine, whose answers teach little in a picture: a webmail asks
# for CAPABILITY three times and STATUS once per folder on every page.
ROUTINE = frozenset({"CAPABILITY", "STATUS", "ID", "NAMESPACE", "ENABLE"})


def _command(line: Line) -> str:
    """The command word of a client line (IMAP lines start with a tag)."""
    words = line.text.split()
    if "imap" in line.service.split(":", 1)[0]:
        words = words[1:]
    return words[0].upper() if words else ""


def _skipped(lines: list[Line], skip: frozenset) -> set[int]:
    """Indexes of the lines of exchanges whose command is in ``skip``: the client's line and
    the server's lines after it on the same connection, up to the client's next line."""
    hidden: set[int] = set()
    skipping: dict[int, bool] = {}
    for i, l in enumerate(lines):
        if l.who == CLIENT:
            skipping[l.conn] = _command(l) in skip
        if l.who != EVENT and skipping.get(l.conn):
            hidden.add(i)
    return hidden

def _mermaid_text(text: str) -> str:
    """Text safe inside a mermaid message or label (mermaid reads ; # < > itself)."""
    codes = {"#": "#35;", ";": "#59;", "<": "#60;", ">": "#62;", '"': "#quot;"}
    return re.sub(r'[#;<>"]', lambda m: codes[m.group()], text.replace("\t", " "))


def _client_label(lines: list[Line]) -> str | None:
    """A name for a connection's client: who logged in, or the host name it greeted with."""
    import base64

    helo = None
    for l in lines:
        if l.who != CLIENT:
            continue
        words = l.text.split()
        if not words:
            continue
        cmd = words[0].upper()
        try:
            if cmd in ("EHLO", "HELO") and len(words) > 1 and helo is None:
                helo = words[1]
            elif cmd == "USER" and len(words) > 1:
                return _("{0}'s client").format(words[1])
            elif len(words) > 2 and words[1].upper() == "LOGIN":
                return _("{0}'s client").format(words[2].strip(chr(34)))
            elif cmd == "AUTH" and len(words) > 2 and words[1].upper() == "PLAIN":
                parts = base64.b64decode(words[2]).split(b"\0")
                return _("{0}'s client").format(parts[-2].decode())
            elif len(words) > 3 and words[1].upper() == "AUTHENTICATE" and words[2].upper() == "PLAIN":
                parts = base64.b64decode(words[3]).split(b"\0")
                return _("{0}'s client").format(parts[-2].decode())
        except Exception:
            continue
    if helo and not helo.startswith("["):
        return helo
    return None


class SequenceDiagram:
    """A mermaid sequence diagram of transcript lines; displays itself in JupyterLab."""

    def __init__(self, text: str, arrows: int = 0):
        self.text = text
        self.arrows = arrows

    @classmethod
    def from_lines(cls, lines: Iterable[Line], *, fold: int = 3, max_arrows: int = 120,
                   width: int = 72, skip: Iterable[str] = ()) -> "SequenceDiagram":
        lines = list(lines)
        hidden = _skipped(lines, frozenset(c.upper() for c in skip))
        by_conn: dict[int, list[Line]] = {}
        for l in lines:
            by_conn.setdefault(l.conn, []).append(l)
        names: dict[str, str] = {}  # label -> participant id

        def pid(label: str) -> str:
            if label not in names:
                names[label] = f"P{len(names) + 1}"
            return names[label]

        ends: dict[int, tuple[str, str]] = {}
        for conn, conn_lines in by_conn.items():
            service = conn_lines[0].service
            proto, _colon, domain = service.partition(":")
            host = "webmail" if proto.startswith(("http", "webmail")) else "mail"
            server = f"{host}.{domain}" if domain else service
            client = _client_label(conn_lines) or _("client")
            if client == server:
                client += " (" + _("client") + ")"
            ends[conn] = (pid(client), pid(server))

        def cut(text: str) -> str:
            return text if len(text) <= width else text[: width - 1] + "\u2026"

        body: list[str] = []
        arrows = 0
        i = 0
        seen_conn: set[int] = set()
        # A run of skipped exchanges on one connection becomes one note: connection -> (index
        # of that note in body, the commands in it).
        folded: dict[int, tuple[int, list[str]]] = {}

        def close_fold(conn: int) -> None:
            at, commands = folded.pop(conn)
            counts = {cmd: commands.count(cmd) for cmd in dict.fromkeys(commands)}
            names = ", ".join(cmd if n == 1 else f"{cmd} \u00d7{n}" for cmd, n in counts.items())
            body[at] += _mermaid_text(_("not drawn: {0}").format(names))

        while i < len(lines):
            l = lines[i]
            c, s = ends[l.conn]
            if l.conn not in seen_conn:
                seen_conn.add(l.conn)
                body.append(f"    Note over {c},{s}: " + _mermaid_text(
                    _("{service} connection {conn}").format(service=l.service, conn=l.conn)))
            if i in hidden:
                if l.who == CLIENT:
                    if l.conn not in folded:
                        body.append(f"    Note over {c},{s}: ")
                        folded[l.conn] = (len(body) - 1, [])
                    folded[l.conn][1].append(_command(l))
                i += 1
                continue
            if l.who != EVENT and l.conn in folded:
                close_fold(l.conn)
            if l.who == EVENT:
                if not l.text.startswith("connection from") and l.text != "connection opened":
                    body.append(f"    Note over {c},{s}: {_mermaid_text(cut(l.text))}")
                i += 1
                continue
            j = i
            while (j < len(lines) and lines[j].who == l.who and lines[j].conn == l.conn
                   and j not in hidden):
                j += 1
            run = [x.text for x in lines[i:j]]
            shown = [_mermaid_text(cut(t)) or " " for t in run[:fold]]
            if len(run) > fold:
                shown.append(_mermaid_text(_("(+{0} more lines)").format(len(run) - fold)))
            if arrows >= max_arrows:
                remaining = sum(1 for x in lines[i:] if x.who != EVENT)
                body.append(f"    Note over {c},{s}: " + _mermaid_text(
                    _("... {0} more lines not drawn").format(remaining)))
                break
            arrow = f"{c}->>{s}" if l.who == CLIENT else f"{s}-->>{c}"
            body.append(f"    {arrow}: " + "<br/>".join(shown))
            arrows += 1
            i = j
        for conn in list(folded):
            close_fold(conn)
        head = ["sequenceDiagram"] + [f"    participant {p} as {_mermaid_text(label)}"
                                      for label, p in names.items()]
        return cls("\n".join(head + body), arrows)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<SequenceDiagram {self.arrows} arrows>"

    def _repr_markdown_(self) -> str:
        return "```mermaid\n" + self.text + "\n```"
