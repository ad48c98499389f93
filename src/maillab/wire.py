"""What a network observer would see: the bytes on the wire, before any decryption.

A transcript shows what client and server *said* (after TLS is taken off). To show learners why
TLS matters, the lab also keeps the bytes exactly as they crossed the network. The lab's event
loop (:class:`TappingEventLoop`) wraps every accepted socket in a :class:`TapSocket` that copies
what it receives and sends into a :class:`WireLog`, so even the TLS handshake is captured. Only
the first ``WireLog.limit`` bytes of each direction are kept, with counts of the rest.

``lab.observed("pop3s")`` shows these bytes for the lab's connections: readable words on the
clear-text ports, random-looking bytes on the TLS ports.
"""

from __future__ import annotations

import asyncio
import string
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["WireLog", "TapSocket", "TappingEventLoop", "Observed"]

CLIENT, SERVER = "C", "S"


@dataclass
class WireLog:
    """The raw bytes of one TCP connection as an observer on the network sees them."""

    peer: str
    opened: float = field(default_factory=time.time)
    limit: int = 64 * 1024  # bytes kept per direction
    chunks: list[tuple[float, str, bytes]] = field(default_factory=list)
    total: dict[str, int] = field(default_factory=lambda: {CLIENT: 0, SERVER: 0})

    def add(self, who: str, data: bytes | memoryview) -> None:
        """Count ``data``; copy it while this direction has room (past it, only the count)."""
        kept = self.total[who]
        self.total[who] += len(data)
        if kept < self.limit:
            self.chunks.append((time.time(), who, bytes(data[: self.limit - kept])))

    def bytes_from(self, who: str) -> bytes:
        return b"".join(d for _t, w, d in self.chunks if w == who)


class TapSocket:
    """A socket that copies what it receives and sends into a WireLog (asyncio calls these)."""

    __slots__ = ("_sock", "wire")

    def __init__(self, sock, wire: WireLog):
        self._sock = sock
        self.wire = wire

    def recv(self, n, *args):
        data = self._sock.recv(n, *args)
        if data:
            self.wire.add(CLIENT, data)
        return data

    def recv_into(self, buffer, nbytes=0, *args):
        n = self._sock.recv_into(buffer, nbytes, *args)
        if n:
            self.wire.add(CLIENT, memoryview(buffer)[:n])
        return n

    def send(self, data, *args):
        n = self._sock.send(data, *args)
        if n:
            self.wire.add(SERVER, memoryview(data)[:n])
        return n

    def sendmsg(self, buffers, *args):
        n = self._sock.sendmsg(buffers, *args)
        left = n
        for b in buffers:
            if left <= 0:
                break
            piece = memoryview(b).cast("B")[:left]
            self.wire.add(SERVER, piece)
            left -= len(piece)
        return n

    def __getattr__(self, name):
        return getattr(self._sock, name)


class TappingEventLoop(asyncio.SelectorEventLoop):
    """The lab's event loop: every server-side connection goes through a TapSocket.

    It hooks the two places where asyncio turns an accepted socket into a transport (plain and
    TLS). These are internal methods of asyncio; their arguments are passed on untouched, and
    if a future Python renames them, connections simply go untapped.
    """

    def __init__(self, keep: int = 2000):
        super().__init__()
        self.keep = keep
        self._wires: OrderedDict[tuple[str, float], WireLog] = OrderedDict()
        self._wires_lock = threading.Lock()

    def _tap(self, sock):
        try:
            peer = sock.getpeername()
            peer = f"{peer[0]}:{peer[1]}"
        except (OSError, IndexError, TypeError):
            return sock
        wire = WireLog(peer)
        with self._wires_lock:
            self._wires[(peer, wire.opened)] = wire
            while len(self._wires) > self.keep:
                self._wires.popitem(last=False)
        return TapSocket(sock, wire)

    def _make_socket_transport(self, sock, *args, **kwargs):
        if kwargs.get("server") is not None:  # accepted by one of our servers
            sock = self._tap(sock)
        return super()._make_socket_transport(sock, *args, **kwargs)

    def _make_ssl_transport(self, rawsock, *args, **kwargs):
        if kwargs.get("server") is not None and kwargs.get("server_side"):
            rawsock = self._tap(rawsock)
        return super()._make_ssl_transport(rawsock, *args, **kwargs)

    def wire_for(self, peer: str, at: float) -> WireLog | None:
        """The connection from ``peer`` that was open at time ``at``."""
        with self._wires_lock:
            candidates = [w for (p, opened), w in self._wires.items() if p == peer and opened <= at + 0.5]
        return max(candidates, key=lambda w: w.opened) if candidates else None


def _dump(data: bytes, width: int = 16, limit: int = 512) -> str:
    """Hex and printable characters, like a packet capture tool shows them."""
    rows = []
    for i in range(0, min(len(data), limit), width):
        chunk = data[i:i + width]
        hexpart = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if chr(b) in string.printable and b >= 0x20 else "." for b in chunk)
        rows.append(f"{hexpart:<{width * 3}} {text}")
    if len(data) > limit:
        rows.append(f"... {len(data) - limit} more bytes")
    return "\n".join(rows)


def looks_readable(data: bytes) -> bool:
    """True if most bytes are printable ASCII: what an eavesdropper could simply read."""
    if not data:
        return True
    printable = sum(1 for b in data if 0x20 <= b < 0x7F or b in (9, 10, 13))
    return printable / len(data) > 0.9


@dataclass
class ObservedConnection:
    service: str
    conn: int
    wire: WireLog


class Observed:
    """The wire view of some of the lab's connections, for notebooks."""

    def __init__(self, connections: list[ObservedConnection]):
        self.connections = connections

    def readable(self) -> bool:
        """Could an observer read every connection here as text?"""
        return all(looks_readable(c.wire.bytes_from(CLIENT)) and looks_readable(c.wire.bytes_from(SERVER))
                   for c in self.connections)

    def client_bytes(self) -> bytes:
        return b"".join(c.wire.bytes_from(CLIENT) for c in self.connections)

    def __str__(self) -> str:
        out = []
        for c in self.connections:
            w = c.wire
            out.append(f"=== {c.service} connection {c.conn} ({w.peer}): client sent "
                       f"{w.total[CLIENT]} bytes, server sent {w.total[SERVER]} bytes ===")
            for _t, who, data in w.chunks:
                out.append(f"{'client' if who == CLIENT else 'server'} -> {len(data)} bytes")
                out.append(_dump(data, limit=128))
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"<Observed {len(self.connections)} connections>"

    def _repr_html_(self) -> str:
        import html  # (imported here: every lab start loads this module, few show it)
        return "<pre>" + html.escape(str(self)) + "</pre>"
