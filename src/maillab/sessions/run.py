"""Running a typed session over a real socket: connect, send each line, wait for each answer.

This is the part with sockets; what the lines mean is the drivers' business (:mod:`.drivers`).
Every wait is bounded by the session's timeout, every failure ends in a one-line hint in the
result (:class:`~.result.SessionResult`), never in an exception: a learner reads the hint where
the conversation stopped.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
import weakref

from ..i18n import _
from .drivers import DRIVERS, AnswerValues, Driver, Step
from .replies import Reply
from .result import Exchange, SessionResult

__all__ = ["run_session", "Target", "Session", "SessionProblem", "find_lab", "open_sessions",
           "close_session", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 5.0  # seconds: the longest wait for one answer (and for connecting)
GOODBYE = {"smtp": "QUIT", "pop3": "QUIT", "imap": "LOGOUT"}
CLOSE_WAIT = 1.0  # after QUIT or LOGOUT: how long to wait to see the server hang up

# protocol -> (lab service, its implicit-TLS variant, standard port, standard TLS port)
PORTS = {
    "smtp": ("smtp", "smtps", 25, 465),
    "pop3": ("pop3", "pop3s", 110, 995),
    "imap": ("imap", "imaps", 143, 993),
    "http": ("webmail", None, 80, 443),
}


class SessionProblem(Exception):
    """The session cannot start; the message is the one-line hint shown to the learner."""


class Target:
    """Where a session connects."""

    def __init__(self, host: str, port: int, server_hostname: str, implicit_tls: bool, label: str,
                 lab=None):
        self.host = host
        self.port = port
        self.server_hostname = server_hostname  # the name the TLS certificate must carry
        self.implicit_tls = implicit_tls
        self.label = label  # "mail.example.com port 2525 (stands for 25)"
        # A named session must not keep a replaced lab (and its memory) alive.
        self._lab = weakref.ref(lab) if lab is not None else None

    @property
    def lab(self):
        return self._lab() if self._lab is not None else None

    def lab_gone(self) -> bool:
        """Was this a lab's server, and is that lab stopped (or gone)?"""
        return self._lab is not None and (self.lab is None or not self.lab.running)


def find_lab(lab=None):
    """The running lab to talk to: ``lab`` if given, else the one ``maillab.start()`` made
    (or any running lab of this process, the newest first)."""
    from .. import lab as labmodule
    if lab is not None:
        if not lab.running:
            raise SessionProblem(_("The lab is stopped: run the first cell again "
                                   "(lab = maillab.start())."))
        return lab
    current = labmodule._current
    if current is not None and current.running:
        return current
    known = list(labmodule._all_labs)
    running = [one for one in known if one.running]
    if running:
        return max(running, key=lambda one: one.started_at or 0)
    if known:
        raise SessionProblem(_("The lab is stopped: run the first cell again "
                               "(lab = maillab.start())."))
    raise SessionProblem(_("No mail lab is running: run lab = maillab.start() first."))


def resolve_target(protocol: str, where: str | None = None, *, host: str | None = None,
                   port: int | None = None, tls: bool = False, submission: bool = False,
                   lab=None) -> Target:
    """The server a cell names: a domain of the lab (``example.net``, ``mail.example.net``),
    or ``host``/``port`` for any server."""
    plain, secure, standard, standard_tls = PORTS[protocol]
    service = secure if tls else plain
    if submission:
        service = "submission"
    if host is not None or (port is not None and where is None):
        if host is None:
            lab = find_lab(lab)  # a bare --port means a port of the lab's host
            host = lab.host
        else:
            lab = _running_or_none(lab)
        port = port if port is not None else (standard_tls if tls else standard)
        return Target(host, port, host, tls, _("{0} port {1}").format(host, port), lab)
    lab = find_lab(lab)
    domain = _lab_domain(lab, where)
    if service is None:
        raise SessionProblem(_("The lab has no {0} server over TLS.").format(protocol.upper()))
    try:
        found = lab.service(service, domain)
    except KeyError:
        raise SessionProblem(_("This lab has no {0} service (was it started with tls=False?).")
                             .format(service)) from None
    if port is not None:
        found_port, standard_port = port, None
    else:
        found_port, standard_port = found.port, found.standard_port
    label = _("{0} port {1}").format(found.hostname, found_port)
    if standard_port is not None and standard_port != found_port:
        label += " " + _("(stands for {0})").format(standard_port)
    return Target(lab.host, found_port, lab.hostname(domain), tls, label, lab)


