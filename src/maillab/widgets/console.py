"""The console: talk to any service of the lab by hand, like ``telnet localhost 25``.

The console opens a plain TCP connection (a raw socket, exactly what telnet would do), sends what
you type followed by CRLF, and shows what the server answers. It knows enough about each protocol
to tell when an answer is complete, so it waits no longer than needed; for anything else it stops
listening once the server has been quiet for a moment. Use it from the widget (type and press
Enter) or from code: ``console.send("EHLO laptop.example.com")`` returns the reply.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections import deque

import ipywidgets as W

from ..i18n import _
from ._common import CLIENT, EVENT, SERVER, STYLE, esc, line_row
from ..explain import protocol_of

__all__ = ["Console"]

IMPLICIT_TLS = {"smtps", "pop3s", "imaps"}

# Pressing Enter in the text box sends the browser's "submit" event at once; the typed text
# follows as a value change a few milliseconds later (measured in Chromium: 2-25 ms). Enter in an
# empty box sends the event alone. A submit that no text follows within this many seconds was an
# empty line (the blank line between a message's headers and its body, or the end of an HTTP
# request).
ENTER_WINDOW = 0.4

# POP3 commands whose positive answer spans several lines and ends with "." (RFC 1939, 2449).
_POP3_MULTI = {"RETR", "TOP", "CAPA"}
_POP3_MULTI_NOARG = {"LIST", "UIDL"}


class Console(W.VBox):
    """A hand-typed session with one of the lab's servers over a raw socket.

    ``Console(lab)`` talks to your own SMTP server; ``Console(lab, "pop3", "example.net")`` to
    john's POP3 server; ``Console(port=2525, protocol="smtp")`` to any port without a lab.
    ``tls=True`` wraps the socket in TLS (trusting the lab's certificate authority).
    """

    def __init__(self, lab=None, service: str = "smtp", domain: str | None = None, *,
                 port: int | None = None, host: str = "127.0.0.1", protocol: str | None = None,
                 tls: bool = False, connect: bool = True, timeout: float = 5.0,
                 max_lines: int = 300):
        self.lab = lab
        self.host = host
        self.tls = tls
        self.timeout = timeout
        self.max_lines = max_lines
        self.sock: socket.socket | None = None
        self.history: list[tuple[str, str, float]] = []  # (who, text, time)
        self._pending = b""
        self._smtp_data = False  # between 354 and the lone dot no reply is expected
        self._lock = threading.RLock()  # Enter on an empty line is sent from a timer thread
        self._enters: deque[float] = deque()  # times of Enter presses no text has followed yet
        self._enter_timer: threading.Timer | None = None
        self._text_alone_at = float("-inf")

        self.target = W.Dropdown(description=_("Server"), layout=W.Layout(width="auto"),
                                 style={"description_width": "initial"})
        self._fill_targets(service, domain, port, protocol)
        self.connect_button = W.Button(description=_("Connect"), icon="plug",
                                       layout=W.Layout(width="auto"))
        self.close_button = W.Button(description=_("Disconnect"), layout=W.Layout(width="auto"))
        self.input = W.Text(placeholder=_("type a command and press Enter"),
                            continuous_update=False, layout=W.Layout(flex="1 1 auto"))
        self.send_button = W.Button(description=_("Send"), button_style="primary",
                                    layout=W.Layout(width="auto"))
        self.empty_button = W.Button(description=_("Send empty line"),
                                     layout=W.Layout(width="auto"),
                                     tooltip=_("The same as Enter in the empty box: an empty "
                                               "line separates headers from the text"))
        self.check_button = W.Button(description=_("Check for more"),
                                     layout=W.Layout(width="auto"),
                                     tooltip=_("Show anything the server sent on its own since"))
        self.state = W.HTML()
        self.screen = W.HTML(layout=W.Layout(max_height="360px", overflow="auto",
                                             border="1px solid #ddd", min_height="3em"))
        self.connect_button.on_click(lambda _b: self._ui(self.connect))
        self.close_button.on_click(lambda _b: self._ui(self.close))
        self.send_button.on_click(lambda _b: self._submit())
        self.empty_button.on_click(lambda _b: self._ui(lambda: self.send("")))
        self.check_button.on_click(lambda _b: self._ui(self.receive))
        self.input.observe(self._on_text, "value")
        self.input.on_msg(self._on_browser_event)
        super().__init__([
            W.HBox([self.target, self.connect_button, self.close_button, self.state],
                   layout=W.Layout(align_items="center")),
            self.screen,
            W.HBox([self.input, self.send_button, self.empty_button, self.check_button]),
        ])
        self.add_class("maillab-console")
        self._render()
        if connect:
            self._ui(self.connect)

    # ---- targets
    def _fill_targets(self, service, domain, port, protocol) -> None:
        options = []
        chosen = None
        if self.lab is not None and getattr(self.lab, "running", False):
            for s in self.lab.services:
                label = f"{s.protocol.upper()} {s.hostname} : {s.port} " + \
                    _("(stands for {0})").format(s.standard_port)
                value = (s.protocol, s.port)
                options.append((label, value))
                if port is None and s.protocol == service and s.domain == (domain or self.lab.domains[0]):
                    chosen = value
        if port is not None:
            value = (protocol or service, port)
            if value not in [v for _l, v in options]:
                options.append((f"{(protocol or service).upper()} {self.host} : {port}", value))
            chosen = value
        self.target.options = options
        if chosen is not None:
            self.target.value = chosen
        elif options:
            self.target.value = options[0][1]

    @property
    def protocol(self) -> str:
        return protocol_of(self.target.value[0]) if self.target.value else ""

    @property
    def port(self) -> int | None:
        return self.target.value[1] if self.target.value else None

    @property
    def connected(self) -> bool:
        return self.sock is not None

    @property
    def lab_stopped(self) -> bool:
        """Was this console made for a lab that has stopped (or been replaced) since?"""
        return self.lab is not None and not getattr(self.lab, "running", False)

    # ---- the session
    def connect(self) -> str:
        """Open the connection and return the server's greeting."""
        self.close(quiet=True)
        if self.lab_stopped or self.port is None:
            raise LabStopped(stopped_text())
        self._event(_("connecting to {0} port {1} ...").format(self.host, self.port))
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self.tls or self.target.value[0] in IMPLICIT_TLS:
                sock = self._wrap(sock)
        except OSError as e:
            if self.lab_stopped:  # it stopped between the check above and now
                raise LabStopped(stopped_text()) from None
            self._event(_("could not connect: {0}").format(e))
            self._render()
            raise
        self.sock = sock
        self._pending = b""
        self._smtp_data = False
        self._open_tag = None
        self._event(_("connected"))
        reply = self._read_reply(greeting=True)
        self._render()
        return reply

    def _wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """Start TLS on the socket, trusting the lab's certificate authority."""
        ctx = self.lab.client_context() if hasattr(self.lab, "client_context") else \
            ssl.create_default_context()
        sock = ctx.wrap_socket(sock, server_hostname=self.host)
        self._event(_("TLS established ({0}, {1})").format(sock.version(), sock.cipher()[0]))
        return sock

    def starttls(self) -> None:
        """Switch the open connection to TLS (after the server agreed to STARTTLS or STLS)."""
        try:
            self.sock.settimeout(self.timeout)
            self.sock = self._wrap(self.sock)
        except (OSError, ssl.SSLError) as e:
            self._event(_("TLS failed: {0}").format(e))
            self._drop()

    def send(self, line: str) -> str:
        """Send one line (CRLF is added) and return what the server answered to it.

        An empty string sends an empty line. If the lab has stopped, the console says so and
        returns "" (run the notebook's first cell again).
        """
        with self._lock:
            if self.sock is None:
                try:
                    self.connect()
                except LabStopped:
                    self._say_stopped()
                    return ""
            return self._send_line(line)

    def _send_line(self, line: str) -> str:
        self.history.append((CLIENT, line, time.time()))
        try:
            self.sock.sendall(line.encode("utf-8") + b"\r\n")
        except OSError as e:
            self._event(_("the connection is gone: {0}").format(e))
            self._drop()
            self._render()
            return ""
        reply = self._read_reply(sent=line)
        words = line.upper().split()
        if self.sock is not None and _agreed_to_tls(words, reply):
            self.starttls()  # from now on the console speaks through TLS, as a mail client would
        if self.sock is not None and (words[:1] == ["QUIT"] or words[1:2] == ["LOGOUT"]):
            reply += self._read(None, first_wait=0.5, quiet=0.1)  # see the server hang up
        self._render()
        return reply

    def receive(self, wait: float = 0.3) -> str:
        """Show and return whatever the server sent on its own (for example during IMAP IDLE)."""
        if self.sock is None:
            return ""
        text = self._read(None, first_wait=wait, quiet=0.1)
        self._render()
        return text

    def close(self, quiet: bool = False) -> None:
        """Close the connection (without saying QUIT: the server sees a dropped connection)."""
        if self.sock is not None:
            self._drop()
            if not quiet:
                self._event(_("connection closed by you"))
        self._render()

    def _drop(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None

    def _event(self, text: str) -> None:
        self.history.append((EVENT, text, time.time()))

    # ---- reading
    def _read_reply(self, sent: str | None = None, greeting: bool = False) -> str:
        proto = self.protocol
        if proto == "smtp":
            if self._smtp_data and sent is not None:
                if sent != ".":  # a line of the message: the server answers only after the dot
                    if _smtp_command_alone(sent):
                        self._event(_("You are still inside the message: the server took {0} as "
                                      "a line of it and answers nothing. A line holding only a "
                                      "dot (.) ends the message; then type {0} again.")
                                    .format(sent.split()[0].upper()))
                    return self._read(None, first_wait=0.02, quiet=0.02)
                self._smtp_data = False
            text = self._read(_smtp_done)
            if re.search(r"(?m)^354", text):
                self._smtp_data = True
            return text
        if proto == "pop3":
            word = (sent or "").split()
            multi = bool(word) and (word[0].upper() in _POP3_MULTI or
                                    (word[0].upper() in _POP3_MULTI_NOARG and len(word) == 1))
            return self._read(lambda buf: _pop3_done(buf, multi and not greeting))
        if proto == "imap":
            tag = None
            if sent is not None:
                words = sent.split()
                if self._open_tag is not None:
                    # After a "+" continuation the next line belongs to the same command
                    # (a literal, login data, or DONE ending IDLE).
                    tag = self._open_tag
                elif words:
                    tag = words[0]
            text = self._read(lambda buf: _imap_done(buf, tag, greeting))
            last = text.rstrip("\r\n").rsplit("\n", 1)[-1]
            self._open_tag = tag if last.startswith("+") else None
            return text
        if proto == "http":
            if greeting:
                return ""  # a web server never speaks first: the browser asks
            if sent:  # a request goes on until an empty line: no answer comes before that
                return self._read(None, first_wait=0.05, quiet=0.05)
            return self._read(_http_done)
        return self._read(None, first_wait=2.0, quiet=0.25)

    _open_tag: str | None = None

    def _read(self, done, first_wait: float | None = None, quiet: float = 0.3) -> str:
        """Read until ``done(buffer)`` says the answer is complete.

        Without ``done`` (a protocol the console does not know, or no answer expected) reading
        stops after ``first_wait`` seconds of silence at first, then ``quiet`` seconds.
        """
        if done is None:
            wait_first, wait_more = first_wait if first_wait is not None else 1.0, quiet
        else:
            wait_first = wait_more = self.timeout
        deadline = time.monotonic() + wait_first
        buf = b""
        while self.sock is not None:
            if buf and done is not None and done(buf):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except ssl.SSLWantReadError:
                continue
            except OSError as e:
                self._event(_("the connection is gone: {0}").format(e))
                self._drop()
                break
            if not data:
                self._take_lines(buf, final=True)
                self._event(stopped_text() if self.lab_stopped else _("the server closed the connection"))
                self._drop()
                return buf.decode("utf-8", "backslashreplace")
            buf += data
            deadline = time.monotonic() + wait_more
        self._take_lines(buf, final=False)
        return buf.decode("utf-8", "backslashreplace")

    def _take_lines(self, buf: bytes, final: bool) -> None:
        data = self._pending + buf
        parts = data.split(b"\n")
        self._pending = b"" if final else parts.pop()
        now = time.time()
        if final and self._pending == b"" and parts and parts[-1] == b"":
            parts.pop()  # the text ended with a line end: no empty line after it
        for part in parts:
            self.history.append((SERVER, part.rstrip(b"\r").decode("utf-8", "backslashreplace"), now))

    # ---- the widget
    def _submit(self) -> None:
        """The Send button: send what is in the box."""
        line = self.input.value
        if line:
            self.input.value = ""  # also fires _on_text with "", which does nothing
            self._ui(lambda: self.send(line))

    def _on_browser_event(self, _widget, content, _buffers) -> None:
        """Enter was pressed in the box (the browser's "submit" event)."""
        if content.get("event") != "submit":
            return
        with self._lock:
            now = time.monotonic()
            if now - self._text_alone_at < ENTER_WINDOW / 4:
                return  # this Enter belongs to the text that came just before it
            self._enters.append(now)
            self._arm_timer(ENTER_WINDOW)

    def _arm_timer(self, seconds: float) -> None:
        if self._enter_timer is not None:
            self._enter_timer.cancel()
        self._enter_timer = threading.Timer(seconds, self._send_empty_lines)
        self._enter_timer.daemon = True
        self._enter_timer.start()

    def _on_text(self, change) -> None:
        """Text arrived from the box (after Enter, or when the box lost the focus)."""
        line = change["new"]
        if not line:
            return
        self.input.value = ""
        with self._lock:
            # The newest Enter is the one that sent this text; Enters before it, with no text
            # of their own, were empty lines and go first.
            alone = not self._enters
            if self._enters:
                self._enters.pop()
            self._send_empty_lines(all_of_them=True)
            self._ui(lambda: self.send(line))
            if alone:  # the text came before its Enter event (or the box lost the focus): the
                # Enter event, queued while the line was sent, must not count as an empty line
                self._text_alone_at = time.monotonic()

    def _send_empty_lines(self, all_of_them: bool = False) -> None:
        """Send an empty line for each Enter that no text followed within ENTER_WINDOW."""
        with self._lock:
            now = time.monotonic()
            while self._enters and (all_of_them or now - self._enters[0] >= ENTER_WINDOW * 0.9):
                self._enters.popleft()
                self._ui(lambda: self.send(""))
            if self._enters:  # a younger Enter still waits for its text
                self._arm_timer(ENTER_WINDOW - (now - self._enters[0]))

    def enter(self, text: str = "") -> None:
        """Do what typing ``text`` into the box and pressing Enter does (for tests and demos)."""
        self._on_browser_event(self.input, {"event": "submit"}, [])
        if text:
            self.input.value = text

    def _ui(self, action) -> None:
        try:
            action()
        except LabStopped:
            self._say_stopped()
        except Exception as e:  # show it in the widget: the learner clicked, nobody reads a traceback
            self._event(f"{type(e).__name__}: {e}")
            self._render()

    def _say_stopped(self) -> None:
        if not self.history or self.history[-1][1] != stopped_text():
            self._event(stopped_text())
        self._render()

    def _render(self) -> None:
        service = self.protocol
        rows = [line_row(who, text, service, None) for who, text, _t in self.history[-self.max_lines:]]
        self.screen.value = ('<div class="maillab">' + STYLE + '<table class="ml-lines">' +
                             "".join(rows) + "</table></div>")
        if self.sock is not None:
            state = f'<span class="ml-ok">\u25cf {esc(_("connected"))}</span>'
        else:
            state = f'<span style="color:#888">\u25cb {esc(_("not connected"))}</span>'
        self.state.value = f'<span class="maillab">{state}</span>'

    def transcript_text(self) -> str:
        """The console's conversation as plain text (C: / S: / -- lines)."""
        arrows = {CLIENT: "C:", SERVER: "S:", EVENT: "--"}
        return "\n".join(f"{arrows[w]} {t}" for w, t, _x in self.history)

    def __del__(self):
        try:
            if self.sock is not None:
                self.sock.close()
        except Exception:
            pass


class LabStopped(RuntimeError):
    """The console's lab is not running any more."""


def stopped_text() -> str:
    return _("the lab is stopped: run the first cell again")


def _agreed_to_tls(words: list[str], reply: str) -> bool:
    """Did the server just accept STARTTLS (SMTP, IMAP) or STLS (POP3)?"""
    last = reply.rstrip("\r\n").rsplit("\n", 1)[-1]
    if words in (["STARTTLS"], ["STLS"]):
        return last.startswith(("220", "+OK"))
    if len(words) == 2 and words[1] == "STARTTLS":  # IMAP: a1 STARTTLS
        return last.upper().startswith(words[0] + " OK")
    return False


# Lines after DATA that are surely a forgotten final dot, not text: an SMTP command on its own.
_SMTP_ALONE = {"QUIT", "RSET", "NOOP", "DATA", "STARTTLS"}
_SMTP_WITH_ARGUMENT = ("MAIL FROM:", "RCPT TO:", "EHLO ", "HELO ", "AUTH ")


def _smtp_command_alone(line: str) -> bool:
    """Does this line of a message look like a command typed after a forgotten final dot?"""
    text = line.strip().upper()
    return text in _SMTP_ALONE or text.startswith(_SMTP_WITH_ARGUMENT)


# ---- when is an answer complete?
def _lines(buf: bytes) -> list[bytes]:
    if not buf.endswith(b"\n"):
        return []
    return buf.rstrip(b"\r\n").split(b"\n")


def _smtp_done(buf: bytes) -> bool:
    lines = _lines(buf)
    return bool(lines) and re.match(rb"^\d{3}(?: |\r?$)", lines[-1]) is not None


def _pop3_done(buf: bytes, multi: bool) -> bool:
    lines = _lines(buf)
    if not lines:
        return False
    first = lines[0]
    if not multi or first.startswith(b"-ERR") or first.startswith(b"+ "):
        return True
    return lines[-1].rstrip(b"\r") == b"." and len(lines) > 1


def _http_done(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        return len(body) >= int(m.group(1))
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    return re.match(rb"HTTP/\S+ (1\d\d|204|304)", head) is not None


def _imap_done(buf: bytes, tag: str | None, greeting: bool) -> bool:
    lines = _lines(buf)
    if not lines:
        return False
    last = lines[-1].rstrip(b"\r")
    if greeting:
        return last.startswith(b"* ")
    if last.startswith(b"+"):
        return True  # continuation: the server waits for us
    if last.startswith(b"* BAD"):
        return True  # the server could not read the line at all (no tag to answer with)
    if tag is None:
        return False
    return last.startswith(tag.encode() + b" ")
