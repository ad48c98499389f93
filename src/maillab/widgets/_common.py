"""What the widgets share: rendering transcript lines as HTML, and a small poller thread."""

from __future__ import annotations

import html
import threading
import time
from typing import Callable, Iterable

from ..i18n import _
from ..explain import explain
from ..transcript import shown_event

CLIENT, SERVER, EVENT = "C", "S", "*"

# One style sheet for every widget; scoped by the .maillab class so it cannot leak into the page.
STYLE = """<style>
.maillab table.ml-lines{border-collapse:collapse;width:100%;font-size:13px}
.maillab table.ml-lines td{padding:1px 6px;vertical-align:top;text-align:left;line-height:1.35}
.maillab .ml-time{color:#888;font-family:monospace;white-space:nowrap}
.maillab .ml-side{font-weight:bold;white-space:nowrap;font-size:12px}
.maillab .ml-text{font-family:monospace;white-space:pre-wrap;word-break:break-all}
.maillab tr.ml-C{background:#eaf2fb;color:#0b4a8a}
.maillab tr.ml-S{background:#edf7e8;color:#2d6317}
.maillab tr.ml-S td.ml-text{padding-left:2.5em}
.maillab tr.ml-E{color:#777;font-style:italic}
.maillab tr.ml-head td{background:#ddd;color:#222;font-weight:bold;padding:3px 6px}
.maillab details.ml-exp summary{cursor:help;list-style:none;text-decoration:underline dotted}
.maillab details.ml-exp summary::-webkit-details-marker{display:none}
.maillab details.ml-exp div{font-family:sans-serif;font-style:normal;color:#333;
  background:#fff8d6;border-left:3px solid #e0b400;padding:2px 6px;margin:2px 0;white-space:normal}
.maillab .ml-note{color:#666;font-size:12px;margin:2px 0}
.maillab .ml-ok{color:#2d6317;font-weight:bold}
.maillab .ml-bad{color:#b00020;font-weight:bold}
.maillab table.ml-grid{border-collapse:collapse;font-size:13px}
.maillab table.ml-grid td,.maillab table.ml-grid th{border:1px solid #ccc;padding:2px 8px;text-align:left;line-height:1.35}
.maillab table.ml-grid th{background:#eee}
.maillab .ml-hops{display:flex;align-items:center;flex-wrap:wrap;gap:4px;margin:6px 0}
.maillab .ml-box{border:2px solid #999;border-radius:6px;padding:4px 8px;background:#fafafa;
  font-size:13px;text-align:center;min-width:8em}
.maillab .ml-box.ml-on{border-color:#e07000;background:#fff1e0}
.maillab .ml-arrow{font-size:12px;color:#999;text-align:center;padding:0 4px}
.maillab .ml-arrow.ml-on{color:#e07000;font-weight:bold}
</style>"""


def esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def line_row(who: str, text: str, service: str = "", t: float | None = None,
             explain_all: bool = False) -> str:
    """One table row: time, side, text; server replies carry their explanation (hover, click)."""
    cls = {CLIENT: "ml-C", SERVER: "ml-S"}.get(who, "ml-E")
    side = {CLIENT: _("client") + " \u2192", SERVER: "\u2190 " + _("server")}.get(who, "")
    body = esc(text if who in (CLIENT, SERVER) else shown_event(text))
    if who == SERVER:
        meaning = explain(service, text)
        if meaning:
            body = (f'<details class="ml-exp"{" open" if explain_all else ""}>'
                    f'<summary title="{esc(meaning)}">{esc(text)}</summary>'
                    f"<div>{esc(meaning)}</div></details>")
    time_cell = f'<td class="ml-time">{stamp(t)}</td>' if t is not None else ""
    return (f'<tr class="{cls}">{time_cell}<td class="ml-side">{esc(side)}</td>'
            f'<td class="ml-text">{body}</td></tr>')


def header_row(text: str, columns: int = 3) -> str:
    return f'<tr class="ml-head"><td colspan="{columns}">{esc(text)}</td></tr>'


def render_lines(lines: Iterable, *, max_lines: int = 500, explain_all: bool = False,
                 times: bool = True, users: dict[int, str] | None = None) -> str:
    """HTML for transcript ``Line`` objects, grouped by connection, newest lines last."""
    lines = list(lines)
    hidden = max(0, len(lines) - max_lines)
    if hidden:
        lines = lines[hidden:]
    rows, current = [], None
    columns = 3 if times else 2
    for line in lines:
        if line.conn != current:
            current = line.conn
            who = (users or {}).get(line.conn)
            title = _("{service}, connection {conn}").format(service=line.service, conn=line.conn)
            if line.peer:
                title += _(", client at {peer}").format(peer=line.peer)
            if who:
                title += _(", logged in as {user}").format(user=who)
            rows.append(header_row(title, columns))
        rows.append(line_row(line.who, line.text, line.service, line.time if times else None,
                             explain_all))
    note = ""
    if hidden:
        note = ('<p class="ml-note">' + esc(_("{0} earlier lines are not shown.").format(hidden))
                + "</p>")
    if not rows:
        return '<div class="maillab">' + STYLE + '<p class="ml-note">' + \
            esc(_("Nothing recorded yet.")) + "</p></div>"
    return ('<div class="maillab">' + STYLE + note + '<table class="ml-lines">' + "".join(rows) +
            "</table></div>")


class Poller:
    """Calls ``tick()`` every ``interval`` seconds in a daemon thread while the lab runs.

    The thread waits on the lab's own thread, so it wakes up and ends the moment the lab stops
    (no thread is left behind after ``lab.stop()``); ``stop()`` ends it at once as well.
    """

    def __init__(self, lab, tick: Callable[[], None], interval: float = 0.5):
        self.lab = lab
        self.tick = tick
        self.interval = max(0.05, float(interval))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running or not getattr(self.lab, "running", False):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="maillab-widget-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            loop_thread = getattr(self.lab, "_thread", None)
            if loop_thread is not None and loop_thread.is_alive():
                # join() returns after `interval`, or at once when the lab's thread ends.
                loop_thread.join(self.interval)
            else:
                self._stop.wait(self.interval)
            if self._stop.is_set():
                break
            try:
                self.tick()
            except Exception:  # a display problem must not kill the poller silently
                pass
            if not getattr(self.lab, "running", False):
                break


def guess_user(lines: Iterable) -> dict[int, str]:
    """Connection number -> the user who logged in on it, read from the client's own words."""
    import base64
    users: dict[int, str] = {}
    for line in lines:
        if line.who != CLIENT or line.conn in users:
            continue
        words = line.text.split()
        if not words:
            continue
        cmd = words[0].upper()
        try:
            if cmd == "USER" and len(words) > 1:  # POP3
                users[line.conn] = words[1]
            elif len(words) > 2 and words[1].upper() == "LOGIN":  # IMAP: a1 LOGIN user pass
                users[line.conn] = words[2].strip('"')
            elif cmd == "AUTH" and len(words) > 2 and words[1].upper() == "PLAIN":  # SMTP, POP3
                parts = base64.b64decode(words[2]).split(b"\0")
                users[line.conn] = parts[1].decode() if len(parts) > 2 else parts[0].decode()
            elif (len(words) > 3 and words[1].upper() == "AUTHENTICATE"
                  and words[2].upper() == "PLAIN"):  # IMAP with SASL-IR
                parts = base64.b64decode(words[3]).split(b"\0")
                users[line.conn] = parts[1].decode() if len(parts) > 2 else parts[0].decode()
        except Exception:
            continue
    return users