def _running_or_none(lab):
    try:
        return find_lab(lab)
    except SessionProblem:
        return None


def _lab_domain(lab, where: str | None) -> str:
    if not where:
        return lab.domains[0]
    name = where.lower().rstrip(".")
    for prefix in ("mail.", "webmail."):
        if name.startswith(prefix) and name[len(prefix):] in lab.domains:
            name = name[len(prefix):]
    if name not in lab.domains:
        raise SessionProblem(_("{0} is not a domain of this lab ({1}); for another server use "
                               "--host and --port.").format(where, ", ".join(lab.domains)))
    return name


class Session:
    """An open connection and the driver following it; a named session lives across cells."""

    def __init__(self, protocol: str, target: Target, timeout: float = DEFAULT_TIMEOUT):
        self.protocol = protocol
        self.target = target
        self.timeout = timeout
        self.driver: Driver = DRIVERS[protocol]()
        if protocol == "http":  # {csrf}, {Set-Cookie}: from this server's earlier answers
            self.driver.values = answer_values(target)
        self.sock: socket.socket | None = None
        self.was_open = False  # connected once (a closed session, not one that never opened)
        self.pending = b""  # bytes the server sent past the last answer
        self.encrypted = False

    @property
    def connected(self) -> bool:
        return self.sock is not None

    # ---- opening
    def open(self, result: SessionResult) -> None:
        t = self.target
        try:
            sock = socket.create_connection((t.host, t.port), timeout=self.timeout)
        except ConnectionRefusedError:
            result.fail(self._refused_hint())
            return
        except (socket.timeout, TimeoutError):
            result.fail(_("No answer from {0} within {1:g} s.").format(t.label, self.timeout))
            return
        except OSError as e:
            result.fail(_("Could not connect to {0}: {1}").format(t.label, e.strerror or e))
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.was_open = sock, True
        result.event(_("connected to {0}").format(t.label))
        if t.implicit_tls and not self._start_tls(result, _("TLS from the first byte")):
            return
        if self.driver.starts_talking:
            self._exchange(result, None, self.driver.greeting())

    def _refused_hint(self) -> str:
        t = self.target
        if t.lab_gone():
            return _("The lab is stopped: run the first cell again (lab = maillab.start()).")
        if t.lab is not None and t.host == t.lab.host:
            return _("Nothing listens on port {0} of the lab: check the port in the lab's "
                     "table (run lab).").format(t.port)
        return _("{0} refused the connection: no server listens there.").format(t.label)

    def _tls_context(self) -> ssl.SSLContext:
        """The system's trusted authorities, and the lab's own when a lab runs."""
        context = ssl.create_default_context()
        lab = self.target.lab
        if lab is not None and getattr(lab, "ca", None) is not None:
            context.load_verify_locations(lab.ca_file)
        return context

    def _start_tls(self, result: SessionResult, how: str) -> bool:
        try:
            self.sock.settimeout(self.timeout)
            self.sock = self._tls_context().wrap_socket(self.sock,
                                                        server_hostname=self.target.server_hostname)
        except (OSError, ssl.SSLError, ValueError) as e:
            result.fail(_("TLS failed: {0}").format(getattr(e, "reason", None) or e))
            self.close()
            return False
        self.encrypted = True
        cipher = self.sock.cipher()
        result.event(_("{0}: {1}, {2}. From here on everything is encrypted: someone watching "
                       "the network sees only scrambled bytes.").format(
            how, self.sock.version(), cipher[0] if cipher else "?"), "tls")
        return True

    # ---- the cell
    def run(self, lines: list[str], result: SessionResult) -> None:
        """Send the cell's lines, each followed by its answer, until the cell or the connection ends."""
        self._take_unasked(result)
        steps = self.driver.steps(lines)
        sent = 0
        for step in steps:
            if self.sock is None:
                break
            sent += len([s for i, s in enumerate(step.shown) if i not in step.added])
            if not self._exchange(result, step, step.reply):
                break
        if self.sock is None:
            left = len(lines) - sent
            if left > 0:
                result.fail(_("{0} more lines of the cell were not sent: the connection is "
                              "closed.").format(left))
            return
        notes = self.driver.unfinished()
        if notes:
            result.items.append(Exchange(notes=notes))

    def _exchange(self, result: SessionResult, step: Step | None, reply: Reply | None) -> bool:
        """Send one step and wait for its answer; False when the session cannot go on."""
        x = self._current_exchange(result, step)
        x.encrypted = self.encrypted
        if step is not None:
            first = len(x.sent)
            x.sent += step.shown
            x.added |= {first + i for i in step.added}
            x.notes += step.notes
            try:
                self.sock.sendall(step.data)
            except OSError as e:
                self.close()
                result.fail(_("The connection is gone ({0}): the server closed it.").format(e))
                return False
        if reply is None:
            return True  # a line of a message or of a literal: no answer before the rest
        outcome = self._await(reply)
        x.reply += reply.lines
        self._explain(x, reply)
        if outcome == "timeout":
            result.fail(_("No whole answer within {0:g} s: the server may be waiting for more "
                          "from you, or not answering at all. The rest of the cell was not sent.")
                        .format(self.timeout))
            return False
        if outcome == "closed":
            self.close()
            result.event(_("the server closed the connection"))
            return False
        x.notes += self.driver.remarks_on(step, reply)
        self.driver.answered(step, reply)
        if self.driver.start_tls:
            if self.pending:
                result.event(_("{0} bytes the server sent before TLS started were thrown away.")
                             .format(len(self.pending)), "error")
                self.pending = b""
            if not self._start_tls(result, _("TLS started")):
                return False
            notes = self.driver.tls_started()
            if notes:
                result.items.append(Exchange(notes=notes, encrypted=True))
        if self.driver.closing:
            self._see_hang_up(result)
            return self.sock is not None
        return True

    @staticmethod
    def _current_exchange(result: SessionResult, step: Step | None) -> Exchange:
        """Lines sent without an answer (a message after DATA, a literal) join the next answer."""
        last = result.items[-1] if result.items else None
        if step is not None and isinstance(last, Exchange) and last.sent and not last.reply \
                and not last.explanation:
            return last
        x = Exchange()
        result.items.append(x)
        return x

    def _await(self, reply: Reply) -> str:
        """Read until the answer is whole: "done", "timeout" or "closed"."""
        if self.pending:
            self.pending = reply.feed(self.pending)
            if reply.done:
                return "done"
        deadline = time.monotonic() + self.timeout
        longest = time.monotonic() + 10 * self.timeout  # a server trickling bytes for ever
        while True:
            remaining = min(deadline, longest) - time.monotonic()
            if remaining <= 0:
                return "timeout"
            data = self._recv(remaining)
            if data is None:
                return "timeout"
            if not data:
                if reply.whole_at_close():
                    reply.done = True
                    self.close()
                    return "done"
                return "closed"
            self.pending = reply.feed(data)
            if reply.done:
                return "done"
            deadline = time.monotonic() + self.timeout

    def _recv(self, wait: float) -> bytes | None:
        """Bytes from the server; b"" when it closed; None when nothing came within ``wait``."""
        try:
            self.sock.settimeout(wait)
            return self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return None
        except (OSError, ssl.SSLError):
            return b""  # reset by the server: for the learner, it hung up

    def _explain(self, x: Exchange, reply: Reply) -> None:
        from ..explain import explain  # imported at the first session, not at import
        line = self.driver.deciding_line(reply)
        x.explanation = explain(self.protocol, line)
        x.meaning = explain(self.protocol, line, words=False)
        if self.protocol == "imap":  # untagged lines mean something each: shown on hover
            for index, line in enumerate(x.reply):
                if line.startswith("* "):
                    meaning = explain("imap", line)
                    if meaning:
                        x.line_meanings[index] = meaning

    def _see_hang_up(self, result: SessionResult) -> None:
        """After QUIT or LOGOUT: show the server closing the connection (briefly waited for)."""
        deadline = time.monotonic() + min(CLOSE_WAIT, self.timeout)
        extra = self.pending
        while self.sock is not None and time.monotonic() < deadline:
            data = self._recv(deadline - time.monotonic())
            if data is None:
                break
            if not data:
                self.close()
                break
            extra += data
        self.pending = b""
        if extra:
            from .replies import split_lines
            result.items.append(Exchange(reply=split_lines(extra), encrypted=self.encrypted))
        if self.sock is None:
            result.event(_("the server closed the connection"))

    def _take_unasked(self, result: SessionResult) -> None:
        """Show what the server said on its own since the last cell (a named session)."""
        if self.sock is None:
            return
        data = self.pending
        self.pending = b""
        closed = False
        while True:
            ready = (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()) or \
                select.select([self.sock], [], [], 0)[0]
            if not ready:
                break
            chunk = self._recv(0.05)
            if chunk is None:
                break
            if not chunk:
                closed = True
                break
            data += chunk
        if data:
            from .replies import split_lines
            result.items.append(Exchange(reply=split_lines(data), encrypted=self.encrypted,
                                         notes=[_("The server said this on its own since the "
                                                  "last cell.")]))
        if closed:
            self.close()
            result.fail(_("The server closed this session since the last cell: start it again."))

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


