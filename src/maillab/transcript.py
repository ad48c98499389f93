"""Transcripts: every line each client and server said, per service and connection.

Servers record raw bytes as they cross the socket (``Connection.client(data)`` and
``Connection.server(data)``); the recorder splits them into lines. Learners read transcripts
in notebooks; graders use them as evidence of what the learner's code really sent.
"""

from __future__ import annotations

import html
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

__all__ = ["Recorder", "Connection", "Line", "Transcript"]

CLIENT, SERVER, EVENT = "C", "S", "*"


@dataclass(frozen=True)
class Line:
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
        arrow = {CLIENT: "C:", SERVER: "S:", EVENT: "--"}[self.who]
        return f"{arrow} {self.text}"


class Connection:
    """The recorder's handle for one connection. Thread-safe through the recorder's lock."""

    def __init__(self, recorder: "Recorder", service: str, conn_id: int, peer: str):
        self.recorder = recorder
        self.service = service
        self.id = conn_id
        self.peer = peer
        self.user: str | None = None  # set by the server after a successful login
        self._partial = {CLIENT: b"", SERVER: b""}
        self.closed = False

    def _feed(self, who: str, data: bytes) -> None:
        buf = self._partial[who] + data
        lines = buf.split(b"\n")
        self._partial[who] = lines.pop()
        now = time.time()
        for line in lines:
            self.recorder._add(Line(now, self.service, self.id, who, line + b"\n", self.peer))

    def client(self, data: bytes) -> None:
        """Bytes the client sent."""
        self._feed(CLIENT, data)

    def server(self, data: bytes) -> None:
        """Bytes the server sent."""
        self._feed(SERVER, data)

    def event(self, text: str) -> None:
        self.recorder._add(Line(time.time(), self.service, self.id, EVENT, text.encode(), self.peer))

    def close(self, reason: str = "connection closed") -> None:
        if self.closed:
            return
        for who in (CLIENT, SERVER):
            if self._partial[who]:  # a line without its ending, e.g. a client that hung up mid-line
                self.recorder._add(Line(time.time(), self.service, self.id, who, self._partial[who],
                                        self.peer))
                self._partial[who] = b""
        self.closed = True
        self.event(reason)


class Recorder:
    """All transcript lines of one lab, in order. Keeps at most ``limit`` lines (oldest go first)."""

    def __init__(self, limit: int = 200_000):
        self._lines: deque[Line] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._users: dict[int, str] = {}
        self.dropped = 0

    def open(self, service: str, peer: str = "") -> Connection:
        conn = Connection(self, service, next(self._ids), peer)
        conn.event(f"connection from {peer}" if peer else "connection opened")
        return conn

    def _add(self, line: Line) -> None:
        with self._lock:
            if len(self._lines) == self._lines.maxlen:
                self.dropped += 1
            self._lines.append(line)

    def lines(self) -> list[Line]:
        with self._lock:
            return list(self._lines)

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()


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

    def last(self) -> "Transcript":
        """The most recent connection only."""
        conns = self.connections()
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
                out.append(f"=== {l.service} connection {l.conn} ({l.peer}) ===")
            out.append(str(l))
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"<Transcript {len(self.lines)} lines, {len(self.connections())} connections>"

    def _repr_html_(self) -> str:
        colours = {CLIENT: "#0b5394", SERVER: "#38761d", EVENT: "#888888"}
        rows, current = [], None
        for l in self.lines:
            if l.conn != current:
                current = l.conn
                rows.append(f'<tr><td colspan="3" style="background:#eee;text-align:left">'
                            f"<b>{html.escape(l.service)}</b> connection {l.conn} "
                            f"{html.escape(l.peer)}</td></tr>")
            stamp = time.strftime("%H:%M:%S", time.localtime(l.time)) + f".{int(l.time * 1000) % 1000:03d}"
            side = {CLIENT: "client", SERVER: "server", EVENT: ""}[l.who]
            rows.append(f'<tr style="color:{colours[l.who]}"><td style="color:#999">{stamp}</td>'
                        f"<td>{side}</td><td style=\"text-align:left;font-family:monospace;"
                        f"white-space:pre-wrap\">{html.escape(l.text)}</td></tr>")
        return "<table>" + "".join(rows) + "</table>"
