"""A wiretap: what someone watching the network would see of a session.

The lab's event loop keeps a copy of the bytes of every connection its servers accept, exactly
as they crossed the network (``lab.observed()``, see ``maillab.wire``). A :class:`Wiretap` shows
that copy for the connections to one service made while it was open, like Wireshark's "Follow
TCP stream": readable commands and passwords on the clear-text ports, unreadable bytes under TLS.

    with Wiretap(lab, "pop3") as tap:
        client = poplib.POP3("127.0.0.1", tap.port)
        ...
    tap            # displays what the observer saw
"""

from __future__ import annotations

import time

from ..i18n import _
from ._common import STYLE, esc

__all__ = ["Wiretap"]

CLIENT, SERVER = "C", "S"


class Wiretap:
    """The wire bytes of the connections to one lab service made while the tap was open."""

    def __init__(self, lab, service: str = "smtp", domain: str | None = None, *,
                 limit: int = 1 << 20):
        self.lab = lab
        self.service = service
        self.domain = domain or lab.domains[0]
        self.host = lab.host
        self.port = lab.port(service, domain)  # clients connect here, as always
        self.limit = limit
        self.opened = time.time()
        self.closed_at: float | None = None

    # ---- life cycle
    def close(self) -> None:
        """Stop watching: connections made after this are not shown."""
        if self.closed_at is None:
            self.closed_at = time.time()

    def __enter__(self) -> "Wiretap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self.closed_at is None and getattr(self.lab, "running", False)

    @property
    def chunks(self) -> list[tuple[str, bytes, float, int]]:
        """(side, bytes, time, connection) for every piece the observer saw, in order."""
        seen = self.lab.observed(f"{self.service}:{self.domain}")
        until = self.closed_at if self.closed_at is not None else float("inf")
        out, size = [], 0
        for c in seen.connections:
            if not self.opened - 0.5 <= c.wire.opened <= until:
                continue
            for t, side, data in c.wire.chunks:
                if size >= self.limit:
                    return out
                data = data[: self.limit - size]
                size += len(data)
                out.append((side, data, t, c.conn))
        out.sort(key=lambda chunk: chunk[2])
        return out

    # ---- what the observer saw
    def captured(self, side: str | None = None) -> bytes:
        """Every byte seen (of one side: "C" client, "S" server), in order."""
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
        for side, data, _t, _c in self.chunks:
            arrow = "C->S" if side == CLIENT else "S->C"
            out.append(f"[{arrow} {len(data)} bytes] {_printable(data[:width]).rstrip()}")
        return "\n".join(out)

    def __repr__(self) -> str:
        return (f"<Wiretap {self.service}:{self.domain} port {self.port}: "
                f"{len(self.captured())} bytes seen, {self.readable():.0%} readable>")

    def _repr_html_(self) -> str:
        chunks = self.chunks
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
