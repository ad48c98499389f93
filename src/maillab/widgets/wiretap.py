"""A wiretap: what someone watching the network would see of a session.

:class:`Wiretap` listens on a port of its own and passes every byte on to one of the lab's
services, keeping a copy, like a network observer (or Wireshark's "Follow TCP stream"). Point a
client at ``tap.port`` instead of the service's port; afterwards the tap shows what crossed the
wire: readable commands and passwords on the clear-text ports, unreadable bytes under TLS.

    with Wiretap(lab, "pop3") as tap:
        client = poplib.POP3("127.0.0.1", tap.port)
        ...
    tap            # displays what the observer saw
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

from ..i18n import _
from ._common import STYLE, esc

__all__ = ["Wiretap"]

CLIENT, SERVER = "C", "S"


class Wiretap:
    """Relays connections from ``self.port`` to a lab service and records the raw bytes."""

    def __init__(self, lab=None, service: str = "smtp", domain: str | None = None, *,
                 port: int | None = None, host: str = "127.0.0.1", limit: int = 1 << 20):
        self.lab = lab
        self.service = service
        self.target = (host, port if port is not None else lab.port(service, domain))
        self.limit = limit
        self.chunks: list[tuple[str, bytes, float, int]] = []  # (side, bytes, time, connection)
        self._lock = threading.Lock()
        self._size = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maillab-wiretap", daemon=True)
        self._thread.start()

    # ---- life cycle
    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def __enter__(self) -> "Wiretap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # ---- the relay
    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        peers: dict[socket.socket, tuple[socket.socket, str, int]] = {}
        count = 0
        try:
            draining = 0
            while True:
                if self._stop.is_set() or (self.lab is not None
                                           and not getattr(self.lab, "running", True)):
                    draining += 1  # pass on what is still in flight, then stop
                    if draining > 5:
                        break
                events = sel.select(timeout=0.1 if not draining else 0.02)
                if draining and not events:
                    break
                for key, _mask in events:
                    if key.data is None:  # a new client
                        try:
                            client, _addr = self._listener.accept()
                            server = socket.create_connection(self.target, timeout=5)
                        except OSError:
                            continue
                        count += 1
                        for s in (client, server):
                            s.setblocking(False)
                            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        peers[client] = (server, CLIENT, count)
                        peers[server] = (client, SERVER, count)
                        sel.register(client, selectors.EVENT_READ, "c")
                        sel.register(server, selectors.EVENT_READ, "s")
                        continue
                    sock = key.fileobj
                    if sock not in peers:
                        continue
                    other, side, conn = peers[sock]
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        self._record(side, data, conn)
                        try:
                            other.setblocking(True)
                            other.sendall(data)
                            other.setblocking(False)
                            continue
                        except OSError:
                            pass
                    for s in (sock, other):  # one side closed: close both
                        peers.pop(s, None)
                        try:
                            sel.unregister(s)
                        except (KeyError, ValueError):
                            pass
                        s.close()
        finally:
            for s in list(peers):
                s.close()
            sel.close()
            self._listener.close()

    def _record(self, side: str, data: bytes, conn: int) -> None:
        with self._lock:
            if self._size >= self.limit:
                return
            data = data[: self.limit - self._size]
            self._size += len(data)
            self.chunks.append((side, data, time.time(), conn))

    # ---- what the observer saw
    def captured(self, side: str | None = None) -> bytes:
        """Every byte seen (of one side: "C" client, "S" server), in order."""
        with self._lock:
            return b"".join(d for s, d, _t, _c in self.chunks if side in (None, s))

    def readable(self) -> float:
        """Share of the captured bytes that are readable text (1.0: plain text, ~0.4: encrypted)."""
        data = self.captured()
        if not data:
            return 0.0
        return sum(1 for b in data if 32 <= b < 127 or b in (9, 10, 13)) / len(data)

    def contains(self, text: str | bytes) -> bool:
        """Could the observer read this (a password, say) on the wire?"""
        return (text.encode() if isinstance(text, str) else text) in self.captured()

    def text(self, width: int = 400) -> str:
        """The captured bytes as an observer would print them: unreadable bytes as dots."""
        out = []
        with self._lock:
            chunks = list(self.chunks)
        for side, data, _t, _c in chunks:
            arrow = "C->S" if side == CLIENT else "S->C"
            out.append(f"[{arrow} {len(data)} bytes] {_printable(data[:width]).rstrip()}")
        return "\n".join(out)

    def __repr__(self) -> str:
        return (f"<Wiretap {self.host}:{self.port} -> {self.target[0]}:{self.target[1]} "
                f"{len(self.captured())} bytes seen, {self.readable():.0%} readable>")

    def _repr_html_(self) -> str:
        with self._lock:
            chunks = list(self.chunks)
        rows = []
        for side, data, _t, conn in chunks[:200]:
            cls = "ml-C" if side == CLIENT else "ml-S"
            label = (_("client") + " \u2192") if side == CLIENT else ("\u2190 " + _("server"))
            shown = _printable(data[:600]) + (" \u2026" if len(data) > 600 else "")
            rows.append(f'<tr class="{cls}"><td class="ml-side">{esc(label)}<br>'
                        f'<span class="ml-time">{len(data)} {esc(_("bytes"))}</span></td>'
                        f'<td class="ml-text">{esc(shown)}</td></tr>')
        summary = _("What an observer on the network saw: {0} bytes, {1:.0%} of them readable "
                    "text.").format(len(self.captured()), self.readable())
        return (f'<div class="maillab">{STYLE}<p class="ml-note">{esc(summary)}</p>'
                f'<table class="ml-lines">{"".join(rows)}</table></div>')


def _printable(data: bytes) -> str:
    """Readable ASCII as it is, line ends as \u21b5, every other byte as a dot."""
    out = []
    for b in data:
        if b == 10:
            out.append("\u21b5\n")
        elif b == 13:
            continue
        elif 32 <= b < 127 or b == 9:
            out.append(chr(b))
        else:
            out.append("\u00b7")
    return "".join(out)
