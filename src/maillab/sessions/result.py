"""What a session cell shows: the conversation, each answer explained, maillab's remarks.

A :class:`SessionResult` is a list of exchanges (lines the client sent, the server's answer)
and events (connected, TLS started, closed). It renders as HTML for JupyterLab (client and
server coloured apart, inline styles so a saved, untrusted notebook keeps them) and as plain
text for nbconvert and nbgrader (``C:``/``S:`` lines, RFC style). An explanation is written out
the first time it comes in a cell; the same meaning again is shown on hover only, so that a
session of many ``250`` replies stays short.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from ..i18n import _

__all__ = ["Exchange", "Event", "SessionResult"]

MAX_SHOWN = 60  # lines of one answer shown; a long message or page shows its start and end
SHOWN_AT_END = 5


@dataclass
class Exchange:
    """Lines the client sent and what the server answered (either may be empty)."""

    sent: list[str] = field(default_factory=list)
    reply: list[str] = field(default_factory=list)
    explanation: str | None = None  # what the answer means, in one line
    meaning: str | None = None  # the explanation without the server's own words (they come last)
    notes: list[str] = field(default_factory=list)  # maillab's remarks
    added: set[int] = field(default_factory=set)  # indexes of sent lines maillab added
    encrypted: bool = False  # sent and answered inside TLS
    line_meanings: dict[int, str] = field(default_factory=dict)  # reply line -> what it means


@dataclass
class Event:
    """Something that happened to the connection (not a line on the wire)."""

    text: str
    kind: str = "info"  # "info", "tls", "error"


class SessionResult:
    """The evidence of one session cell; shown in the notebook, usable from Python."""

    def __init__(self, protocol: str, name: str | None = None):
        self.protocol = protocol
        self.name = name  # the named session it belongs to, if any
        self.items: list[Exchange | Event] = []
        self.error: str | None = None  # the one-line hint when the session could not go on
        self.open = False  # the connection is still open after the cell (a named session)
        self.seconds = 0.0

    # ---- building
    def event(self, text: str, kind: str = "info") -> None:
        self.items.append(Event(text, kind))

    def fail(self, hint: str) -> None:
        """The session cannot go on; ``hint`` says in one line what to do."""
        if self.error is None:
            self.error = hint
        self.items.append(Event(hint, "error"))

    # ---- reading
    @property
    def exchanges(self) -> list[Exchange]:
        return [item for item in self.items if isinstance(item, Exchange)]

    @property
    def replies(self) -> list[tuple[list[str], list[str]]]:
        """``[(lines sent, lines answered), ...]`` in order (the greeting has no lines sent)."""
        return [(x.sent, x.reply) for x in self.exchanges]

    def reply_to(self, prefix: str) -> list[str]:
        """The answer to the first exchange whose first sent line starts with ``prefix``
        (case-insensitive); ``[]`` if there is none."""
        for x in self.exchanges:
            if x.sent and x.sent[0].upper().startswith(prefix.upper()):
                return x.reply
        return []

    @property
    def client_lines(self) -> list[str]:
        return [line for x in self.exchanges for line in x.sent]

    @property
    def server_lines(self) -> list[str]:
        return [line for x in self.exchanges for line in x.reply]

    @property
    def notes(self) -> list[str]:
        return [note for x in self.exchanges for note in x.notes]

    @property
    def events(self) -> list[str]:
        return [item.text for item in self.items if isinstance(item, Event)]

    @property
    def ok(self) -> bool:
        return self.error is None

    # ---- display
    @property
    def text(self) -> str:
        out, explained = [], set()
        for item in self.items:
            if isinstance(item, Event):
                out.append(("!! " if item.kind == "error" else "-- ") + item.text)
                continue
            out += [f"C: {line}".rstrip() for line in item.sent]
            out += [f"S: {line}".rstrip() for line in _shortened(item.reply)]
            shown = _explanation_to_show(item, explained)
            if shown:
                out.append(f"   = {shown}")
            out += [f"   ! {note}" for note in item.notes]
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.text or f"<{self.protocol} session: nothing was said>"

    def _repr_html_(self) -> str:
        explained: set[str] = set()
        rows = [_html_item(item, explained) for item in self.items]
        # No scroll box of its own: JupyterLab scrolls long outputs, and a printed page shows all.
        return f'<div class="maillab-session" style="font-size:13px;line-height:1.35">{"".join(rows)}</div>'


# Inline styles (not a style sheet): JupyterLab keeps them when a saved notebook is reopened.
_ROW = "font-family:monospace;white-space:pre-wrap;word-break:break-all;padding:0 6px;margin:0"
_CLIENT = _ROW + ";background:#eaf2fb;color:#0b4a8a"
_SERVER = _ROW + ";background:#edf7e8;color:#2d6317;padding-left:2.5em"
_SIDE = "display:inline-block;min-width:5.5em;font-weight:bold;font-family:sans-serif;font-size:11px"
_EXPLAIN = ("font-family:sans-serif;color:#333;background:#fff8d6;border-left:3px solid #e0b400;"
            "padding:1px 6px;margin:0 0 3px 2.5em")
_NOTE = ("font-family:sans-serif;color:#6b3a00;background:#ffeedd;border-left:3px solid #e07000;"
         "padding:1px 6px;margin:0 0 3px 2.5em")
_EVENT = "font-family:sans-serif;color:#777;font-style:italic;padding:1px 6px;margin:0"
_ERROR = "font-family:sans-serif;color:#b00020;font-weight:bold;padding:2px 6px;margin:0"
_ADDED = "font-family:sans-serif;font-size:11px;color:#888;font-style:italic"
_TLS = ("font-family:sans-serif;font-size:9px;font-weight:bold;border:1px solid;border-radius:3px;"
        "padding:0 2px;margin:0 4px")


def _tls_badge() -> str:
    return f'<span style="{_TLS}" title="{_esc(_("encrypted (TLS)"))}">TLS</span>'


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _shortened(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_SHOWN:
        return lines
    keep = MAX_SHOWN - SHOWN_AT_END - 1
    hidden = len(lines) - keep - SHOWN_AT_END
    return (lines[:keep] + [_("... {0} more lines ...").format(hidden)] + lines[-SHOWN_AT_END:])


def _explanation_to_show(item: Exchange, explained: set[str]) -> str | None:
    """The explanation written under an answer: in full the first time its meaning comes in
    the cell; after that only the server's own words, if it said something new (the meaning
    again is on hover)."""
    if not item.explanation:
        return None
    meaning = item.meaning or item.explanation
    if meaning not in explained:
        explained.add(meaning)
        return item.explanation
    said = item.explanation[len(meaning):].strip() if item.explanation.startswith(meaning) else ""
    if said and said not in explained:
        explained.add(said)
        return said
    return None


def _html_item(item: Exchange | Event, explained: set[str]) -> str:
    """One exchange or event; an explanation already shown in this cell is shown on hover only."""
    if isinstance(item, Event):
        style = _ERROR if item.kind == "error" else _EVENT
        mark = _tls_badge() if item.kind == "tls" else ""
        return f'<div style="{style}">{mark}{_esc(item.text)}</div>'
    lock = _tls_badge() if item.encrypted else ""  # a badge, not an emoji: fonts may lack it
    rows = []
    you = _esc(_("client") + " \u2192") + lock
    server = _esc("\u2190 " + _("server")) + lock
    for index, line in enumerate(item.sent):
        text = _esc(line) if line else (f'<span style="color:#999" title="{_esc(_("empty line"))}">'
                                        "\u23ce</span>")
        added = (f' <span style="{_ADDED}">{_esc(_("(added by maillab)"))}</span>'
                 if index in item.added else "")
        rows.append(f'<div style="{_CLIENT}"><span style="{_SIDE}">{you}</span>{text}{added}</div>')
    shown = _shortened(item.reply)
    for index, line in enumerate(shown):
        meaning = item.line_meanings.get(index) if shown is item.reply else None
        meaning = meaning or item.explanation
        title = f' title="{_esc(meaning)}"' if meaning else ""
        rows.append(f'<div style="{_SERVER}"{title}><span style="{_SIDE}">{server}</span>'
                    f"{_esc(line)}</div>")
    shown = _explanation_to_show(item, explained)
    if shown:
        rows.append(f'<div style="{_EXPLAIN}">{_esc(shown)}</div>')
    rows += [f'<div style="{_NOTE}">{_esc(note)}</div>' for note in item.notes]
    return "".join(rows)