# --------------------------------------------------------------------------- HTTP answers
_answers: dict[tuple, AnswerValues] = {}
KEEP_ANSWERS = 16  # servers whose answers' values are kept


def answer_values(target: Target) -> AnswerValues:
    """The values earlier %%http cells got from this server (host, port, and which lab: a lab
    started again on the same port makes new tokens), for ``{name}``."""
    lab = target.lab
    key = (target.host, target.port, id(lab) if lab is not None else None)
    values = _answers.pop(key, None) or AnswerValues()
    _answers[key] = values  # the newest last
    while len(_answers) > KEEP_ANSWERS:
        del _answers[next(iter(_answers))]
    return values


# --------------------------------------------------------------------------- named sessions
_open: dict[str, Session] = {}
_closed: dict[str, bool] = {}  # names whose connection ended in a cell (LOGOUT, hang-up)


def open_sessions() -> dict[str, Session]:
    """The named sessions still open (name -> session)."""
    for name in [n for n, s in _open.items() if not s.connected]:
        del _open[name]
    return dict(_open)


def close_session(name: str) -> bool:
    """Close a named session without a word to the server; False if there was none."""
    session = _open.pop(name, None)
    if session is None:
        return False
    session.close()
    return True


NBGRADER_MARKERS = {"### BEGIN SOLUTION", "### END SOLUTION"}
# What nbgrader leaves in a lab's session cell for the learner to replace; a learner who writes
# the session below it and keeps it must not have "# YOUR CODE HERE" sent as a command (an HTTP
# request would start with it)
NBGRADER_PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")


def _cell_lines(text: str, keep_final_blank: bool = False) -> list[str]:
    """The typed lines; blank lines at the start and end of a cell are invisible, so not sent
    (but an HTTP request keeps one at its end: the empty line that ends its headers)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # nbgrader's solution markers in a lab's master are not typed by anyone: never sent
    lines = [line for line in lines
             if line.strip() not in NBGRADER_MARKERS and line.strip() not in NBGRADER_PLACEHOLDER]
    if lines and lines[-1] == "":
        lines.pop()  # the line end of the last line
    ended_blank = bool(lines) and not lines[-1].strip()
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if keep_final_blank and ended_blank and lines:
        lines.append("")
    return lines


def run_session(protocol: str, where: str | None = None, text: str = "", *,
                host: str | None = None, port: int | None = None, tls: bool = False,
                submission: bool = False, session: str | None = None, close: bool = False,
                timeout: float = DEFAULT_TIMEOUT, lab=None) -> SessionResult:
    """Run a typed session and return what was said.

    ``run_session("smtp", "example.com", "EHLO me\\nQUIT")`` connects to the lab's SMTP server
    for example.com, sends each line and waits for each answer. ``host``/``port`` reach any
    server; ``tls`` uses the implicit-TLS port (465, 995, 993); ``submission`` the SMTP
    submission port (587). ``session="name"`` keeps the connection open for the next call with
    the same name; a call that names the server again (``where``, ``host``, ``port``, ``tls``,
    ``submission``) starts it anew. ``close`` ends a named session after this call.
    """
    protocol = protocol.lower()
    if protocol not in DRIVERS:
        raise ValueError(f"no session driver for {protocol!r} (one of {', '.join(DRIVERS)})")
    started = time.monotonic()
    result = SessionResult(protocol, session)
    lines = _cell_lines(text, keep_final_blank=protocol == "http")
    if any(line.strip() in NBGRADER_PLACEHOLDER for line in text.splitlines()):
        if not lines:
            result.fail(_('Write your session here: replace the lines "# YOUR CODE HERE" and '
                          '"raise NotImplementedError()" with the lines to send.'))
            return _finished(result, started, None, session)
        result.event(_('maillab did not send the lines "# YOUR CODE HERE" and "raise '
                       'NotImplementedError()": they only mark where your session goes (delete '
                       'them).'))
    names_server = bool(where or host or port or tls or submission)
    current = _open.get(session) if session else None
    if current is not None:
        lab_gone = current.target.lab_gone()
        if names_server or lab_gone or not current.connected:
            if current.connected and lab_gone:
                result.event(_("The lab of session {0} was stopped: a new connection is opened.")
                             .format(session))
            elif current.connected:
                result.event(_("This cell names the server, so session {0} starts anew (the old "
                               "connection was closed).").format(session))
            _open.pop(session).close()
            current = None
    if current is not None and current.protocol != protocol:
        result.fail(_("Session {0} is a {1} session: use %%{2}.").format(
            session, current.protocol.upper(), current.protocol))
        return _finished(result, started, None, session)
    if current is None and session and not lines and not names_server:
        result.event(_("There is no open session {0}: nothing to show or close.").format(session))
        return _finished(result, started, None, session)
    if current is None:
        try:
            target = resolve_target(protocol, where, host=host, port=port, tls=tls,
                                    submission=submission, lab=lab)
        except SessionProblem as e:
            result.fail(str(e))
            return _finished(result, started, None, session)
        current = Session(protocol, target, timeout)
        if session and _closed.pop(session, None):
            result.event(_("Session {0} was closed in an earlier cell (LOGOUT, QUIT or the server "
                           "hung up), so this cell starts a new connection: the server does not "
                           "remember the earlier login or selected folder.").format(session))
    else:
        current.timeout = timeout
        result.event(_("session {0} goes on ({1})").format(session, current.target.label))
    try:
        if not current.connected:
            current.open(result)
            if session and current.connected:
                _open[session] = current
        if current.connected:
            current.run(lines, result)
    except KeyboardInterrupt:  # the learner pressed stop (or nbgrader's timeout did)
        current.close()
        result.fail(_("Interrupted: maillab closed the connection."))
        return _finished(result, started, current, session)
    if current.connected and (close or not session):
        current.close()
        if close:
            result.event(_("you closed session {0}").format(session))
        elif protocol in GOODBYE:
            result.event(_("the cell ended, so maillab closed the connection (the server saw no "
                           "{0})").format(GOODBYE[protocol]))
        else:
            result.event(_("the cell ended, so maillab closed the connection"))
    return _finished(result, started, current, session)


def _finished(result: SessionResult, started: float, current: Session | None,
              name: str | None) -> SessionResult:
    result.open = current is not None and current.connected and name is not None
    if name and not result.open:
        _open.pop(name, None)
        if current is not None and current.was_open and not current.connected:
            _closed[name] = True  # the next cell with this name says that it starts afresh
    result.seconds = time.monotonic() - started
    return result
