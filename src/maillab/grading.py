"""Evidence for graded labs: what the servers saw, read back for the labs' test cells.

Lab notebooks (solutions/ -> labs/) use this module in three places:

* the locked setup cell calls :func:`prepare` on the lab it started: evidence recording is
  sealed (only the lab's own server thread may add transcript lines), every cell gets a time
  limit, and sockets get a default timeout, so hung code fails fast instead of hanging a grader;
* test cells wrap a call of the learner's function in :func:`watch` and check the evidence: which
  sessions the learner's client opened, what it sent (byte for byte), what the servers stored
  on disk and what they removed;
* hidden tests start with ``_g = grading.fresh(lab)``: a copy of this module loaded afresh from
  its file, after :func:`verify` looked for patched maillab code, lab or evidence.

Inside the learner's kernel none of this can be trusted: notebook code runs in the same
process and can change anything. It is feedback, and the verdict of a plain ``nbgrader
autograde``. ``python -m maillab grade`` (:mod:`maillab.grader`) does not rely on it: it runs
the lab's servers in the grader and runs the same test cells in the grader's own process
against the learner's answers; there this module works on a lab the grader owns, and on a
sealed lab's copies of the evidence inside the sandboxed kernel.

The second half holds the nbgrader side (:func:`nbgrader_preprocessors`): an executor that
survives a killed or unresponsive kernel (restart, replay the earlier non-test cells, fail only
the guilty cell), an OverwriteCells that puts back deleted locked and test cells, and a
feedback step that hides the hidden tests.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import re
import signal
import socket
import sys
import threading
import time
import types
from pathlib import Path
from typing import NamedTuple

from maillab.i18n import _  # absolute: fresh() loads this file outside the package

__all__ = ["prepare", "watch", "verify", "fresh", "Watch", "CellTimeLimit", "Tampered",
           "unstuff", "maildir", "during", "Steps", "again", "exchanges", "smtp_steps",
           "POP3_BOX", "fill_mailbox", "pop3_steps", "imap_steps",
           "SOCKET_TIMEOUT", "CELL_LIMIT"]

SOCKET_TIMEOUT = 3.0  # seconds a socket may wait for the lab's servers (they answer in ms)
CELL_LIMIT = 8.0  # seconds a notebook cell may run before it is interrupted
GRACE = 3.0  # under nbgrader: seconds after the interrupt before the kernel is ended for good
HARD_KILL_CODE = 86  # exit code of a kernel ended by the watchdog (seen in nbgrader's log)


class CellTimeLimit(BaseException):
    """A cell ran too long. A BaseException, so `except Exception` in learners' code lets it by."""


class Tampered(AssertionError):
    """The grading machinery or the lab's evidence was changed by notebook code."""


# ---------------------------------------------------------------------------- setup cell

class _SealedLines(collections.deque):
    """The recorder's line store, accepting lines only from the lab's own server thread.

    The servers record from the lab's loop thread; notebook code runs in the kernel's main
    thread, so a line appended from anywhere else is a forgery and is refused (and counted).
    """

    def __init__(self, lines, maxlen, loop_ident: int):
        super().__init__(lines, maxlen)
        self.loop_ident = loop_ident
        self.refused = 0

    def append(self, line) -> None:
        if threading.get_ident() != self.loop_ident:
            self.refused += 1
            return
        super().append(line)

    def appendleft(self, line) -> None:
        self.refused += 1

    def extend(self, lines) -> None:
        for line in lines:
            self.append(line)

    def extendleft(self, lines) -> None:
        self.refused += 1

    def insert(self, i, line) -> None:
        self.refused += 1


def _sealed_evidence(lab):
    """The evidence service of a lab whose servers run in the grader (maillab.grader.client),
    or None for a lab running in this process."""
    return getattr(lab, "sealed_evidence", None)


def seal(lab) -> None:
    """Make the lab's transcript accept lines from its own server thread only."""
    if _sealed_evidence(lab) is not None:
        return  # the transcript is in the grader's process: nothing here can add to it
    rec = lab.recorder
    with rec._lock:
        if not isinstance(rec._lines, _SealedLines):
            rec._lines = _SealedLines(rec._lines, rec._lines.maxlen, lab._thread.ident)


class _CellLimit:
    """A time limit for every cell, through IPython's pre/post_run_cell events.

    SIGALRM raises :class:`CellTimeLimit` in the cell (and again every second while it runs, for
    code that swallows the first one). Under nbgrader (``NBGRADER_EXECUTION`` set) a watchdog
    thread ends the kernel if the cell still runs ``GRACE`` seconds later: the grader's executor
    then restarts the kernel and fails only that cell.
    """

    def __init__(self, seconds: float, grace: float):
        self.seconds = seconds
        self.grace = grace
        self.started: float | None = None
        self.windows: list[tuple] = []  # (cell id, start, end) of cells that ran, for during()
        self.cell: tuple | None = None
        self.hard = os.environ.get("NBGRADER_EXECUTION", "") in ("autograde", "validate")
        self.lock = threading.Lock()

    def pre(self, info=None) -> None:
        with self.lock:
            self.started = time.monotonic()
        self.cell = (getattr(info, "cell_id", None), time.time())
        signal.signal(signal.SIGALRM, self.alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds, 1.0)

    def post(self, *args) -> None:
        with self.lock:
            self.started = None
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        if self.cell is not None:
            self.windows = (self.windows + [(*self.cell, time.time())])[-200:]
            self.cell = None

    def alarm(self, signum, frame) -> None:
        if self.started is None:
            return
        raise CellTimeLimit(f"this cell ran longer than {self.seconds:g} s and was stopped "
                            "(a loop that never ends, or a socket waiting for an answer that "
                            "never comes?)")

    def watchdog(self) -> None:
        while True:
            time.sleep(0.25)
            with self.lock:
                late = self.started is not None and \
                    time.monotonic() - self.started > self.seconds + self.grace
            if late and self.hard:
                sys.stderr.write("maillab.grading: the cell ignored its time limit; "
                                 "ending the kernel\n")
                sys.stderr.flush()
                os._exit(HARD_KILL_CODE)


_limit: _CellLimit | None = None


def limit_cells(seconds: float = CELL_LIMIT, grace: float = GRACE) -> None:
    """Give every following cell of this IPython kernel a time limit (no-op outside IPython)."""
    global _limit
    try:
        ip = get_ipython()  # noqa: F821 (IPython's builtin)
    except NameError:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if _limit is not None:
        for event, fn in (("pre_run_cell", _limit.pre), ("post_run_cell", _limit.post)):
            try:
                ip.events.unregister(event, fn)
            except ValueError:
                pass
        _limit.seconds, _limit.grace = seconds, grace
        limit = _limit
    else:
        limit = _limit = _CellLimit(seconds, grace)
        threading.Thread(target=limit.watchdog, name="maillab-cell-limit", daemon=True).start()
    ip.events.register("pre_run_cell", limit.pre)
    ip.events.register("post_run_cell", limit.post)


def prepare(lab, *, cell_limit: float = CELL_LIMIT, socket_timeout: float = SOCKET_TIMEOUT):
    """The setup cell's call: seal the evidence, limit cell time, time out sockets, and name
    unwritten functions in errors."""
    import socket

    if not lab.running:
        raise RuntimeError("start the lab first: lab = maillab.start(ports='any')")
    seal(lab)
    socket.setdefaulttimeout(socket_timeout)
    limit_cells(cell_limit)
    explain_unwritten()
    return lab


# ---------------------------------------------------------------------------- evidence

def maildir(lab, user: str, folder: str = "INBOX") -> dict[str, Path]:
    """The message files of a user's folder, read from disk: {unique base name: path}."""
    remote = _sealed_evidence(lab)
    if remote is not None:
        return remote.files(user, folder)
    acct = lab.store.account(user) or lab.store.find_address(user)
    if acct is None:
        raise KeyError(user)
    path = Path(lab.store.root) / acct.login
    if folder != "INBOX":
        path = path / ("." + folder)
    found = {}
    for sub in ("new", "cur"):
        try:
            names = os.listdir(path / sub)
        except FileNotFoundError:
            continue
        for name in names:
            if not name.startswith("."):
                found[name.split(",", 1)[0].split(":", 1)[0]] = path / sub / name
    return found


_TRACE = (b"return-path", b"delivered-to", b"received")


class DiskMessage:
    """A message file as the server stored it."""

    def __init__(self, path: Path):
        self.path = path
        self.raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        flags = path.name.rsplit(":2,", 1)[1] if ":2," in path.name else ""
        self.flags = set(flags)
        m = re.search(r",U=(\d+)", path.name)
        self.uid = int(m.group(1)) if m else None

    def header(self, name: str) -> str | None:
        import email
        import email.policy
        msg = email.message_from_bytes(self.raw, policy=email.policy.compat32)
        value = msg.get(name)
        return None if value is None else str(value)

    @property
    def body(self) -> bytes:
        """The message without the trace headers servers put on top (Return-Path, Delivered-To,
        Received): what the sending client handed over."""
        lines = self.raw.split(b"\r\n")
        i = 0
        while i < len(lines) and lines[i].split(b":", 1)[0].lower() in _TRACE:
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
        return b"\r\n".join(lines[i:])

    def __repr__(self):
        return f"<DiskMessage {self.path.name}>"


def unstuff(payload: bytes) -> bytes:
    """The message as stored from the DATA bytes a client sent (without the final '.' line)."""
    lines = payload.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


class Session:
    """One connection the learner's client opened, as the server recorded it."""

    def __init__(self, lines):
        self.lines = list(lines)
        self.service = self.lines[0].service if self.lines else ""
        self.conn = self.lines[0].conn if self.lines else None

    @property
    def client_bytes(self) -> bytes:
        return b"".join(l.raw for l in self.lines if l.who == "C")

    @property
    def client_lines(self) -> list[str]:
        return [l.text for l in self.lines if l.who == "C"]

    @property
    def server_lines(self) -> list[str]:
        return [l.text for l in self.lines if l.who == "S"]

    @property
    def events(self) -> list[str]:
        return [l.text for l in self.lines if l.who == "*"]

    def commands(self, tagged: bool = False) -> list[str]:
        """The command verbs the client sent, upper case (IMAP: ``tagged=True`` skips the tag;
        ``UID FETCH`` counts as one verb). Message text after SMTP's 354, IMAP literals and
        the lines a server asked for (SMTP's 334 in AUTH LOGIN, '+' in IMAP's AUTHENTICATE or
        IDLE and POP3's AUTH) are not commands."""
        out, in_data, skip, asked = [], False, 0, False
        for l in self.lines:
            if l.who == "S":
                in_data = in_data or l.text.startswith("354")
                asked = l.text.startswith("334") or l.text == "+" or l.text.startswith("+ ")
                continue
            if l.who != "C":
                continue
            if in_data:
                if l.raw.rstrip(b"\r\n") == b".":
                    in_data = False
                continue
            if skip > 0:
                skip = max(0, skip - len(l.raw))
                asked = False
                continue
            if asked:  # the rest of the command the server is waiting for
                asked = False
                continue
            m = re.search(rb"\{(\d+)\+?\}\r?\n$", l.raw)
            if m:
                skip = int(m.group(1))
            words = l.text.split()[1 if tagged else 0:]
            if not words:
                continue
            verb = words[0].upper()
            if verb == "UID" and len(words) > 1:
                verb = "UID " + words[1].upper()
            out.append(verb)
        return out

    def data_payloads(self) -> list[bytes]:
        """Raw client bytes of every SMTP message sent (between 354 and the '.' line)."""
        out, current = [], None
        for l in self.lines:
            if l.who == "S" and l.text.startswith("354"):
                current = []
            elif l.who == "C" and current is not None:
                if l.raw == b".\r\n":
                    out.append(b"".join(current))
                    current = None
                else:
                    current.append(l.raw)
        return out

    def queue_ids(self) -> list[str]:
        return [m.group(1) for t in self.server_lines
                for m in [re.match(r"250 2\.0\.0 OK: queued as (\w+)", t)] if m]

    def replies(self) -> list[int]:
        codes = []
        for t in self.server_lines:
            m = re.match(r"(\d{3})[ ]", t)
            if m:
                codes.append(int(m.group(1)))
        return codes

    def __repr__(self):
        return f"<Session {self.service} #{self.conn}: {len(self.lines)} lines>"

    def __str__(self):
        return "\n".join(str(l) for l in self.lines)


def timeout_hint() -> str:
    """What a learner's TimeoutError most often means (said by Watch and by the grader)."""
    return _("maillab: no answer came. Did the server get a whole line? Every command ends "
             "with \\r\\n: without it the server waits for the rest, and so does your code.")


def unwritten_function(error: BaseException, namespace: dict) -> str | None:
    """The name of the notebook's function that raised this NotImplementedError itself (the
    student version's ``raise NotImplementedError()``, not yet replaced), or None.

    A function belongs to the notebook when its globals are the notebook's ``namespace``; the
    innermost frame decides, so a written ``list_messages`` that calls an unwritten
    ``read_multiline`` names ``read_multiline``. Library code raising it (in Python, or in C
    called from the notebook's function: then that frame's instruction is a call, not a
    ``raise``) names nothing, and neither does a cell's own top level."""
    import opcode

    if not isinstance(error, NotImplementedError) or error.__traceback__ is None:
        return None
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    if tb.tb_frame.f_globals is not namespace or code.co_name.startswith("<") or \
            code.co_code[tb.tb_lasti:tb.tb_lasti + 1] != bytes([opcode.opmap["RAISE_VARARGS"]]):
        return None
    return code.co_name if "<" in code.co_qualname else code.co_qualname


def unwritten_message(name: str, text: str = "") -> str:
    """What a learner reads when a test met a function they have not written yet (said in
    the kernel and by the grader, word for word: the feedback shows it once)."""
    message = _("you have not written {0} yet (it still raises NotImplementedError)").format(name)
    return f"{message}: {text}" if text else message


def _explain_unwritten(shell, etype, value, tb, tb_offset=None):
    """IPython's handler for NotImplementedError (see :func:`explain_unwritten`)."""
    name = unwritten_function(value, shell.user_ns)
    if name is not None and not str(value).startswith(unwritten_message(name)):  # shown before
        value.args = (unwritten_message(name, str(value)),)
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)


def explain_unwritten() -> None:
    """Make this kernel say which function is not written yet when a cell ends in a
    NotImplementedError raised by one (the error's text; otherwise it would be empty),
    through IPython's custom exception handler. No-op outside IPython."""
    try:
        ip = get_ipython()  # noqa: F821 (IPython's builtin)
    except NameError:
        return
    ip.set_custom_exc((NotImplementedError,), _explain_unwritten)


class Watch:
    """What happened on the lab between entering and leaving a ``with watch(lab):`` block."""

    def __init__(self, lab, users=None):
        self.lab = lab
        lines = lab.recorder.lines()
        self.first_conn = (max((l.conn for l in lines), default=0)) + 1
        if users is None:
            users = account_logins(lab)
        self.users = list(users)
        self.before = {u: maildir(lab, u) for u in self.users}
        self.after: dict[str, dict[str, Path]] | None = None
        self.error: BaseException | None = None
        self.t0 = time.time()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, exc_type, exc, tb):
        self.settle()
        self.error = exc
        if isinstance(exc, TimeoutError):
            exc.add_note(timeout_hint())
        return False  # the learner's own traceback is the best feedback

    def settle(self) -> None:
        try:
            self.lab.settle(5)
        except Exception:
            pass
        self._quiet()
        self.after = {u: maildir(self.lab, u) for u in self.users}

    def _quiet(self, most: float = 0.05, step: float = 0.01) -> None:
        """Let the servers record the last lines of a just-closed connection: wait until the
        transcript stops growing for two steps (at most ``most`` seconds)."""
        end = time.monotonic() + most
        count, still = -1, 0
        remote = _sealed_evidence(self.lab) is not None
        while time.monotonic() < end and still < 2:
            now = len(self.lab.recorder.lines(self.first_conn) if remote else
                      self.lab.recorder.lines())
            still = still + 1 if now == count else 0
            count = now
            time.sleep(step)

    def sessions(self, service: str | None = None) -> list[Session]:
        """Connections opened since the mark, optionally of one service ("smtp:example.net")."""
        return _sessions(self.lab, service, lambda first: first.conn >= self.first_conn)

    def session(self, service: str) -> Session:
        found = self.sessions(service)
        assert found, f"no connection to {service} was made"
        return found[0]

    def logins(self) -> list:
        """Login attempts on any server since the mark (service, user, mechanism, secure, ...)."""
        return [a for a in self.lab.logins() if a.time >= self.t0]

    def new_messages(self, user: str, folder: str = "INBOX") -> list[DiskMessage]:
        before = self.before.get(user, {}) if folder == "INBOX" else {}
        now = maildir(self.lab, user, folder)
        return [DiskMessage(p) for k, p in sorted(now.items(), key=lambda kv: kv[1].stat().st_mtime)
                if k not in before]

    def removed(self, user: str) -> set[str]:
        return set(self.before[user]) - set(maildir(self.lab, user))

    def delivered(self, user: str, session: Session) -> list[DiskMessage]:
        """Messages new in the user's INBOX that came through ``session`` (queue id match)."""
        new = {m.path.name for m in self.new_messages(user)}
        return [m for m in _queue_delivered(self.lab, user, session) if m.path.name in new]


def _sessions(lab, service: str | None, keep) -> list[Session]:
    """The lab's connections whose first line passes ``keep``, optionally of one service. A
    connection whose first line fails ``keep`` is left out whole, even when its last lines
    (a late answer, the hang-up) come after: an earlier cell's session is no evidence."""
    by_conn: dict[int, list] = {}
    other: set[int] = set()
    for l in lab.recorder.lines():
        if service is not None and not (l.service == service or
                                        l.service.startswith(service + ":")):
            continue
        if l.conn in by_conn:
            by_conn[l.conn].append(l)
        elif l.conn not in other:
            if keep(l):
                by_conn[l.conn] = [l]
            else:
                other.add(l.conn)
    return [Session(v) for _k, v in sorted(by_conn.items())]


def _queue_delivered(lab, user: str, session: Session) -> list[DiskMessage]:
    """Messages in the user's INBOX whose Received: header names a queue id of ``session``."""
    ids = session.queue_ids()
    out = []
    for path in sorted(maildir(lab, user).values(), key=lambda p: p.stat().st_mtime):
        m = DiskMessage(path)
        received = [v for k, v in _headers(m.raw) if k.lower() == "received"]
        if any(re.search(rf"\bid {qid}\b", r) for r in received for qid in ids):
            out.append(m)
    return out


class CellEvidence:
    """What the servers saw while one notebook cell ran: for a part whose answer is a session
    the learner typed by hand in that cell (see :func:`during`)."""

    def __init__(self, lab, start: float, end: float):
        self.lab, self.start, self.end = lab, start, end

    def sessions(self, service: str | None = None) -> list[Session]:
        return _sessions(self.lab, service, lambda first: self.start <= first.time <= self.end)

    def session(self, service: str) -> Session:
        found = self.sessions(service)
        assert found, f"no connection to {service} was made in that cell"
        return found[0]

    def logins(self) -> list:
        return [a for a in self.lab.logins() if self.start <= a.time <= self.end]

    def delivered(self, user: str, session: Session) -> list[DiskMessage]:
        return _queue_delivered(self.lab, user, session)


def during(lab, cell: str | None = None) -> CellEvidence:
    """The evidence of one cell that already ran: by default the code cell just before the
    test that asks, or the cell with this id. In the notebook's own kernel the times come from
    :func:`prepare`'s cell hooks; ``maillab grade`` uses the times its executor recorded."""
    # fresh() loads a copy of this module: the cell hooks are the installed module's
    limit = _limit or getattr(sys.modules.get("maillab.grading"), "_limit", None)
    windows = limit.windows if limit is not None else []
    found = windows[-1] if cell is None and windows else \
        next((w for w in reversed(windows) if w[0] == cell), None)
    assert found is not None, "that cell has not run in this kernel"
    return CellEvidence(lab, found[1], found[2])


def account_logins(lab) -> list[str]:
    remote = _sealed_evidence(lab)
    if remote is not None:
        return remote.users()
    accounts = lab.store.accounts
    return [a.login for a in (accounts() if callable(accounts) else accounts)]


def _headers(raw: bytes) -> list[tuple[str, str]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    out: list[list[str]] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1][1] += " " + line.strip()
        elif ":" in line:
            k, v = line.split(":", 1)
            out.append([k.strip(), v.strip()])
    return [(k, v) for k, v in out]


def make_account(lab, messages=(), *, domain: str | None = None, flags=()) -> tuple[str, str]:
    """A new account with these messages (bytes or str) in its INBOX: (login, password).

    Tests use a fresh account each, so that what one test did cannot change another's mailbox.
    """
    import secrets
    from maillab.store import hash_password

    remote = _sealed_evidence(lab)
    if remote is not None:
        return remote.make_account(messages, domain=domain, flags=flags)
    login = "user" + secrets.token_hex(3)
    password = secrets.token_hex(5)
    acct = lab.store.add_account(login, password, domain or lab.domains[0],
                                 password_hash=hash_password(password, n=2**10))
    for i, m in enumerate(messages):
        raw = m.encode() if isinstance(m, str) else m
        acct.folder("INBOX").deliver(raw, flags[i] if i < len(flags) else ())
    return login, password


def sample(n: int, sender: str = "maria@example.net", subject: str | None = None,
           body: str | None = None) -> bytes:
    """A small test message (CRLF), numbered n; its body has a line starting with a dot."""
    subject = subject or f"Message number {n}"
    body = body or f"Hello, this is message {n}.\r\n.a line that starts with a dot\r\nBye\r\n"
    return (f"From: {sender}\r\nTo: someone@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <m{n}.{time.time_ns()}@example.net>\r\n\r\n{body}").encode()


def watch(lab, users=None) -> Watch:
    """``with watch(lab) as ev: learner_function(...)``, then check ``ev``."""
    return Watch(lab, users)


def plain_auth_user(session: Session) -> str | None:
    """The user an SMTP/POP3 ``AUTH PLAIN <base64>`` line logged in as, if any."""
    for t in session.client_lines:
        w = t.split()
        if len(w) >= 3 and w[0].upper() == "AUTH" and w[1].upper() == "PLAIN":
            try:
                return base64.b64decode(w[2]).split(b"\0")[1].decode()
            except Exception:
                return None
    return None


# ---- Level 1: sessions typed by hand
#
# A Level-1 part is a session cell (%%smtp, %%pop3, %%imap) followed by one small test cell per
# step. The first test cell reads the evidence of the session cell just before it
# (``during(lab)``) and works out every step at once; each test cell then asserts one step, so
# that nbgrader gives partial credit per step and a failed step says in one line what is missing
# and what the server saw. Only the servers' transcript and the store count, never what the
# cell printed. Hidden tests work the steps out again with the fresh module: ``_g.again(steps)``
# (the first cell's visible assert may fail before its hidden part runs, so later cells cannot
# rely on names the hidden part of the first one made).

class Steps:
    """The steps of one part typed by hand, each done or not, with a one-line reason."""

    def __init__(self, title: str, evidence: CellEvidence | None = None, how: tuple = ()):
        self.title = title
        self.results: dict[str, tuple[str, str | None]] = {}  # name -> (what, problem or None)
        self.session: Session | None = None  # the session the steps were read from
        self.evidence = evidence
        self.how = how  # (checker's name, its arguments after the evidence, keywords): again()

    def add(self, name: str, what: str, problem: str | None) -> None:
        self.results[name] = (what, problem)

    def done(self, name: str) -> bool:
        return self.results[name][1] is None

    def why(self, name: str) -> str:
        """One line for a failed step: what it is, and what is missing."""
        what, problem = self.results[name]
        return f"{what}: {problem}"

    def check(self, name: str) -> None:
        assert self.done(name), self.why(name)

    def nothing(self, service: str) -> "Steps":
        """Every step failed for one reason: the session cell made no connection."""
        why = _("the cell before this test made no connection to {0}: run your session cell, "
                "then this one").format(service)
        for name, (what, _problem) in self.results.items():
            self.results[name] = (what, why)
        return self

    def __str__(self) -> str:
        lines = [self.title]
        for what, problem in self.results.values():
            lines.append(f"  [x] {what}" if problem is None else f"  [ ] {what}: {problem}")
        return "\n".join(lines)

    __repr__ = __str__


def again(steps: Steps) -> Steps:
    """The same steps worked out again, by this module's checker, from the same cell's evidence
    (hidden tests: ``_g.again(steps)``)."""
    name, args, kwargs = steps.how
    ev = steps.evidence
    return globals()[name](CellEvidence(ev.lab, ev.start, ev.end), *args, **kwargs)


def _quoted(text: str, limit: int = 70) -> str:
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"'{text}'"


def _answer(text: str, protocol: str, limit: int = 70) -> str:
    """A server's answer quoted as it was sent (English on the wire, cut to ``limit``), then
    what it says in the learner's language when that reads otherwise."""
    from .explain import server_words  # imported when a step fails, not with the module
    said = server_words(protocol, text)
    return _quoted(text, limit) + (f" ({said})" if said else "")


class Exchange(NamedTuple):
    """One command the client typed and the server's answer to it (its lines)."""

    command: str  # the line as typed ('.' for the end of an SMTP message)
    replies: list
    data: bytes = b""  # SMTP: the message lines sent after 354 (for the '.' exchange)

    @property
    def verb(self) -> str:
        words = self.command.split()
        return words[0].upper() if words else ""

    @property
    def answer(self) -> str:
        """The last line of the answer (the one with the verdict), or ''."""
        return self.replies[-1] if self.replies else ""

    def ok(self, prefix: str) -> bool:
        return self.answer.startswith(prefix)


def exchanges(session: "Session", protocol: str = "smtp") -> list[Exchange]:
    """The session as (command, answer) pairs in order. SMTP: the message after 354 and its
    final '.' are one exchange whose ``command`` is '.'; IMAP: a literal's lines belong to the
    command they follow; the answer is every server line up to the next client line. A line
    the server asked for (SMTP's 334 in AUTH, a '+' in IMAP's AUTHENTICATE or IDLE, POP3's AUTH)
    belongs to the command, whose answer comes after it."""
    out: list[Exchange] = []
    data: list[bytes] | None = None
    literal = 0
    asked = False  # the server's last line asked for more of the command
    for line in session.lines:
        if line.who == "S":
            if out:
                out[-1].replies.append(line.text)
            if protocol == "smtp" and line.text.startswith("354"):
                data = []
            asked = line.text.startswith("334") if protocol == "smtp" else \
                line.text == "+" or line.text.startswith("+ ")
            continue
        if line.who != "C":
            continue
        if data is not None:
            if line.raw.rstrip(b"\r\n") == b".":
                out.append(Exchange(".", [], b"".join(data)))
                data = None
            else:
                data.append(line.raw)
            continue
        if (literal > 0 or asked) and out:
            literal, asked = max(0, literal - len(line.raw)), False
            out[-1] = out[-1]._replace(data=out[-1].data + line.raw)
            continue
        m = re.search(rb"\{(\d+)\+?\}\r?\n$", line.raw) if protocol == "imap" else None
        literal = int(m.group(1)) if m else 0
        out.append(Exchange(line.text, []))
    if data is not None:  # the message never ended: what was sent after 354
        out.append(Exchange("", [], b"".join(data)))
    return out


def _refusal(steps: list[Exchange], failed) -> str:
    """', and the server refused X with Y' for the first refused command, or ''."""
    bad = next((e for e in steps if failed(e)), None)
    if bad is None:
        return ""
    return _(" (the server answered {0} with {1})").format(_quoted(bad.command, 40),
                                                          _answer(bad.answer, "smtp", 60))


def _header_problem(message: bytes) -> str | None:
    """Why a typed message has no header block and body apart, or None."""
    text = message.decode("utf-8", "replace")
    lines = text.split("\r\n")
    for i, line in enumerate(lines):
        if line == "":
            return None if i > 0 else _("the message starts with an empty line, so it has "
                                        "no headers")
        if line[:1] in (" ", "\t") and i > 0:
            continue
        if not re.match(r"[!-9;-~]+:", line):
            return _("no blank line between the headers and the body: {0} was stored as a "
                     "header line, and the stored message has no body").format(_quoted(line, 40))
    return _("no blank line between the headers and the body: the stored message has no body")


def _typed_headers(message: bytes) -> dict[str, str]:
    head = message.split(b"\r\n\r\n", 1)[0]
    return {k.lower(): v for k, v in _headers(head + b"\r\n\r\n")}


def _auth_user(e: Exchange) -> str | None:
    """The user an SMTP (or POP3) ``AUTH PLAIN`` or ``AUTH LOGIN`` exchange named (its base64 on the
    command line or on the lines the server asked for), or None."""
    words = e.command.split()
    mechanism = words[1].upper() if len(words) > 1 else ""
    answers = words[2:3] + e.data.decode("ascii", "replace").split()
    if mechanism not in ("PLAIN", "LOGIN") or not answers:
        return None
    try:
        decoded = base64.b64decode(answers[0], validate=True)
        return (decoded.split(b"\0")[1] if mechanism == "PLAIN" else decoded).decode()
    except (ValueError, IndexError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None


def smtp_steps(evidence: CellEvidence, service: str, *, rcpt: str, user: str,
               login: str | None = None, tls: bool = False,
               headers: tuple = ("From", "Date", "Subject")) -> Steps:
    """The steps of an SMTP session typed by hand in one cell: (STARTTLS,) (AUTH,) EHLO, the
    envelope to ``rcpt``, the message (headers and body apart, in ``user``'s mailbox, with
    ``headers``), QUIT."""
    steps = Steps(_("Your SMTP session, as the server saw it:"), evidence, (
        "smtp_steps", (service,), dict(rcpt=rcpt, user=user, login=login, tls=tls,
                                       headers=headers)))
    found = evidence.sessions(service)
    session = found[-1] if found else Session([])
    ex = exchanges(session, "smtp")
    refused = lambda e: e.answer[:1] in ("4", "5")  # noqa: E731
    tls_at = next((i for i, e in enumerate(ex) if e.verb == "STARTTLS" and e.ok("220")), None)

    hello = [e for e in ex if e.verb in ("EHLO", "HELO") and e.ok("250")]
    steps.add("hello", _("say hello (EHLO)"), None if hello else
              _("no EHLO was accepted") + _refusal(ex, refused))
    if tls:
        again = tls_at is not None and any(
            e.verb == "EHLO" and e.ok("250") for e in ex[tls_at + 1:])
        problem = None
        if tls_at is None:
            problem = _("no STARTTLS was accepted") + _refusal(ex, refused)
        elif not again:
            problem = _("no EHLO after STARTTLS: say EHLO again once TLS is on (the server "
                        "forgets what was said before)")
        steps.add("tls", _("switch on encryption (STARTTLS, then EHLO again)"), problem)
    if login:
        auth = [e for e in ex if e.verb == "AUTH"]
        done = [e for e in auth if e.ok("235")]
        problem = None
        if not auth:
            problem = _("no AUTH line: log in before MAIL FROM")
        elif not done:
            problem = _("AUTH was refused: {0}").format(_answer(auth[-1].answer, "smtp"))
        elif _auth_user(done[-1]) not in (None, login):
            problem = _("you logged in as {0}, not as {1}").format(_auth_user(done[-1]), login)
        steps.add("login", _("log in as {0} (AUTH)").format(login), problem)

    mail = next((i for i, e in enumerate(ex) if e.verb == "MAIL" and e.ok("250")), None)
    wanted = f"<{rcpt.lower()}>"
    rcpts = [i for i, e in enumerate(ex) if e.verb == "RCPT" and e.ok("250")
             and wanted in e.command.lower().replace(" ", "")]
    if mail is None:
        problem = _("no MAIL FROM was accepted") + _refusal(ex, refused)
    elif not rcpts or rcpts[-1] < mail:
        problem = _("no RCPT TO:<{0}> was accepted after MAIL FROM").format(rcpt) + \
            _refusal(ex, refused)
    else:
        problem = None
    steps.add("envelope", _("the envelope: MAIL FROM, then RCPT TO:<{0}>").format(rcpt), problem)

    data = [e for e in ex if e.verb == "DATA"]
    ends = [e for e in ex if e.command == "." and e.ok("250")]
    typed = ends[-1].data if ends else b""
    problem = None
    if not data:
        problem = _("no DATA command: the server got no message")
    elif not data[-1].ok("354"):
        problem = _("DATA was refused: {0}").format(_answer(data[-1].answer, "smtp"))
    elif not ends:
        unended = next((e for e in ex if e.command == ""), None)
        problem = _("the message never ended: type a line holding only a dot after it "
                    "(everything after DATA, QUIT too, became part of the message)") \
            if unended is not None else _("the message was refused") + _refusal(ex, refused)
    else:
        problem = _header_problem(typed)
        if problem is None:
            try:
                evidence.lab.settle(5)  # the other provider's copy may still be on its way
            except Exception:
                pass
            if not evidence.delivered(user, session):
                problem = _("the message is not in {0}'s mailbox").format(rcpt)
    steps.add("message", _("the message: headers, a blank line, the body, a line with a dot"),
              problem)

    if headers:
        have = _typed_headers(typed) if ends else {}
        missing = [h for h in headers if h.lower() not in have]
        problem = None
        if not ends:
            problem = _("no message was sent")
        elif missing:
            problem = _("your message has no {0} header (RFC 5322 asks every message for "
                        "From: and Date:)").format(", ".join(h + ":" for h in missing))
        elif "date" in have:
            import email.utils
            try:
                email.utils.parsedate_to_datetime(have["date"])
            except (TypeError, ValueError):
                problem = _("the Date: header {0} is not a date in the form "
                            "'Mon, 1 Jun 2026 10:00:00 +0300'").format(_quoted(have["date"], 40))
        steps.add("headers", _("the headers {0}").format(", ".join(headers)), problem)

    quit_ = [e for e in ex if e.verb == "QUIT"]
    steps.add("quit", _("say goodbye (QUIT)"), None if quit_ and quit_[-1].ok("221") else
              _("no QUIT: end the session with QUIT (the server answers 221)"))
    steps.session = session
    return steps if found else steps.nothing(service)


def pop3_read_steps(evidence: CellEvidence, domain: str, *, user: str, came_from: str,
                    tls: bool = True) -> Steps:
    """The steps of a POP3 session typed by hand that downloads a message which crossed from
    the provider ``came_from`` (a Received: header names its server) and keeps a copy on the
    server: log in as ``user`` (``tls``: on an encrypted connection), RETR it, no DELE, QUIT.
    The session is the cell's last one with ``domain``'s POP3 server, on either port."""
    steps = Steps(_("Your POP3 session, as the server saw it:"), evidence, (
        "pop3_read_steps", (domain,), dict(user=user, came_from=came_from, tls=tls)))
    found = [s for s in evidence.sessions() if s.service in (f"pop3s:{domain}", f"pop3:{domain}")]
    session = found[-1] if found else Session([])
    ex = exchanges(session, "pop3")
    names = [e.command.split(None, 1)[1].strip().lower() for e in ex
             if e.verb == "USER" and len(e.command.split()) > 1]
    passed = [e for e in ex if e.verb == "PASS"]
    problem = None
    if not names:
        problem = _("no USER line: say who you are with USER {0}").format(user)
    elif not passed:
        problem = _("no PASS line after USER")
    elif not passed[-1].ok("+OK"):
        problem = _("the password was refused: {0}").format(_answer(passed[-1].answer, "pop3"))
    elif names[-1].split("@")[0] != user:
        problem = _("you logged in as {0}, not as {1}").format(names[-1], user)
    elif tls and not (session.service.startswith("pop3s") or any(
            e.verb == "STLS" and e.ok("+OK") for e in ex)):
        problem = _("you logged in on port 110 without encryption, so your password crossed "
                    "the network readable: add --tls (port 995)")
    steps.add("login", _("log in as {0} (USER, PASS) over an encrypted connection").format(user)
              if tls else _("log in as {0} (USER, PASS)").format(user), problem)

    retrs = [e for e in ex if e.verb == "RETR"]
    # a multi-line answer: its first line says yes or no, the last is the dot
    sent = [e for e in retrs if e.replies and e.replies[0].startswith("+OK")]
    wanted = f"received: from {came_from.lower()}"
    problem = None
    if not retrs:
        problem = _("no RETR command: the server sent no message")
    elif not sent:
        problem = _("RETR was refused: {0}").format(_answer(retrs[-1].answer, "pop3"))
    elif not any(line.lower().startswith(wanted) for e in sent for line in e.replies):
        problem = _("the message you downloaded did not come from {0} (no 'Received: from {0}' "
                    "header): download one of the messages from there").format(came_from)
    steps.add("retr", _("download the message that came from {0} (RETR)").format(came_from),
              problem)

    deleted = [e for e in ex if e.verb == "DELE" and e.ok("+OK")]
    problem = None
    if deleted:
        problem = _("you sent {0}: the message goes away at QUIT").format(
            _quoted(deleted[0].command))
    elif not sent:
        problem = _("nothing was downloaded, so there is no copy to keep yet")
    steps.add("kept", _("keep a copy on the server (no DELE)"), problem)
    quit_ = [e for e in ex if e.verb == "QUIT"]
    steps.add("quit", _("say goodbye (QUIT)"), None if quit_ and quit_[-1].ok("+OK") else
              _("no QUIT: end the session with QUIT (the server answers +OK)"))
    return steps if found else steps.nothing(f"pop3s:{domain}")


def http_steps(evidence: CellEvidence, method: str, path: str, status: int) -> Steps:
    """One request typed by hand in a ``%%http`` cell: did ``method path`` reach the webmail,
    and was it answered with ``status``? (The webmail records request and status lines only.)"""
    steps = Steps(_("Your HTTP request, as the webmail saw it:"), evidence, (
        "http_steps", (method, path, status), {}))
    found = [s for s in evidence.sessions("http") if s.client_lines]
    wanted = f"{method} {path} ".upper()
    asked = [s for s in found if s.client_lines[0].upper().startswith(wanted)]
    answers = [s.server_lines[0] if s.server_lines else "" for s in asked]
    problem = None
    if not found:
        problem = _("no request reached the webmail: a request line has three parts, such as "
                    "'GET /login HTTP/1.1', then a Host: line")
    elif not asked:
        problem = _("the webmail got {0}, not {1} {2}").format(
            _quoted(found[-1].client_lines[0], 50), method, path)
    elif not any(a.split()[1:2] == [str(status)] for a in answers):
        problem = _("the webmail answered {0}, not {1}").format(_answer(answers[-1], "http", 60),
                                                                 status)
        if (method, path, status) == ("GET", "/mail", 200) and answers[-1].split()[1:2] == ["303"]:
            problem += _(": it sent you to the login page, so your request had no session "
                         "cookie of this run (add the line Cookie: {Set-Cookie} just after the "
                         "login)")
    steps.add("request", _("{0} {1} answered with {2}").format(method, path, status), problem)
    return steps


WAITED = 1.0  # seconds: a 400 this long after the request line means the body never came


def webmail_login_steps(evidence: CellEvidence, address: str) -> Steps:
    """A login typed by hand in a ``%%http`` cell: ``POST /login`` with the form's token and the
    cookie of the login page (step "token"), and the webmail logging in to the mail server as
    ``address`` (step "login"). The webmail records request and status lines only, so the
    status says which: 403 token or cookie, 400 a form without address or password (or, long
    after the request, a body shorter than its Content-Length), 401 a wrong password."""
    steps = Steps(_("Your login, as the webmail saw it:"), evidence, (
        "webmail_login_steps", (address,), {}))
    deadline = time.monotonic() + WAITED  # an answer to a body that never came is written
    while True:                            # when the cell hangs up: it may come just after
        found = [s for s in evidence.sessions("http") if s.client_lines]
        posts = [s for s in found if s.client_lines[0].upper().startswith("POST /LOGIN ")]
        if not posts or posts[-1].server_lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    post = posts[-1] if posts else Session([])
    answer = post.server_lines[0] if post.server_lines else ""
    status = answer.split()[1] if len(answer.split()) > 1 else ""
    times = [l.time for l in post.lines if l.who in ("C", "S")]
    waited = times[-1] - times[0] if len(times) > 1 else 0.0  # request line to status line
    token = login = None
    if not found:
        token = _("no request reached the webmail: the first line is POST /login HTTP/1.1 (and "
                  "if you typed Content-Length, a number smaller than your body makes the "
                  "webmail refuse the request unread: leave that line out)")
    elif not posts:
        token = _("the webmail got {0}, not POST /login").format(
            _quoted(found[-1].client_lines[0], 50))
    elif status == "403":
        token = _("the webmail answered 403 Forbidden: it did not get this run's token and "
                  "cookie together (csrf={csrf} in the body, the line Cookie: {Set-Cookie}, "
                  "Content-Type), right after a GET /login")
    elif not status or (status == "400" and waited >= WAITED):
        token = _("the webmail waited for the rest of your body until your cell hung up: "
                  "your Content-Length is larger than the body (leave that line out: maillab "
                  "counts the bytes)")
    elif status not in ("303", "400", "401", "429"):
        token = _("the webmail answered {0}").format(_answer(answer, "http", 60))
    if token is not None:
        login = _("the webmail did not look at the address and password: the form was "
                  "refused first")
    elif status == "400":
        login = _("the webmail answered 400 Bad Request: no address and password in your form "
                  "(address={0}&password=..., each joined with &)").format(address)
    elif status == "401":
        login = _("the webmail answered 401 Unauthorized: the mail server did not accept that "
                  "address and password (log in as {0})").format(address)
    elif status == "429":
        login = _("the webmail answered 429: too many logins were tried at once; wait a few "
                  "seconds and run the cell again")
    else:
        users = [a.user for a in evidence.logins() if a.success]
        if address.lower() not in [u.lower() for u in users]:
            login = _("you logged in as {0}, not as {1}").format(
                users[-1] if users else "?", address)
    steps.add("token", _("send the login form with this run's token and cookie"), token)
    steps.add("login", _("log in as {0} (the webmail answers 303 and a session cookie)")
              .format(address), login)
    steps.session = post
    return steps


def readable_commands(session: Session | None) -> set[str]:
    """The command verbs of an SMTP session that crossed the network readable: every one sent
    before the server agreed to STARTTLS (all of them if it never did)."""
    readable: set[str] = set()
    for e in exchanges(session or Session([]), "smtp"):
        if e.verb.isalpha():  # a command word (not a note such as nbgrader's ### markers)
            readable.add(e.verb)
        if e.verb == "STARTTLS" and e.ok("220"):
            break
    return readable


# The names of a mail program's account window (Thunderbird's): connection security ...
SECURITY = {"ssl/tls": "SSL/TLS", "starttls": "STARTTLS", "none": "None"}
# ... and which one each of the lab's ports speaks
PORT_SECURITY = {"imaps": "SSL/TLS", "pop3s": "SSL/TLS", "smtps": "SSL/TLS",
                 "imap": "STARTTLS", "pop3": "STARTTLS", "submission": "STARTTLS",
                 "smtp": "STARTTLS"}
SETTING_FIELDS = ("server", "port", "security", "authentication", "username")


def _setting_problem(lab, group: dict, protocol: str, domain: str) -> str | None:
    """Why a group of settings (incoming or outgoing) cannot work, before connecting."""
    missing = [f for f in SETTING_FIELDS if group.get(f) in (None, "")]
    if missing:
        return _("no {0} in these settings").format(", ".join(missing))
    server = str(group["server"]).strip().lower()
    try:
        addresses = {a[4][0] for a in socket.getaddrinfo(server, None)}
    except (OSError, UnicodeError):
        return _("server: {0} is not a name this computer knows: the lab runs on this "
                 "computer, localhost").format(_quoted(server, 40))
    if not all(a.startswith("127.") or a == "::1" for a in addresses):
        return _("server: {0} is another computer; the lab runs on this one, localhost").format(
            _quoted(server, 40))
    try:
        port = int(group["port"])
    except (TypeError, ValueError):
        return _("port: {0} is not a number").format(_quoted(str(group["port"]), 20))
    service = next((s for s in lab.services if s.port == port), None)
    if service is None:
        return _("port: nothing of the lab listens on {0}: read the ports in the lab's "
                 "table").format(port)
    family = "smtp" if service.protocol in ("smtps", "submission") else service.protocol.rstrip("s")
    if service.protocol == "smtp" and protocol == "smtp":
        return _("port: {0} stands for 25, where servers pass mail to each other; a mail "
                 "program sends on the ports standing for 587 or 465").format(port)
    if family != protocol:
        return _("port: {0} is the lab's {1} port, not {2}'s").format(
            port, service.protocol.upper(), protocol.upper())
    if service.domain != domain:
        return _("port: {0} is {1}'s server, but this account's mail is at {2}").format(
            port, service.domain, domain)
    security = SECURITY.get(str(group["security"]).strip().lower())
    if security is None:
        return _("connection security: {0} is not one of None, STARTTLS, SSL/TLS").format(
            _quoted(str(group["security"]), 20))
    if security == "None":
        return _("connection security: None sends your password readable over the network; "
                 "port {0} speaks {1}").format(port, PORT_SECURITY[service.protocol])
    if security != PORT_SECURITY[service.protocol]:
        return _("connection security: port {0} speaks {1}, not {2}").format(
            port, PORT_SECURITY[service.protocol], security)
    if str(group["authentication"]).strip().lower() != "normal password":
        return _("authentication: choose Normal password (it travels inside TLS)")
    return None


def _log_in_with(lab, protocol: str, group: dict, password: str) -> str | None:
    """Connect and log in as a mail program with these settings would; why not, or None."""
    import imaplib
    import poplib
    import smtplib
    host, port, user = str(group["server"]).strip(), int(group["port"]), str(group["username"])
    context = lab.client_context()
    tls = SECURITY[str(group["security"]).strip().lower()] == "SSL/TLS"
    try:
        if protocol == "imap":
            conn = (imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=5) if tls
                    else imaplib.IMAP4(host, port, timeout=5))
            if not tls:
                conn.starttls(context)
            conn.login(user, password)
            conn.logout()
        elif protocol == "pop3":
            conn = (poplib.POP3_SSL(host, port, context=context, timeout=5) if tls
                    else poplib.POP3(host, port, timeout=5))
            if not tls:
                conn.stls(context)
            conn.user(user)
            conn.pass_(password)
            conn.quit()
        else:
            conn = (smtplib.SMTP_SSL(host, port, context=context, timeout=5) if tls
                    else smtplib.SMTP(host, port, timeout=5))
            conn.ehlo("settings-check.example.org")
            if not tls:
                conn.starttls(context=context)
                conn.ehlo("settings-check.example.org")
            conn.login(user, password)
            conn.quit()
    except (imaplib.IMAP4.error, poplib.error_proto, smtplib.SMTPAuthenticationError) as e:
        return _("user name or password: the server refused the login as {0} ({1})").format(
            _quoted(user, 40), _quoted(str(e), 60))
    except (OSError, smtplib.SMTPException) as e:
        return _("the connection failed: {0}").format(_quoted(str(e) or type(e).__name__, 80))
    return None


def mail_settings_steps(lab, account: dict) -> Steps:
    """A mail program's account settings, filled in as its account window shows them, checked
    as the window's wizard does: by connecting with them and logging in. ``account``:
    ``{"email", "password", "incoming": {"protocol", "server", "port", "security",
    "authentication", "username"}, "outgoing": {the same without "protocol"}}``."""
    steps = Steps(_("Your account settings, tried on the lab's servers:"))
    account = account if isinstance(account, dict) else {}
    email = str(account.get("email", ""))
    domain = email.rpartition("@")[2].lower()
    for group_name, what in (("incoming", _("incoming server (IMAP or POP3)")),
                             ("outgoing", _("outgoing server (SMTP)"))):
        group = account.get(group_name)
        if "@" not in email:
            steps.add(group_name, what, _("no e-mail address in the settings (\"email\")"))
            continue
        if not isinstance(group, dict):
            steps.add(group_name, what, _("no {0} settings (a dict)").format(group_name))
            continue
        protocol = "smtp" if group_name == "outgoing" else \
            str(group.get("protocol", "")).strip().lower()
        problem = None
        if group_name == "incoming" and group.get("protocol") in (None, ""):
            problem = _("no protocol in these settings")
        elif protocol not in ("imap", "pop3", "smtp"):
            problem = _("protocol: {0} is neither IMAP nor POP3").format(
                _quoted(str(group.get("protocol")), 20))
        problem = problem or _setting_problem(lab, group, protocol, domain) or \
            _log_in_with(lab, protocol, group, str(account.get("password", "")))
        steps.add(group_name, what, problem)
    return steps


# The mailbox a POP3 part typed by hand starts from (fill_mailbox), and what its steps check.
POP3_BOX = [("Welcome to POP3", "Read me first: this is message 1."),
            ("You have WON a prize!!!", "Spam. Delete me."),
            ("Homework for Monday", "Keep me on the server.")]


def fill_mailbox(lab, login: str, password: str, address: str, drop: str | None = None
                 ) -> None:
    """Empty a user's INBOX (and delete the folder ``drop``) over IMAP, then deliver POP3_BOX to
    it over SMTP (port 25), so that a session typed by hand starts from the same three messages
    however often it ran before."""
    import imaplib
    import smtplib

    imap = imaplib.IMAP4(lab.host, lab.port("imap"), timeout=5)
    imap.login(login, password)
    if drop:
        imap.delete(drop)  # NO when it is not there: fine
    if int(imap.select("INBOX")[1][0]):
        imap.store("1:*", "+FLAGS", "(\\Deleted)")
        imap.expunge()
    imap.logout()
    with smtplib.SMTP(lab.host, lab.port("smtp"), timeout=5) as smtp:
        for i, (subject, body) in enumerate(POP3_BOX, 1):
            smtp.sendmail("maria@example.net", [address],
                          f"From: maria@example.net\r\nTo: {address}\r\nSubject: {subject}\r\n"
                          f"Message-ID: <box{i}.{time.time_ns()}@example.net>\r\n\r\n"
                          f"{body}\r\n".encode())
    try:
        lab.settle(5)
    except Exception:
        pass


def pop3_steps(evidence: CellEvidence, service: str, *, user: str, retr: int, dele: int
               ) -> Steps:
    """The steps of a POP3 session typed by hand on POP3_BOX: log in as ``user``, look (STAT or
    LIST), download message ``retr``, delete message ``dele``, QUIT (so that the server
    deletes it), and every other message still there."""
    steps = Steps(_("Your POP3 session, as the server saw it:"), evidence, (
        "pop3_steps", (service,), dict(user=user, retr=retr, dele=dele)))
    found = evidence.sessions(service)
    session = found[-1] if found else Session([])
    ex = exchanges(session, "pop3")
    status = lambda e: e.replies[0] if e.replies else ""  # noqa: E731
    refused = lambda e: status(e).startswith("-ERR")  # noqa: E731

    def first_error() -> str:
        bad = next((e for e in ex if refused(e)), None)
        return "" if bad is None else _(" (the server answered {0} with {1})").format(
            _quoted(bad.command, 40), _answer(status(bad), "pop3", 60))

    named = [e for e in ex if e.verb == "USER" and status(e).startswith("+OK")]
    # USER and PASS, APOP, or SASL (RFC 5034: AUTH PLAIN, its base64 on the line or after '+ ')
    logged = [e for e in ex if e.verb in ("PASS", "APOP") and status(e).startswith("+OK")
              or e.verb == "AUTH" and e.replies and e.replies[-1].startswith("+OK")]
    problem = None
    if not logged:
        problem = _("the login did not work") + first_error()
    elif logged[-1].verb == "AUTH":
        if _auth_user(logged[-1]) not in (None, user):
            problem = _("you logged in as {0}, not as {1}").format(_auth_user(logged[-1]), user)
    elif named and named[-1].command.split()[1:2] != [user]:
        problem = _("you logged in as {0}, not as {1}").format(
            " ".join(named[-1].command.split()[1:2]), user)
    steps.add("login", _("log in as {0} (USER, PASS)").format(user), problem)

    looked = [e for e in ex if e.verb in ("STAT", "LIST") and status(e).startswith("+OK")]
    steps.add("look", _("look how much mail there is (STAT or LIST)"), None if looked else
              _("no STAT or LIST was answered +OK") + first_error())

    subjects = [s for s, _body in POP3_BOX]
    want = subjects[retr - 1]
    got = [e for e in ex if e.verb == "RETR" and e.command.split()[1:2] == [str(retr)]
           and status(e).startswith("+OK")]
    problem = None
    if not got:
        problem = _("no RETR {0} was answered +OK").format(retr) + first_error()
    elif not any(r == f"Subject: {want}" for r in got[-1].replies):
        problem = _("message {0} is not {1}: run the cell that fills the mailbox again, then "
                    "your session").format(retr, _quoted(want))
    steps.add("retr", _("download message {0} (RETR {0})").format(retr), problem)

    marked = [e for e in ex if e.verb == "DELE" and e.command.split()[1:2] == [str(dele)]
              and status(e).startswith("+OK")]
    steps.add("dele", _("mark message {0} for deletion (DELE {0})").format(dele), None if marked
              else _("no DELE {0} was answered +OK").format(dele) + first_error())

    left = {DiskMessage(p).header("Subject") for p in maildir(evidence.lab, user).values()}
    quit_ = [e for e in ex if e.verb == "QUIT" and status(e).startswith("+OK")]
    spam = subjects[dele - 1]
    problem = None
    if not quit_:
        problem = _("no QUIT: without it the server never reaches its UPDATE state, so it "
                    "deletes nothing")
    elif spam in left:
        problem = _("{0} is still on the server").format(_quoted(spam))
    steps.add("quit", _("QUIT, so that the server really deletes message {0}").format(dele),
              problem)

    gone = [s for i, s in enumerate(subjects, 1) if i != dele and s not in left]
    problem = None
    if not logged:
        problem = _("you did not log in to {0}'s mailbox").format(user)
    elif gone:
        problem = _("{0} was deleted too: keep a copy of the rest (a session run twice deletes "
                    "another message the second time: run the cell that fills the mailbox, then "
                    "your session once)").format(_quoted(gone[0]))
    steps.add("kept", _("leave a copy of every other message on the server"), problem)
    return steps if found else steps.nothing(service)


def imap_steps(evidence: CellEvidence, service: str, *, user: str, folder: str, subject: str
               ) -> Steps:
    """The steps of an IMAP session typed by hand on POP3_BOX: log in as ``user``, CREATE
    ``folder``, move the message with ``subject`` into it (MOVE, or COPY then \\Deleted and
    EXPUNGE), flag it \\Flagged, find it with SEARCH in that folder, LOGOUT."""
    steps = Steps(_("Your IMAP session, as the server saw it:"), evidence, (
        "imap_steps", (service,), dict(user=user, folder=folder, subject=subject)))
    found = evidence.sessions(service)
    session = found[-1] if found else Session([])
    ex = exchanges(session, "imap")

    def verb(e: Exchange) -> str:
        words = e.command.split()
        if len(words) > 2 and words[1].upper() == "UID":
            return "UID " + words[2].upper()
        return words[1].upper() if len(words) > 1 else ""

    def status(e: Exchange) -> str:
        """OK, NO or BAD from the line tagged with the command's tag, or ''."""
        tag = e.command.split()[0] if e.command.split() else None
        for r in e.replies:
            words = r.split()
            if tag and len(words) > 1 and words[0] == tag:
                return words[1].upper()
        return ""

    def first_error() -> str:
        bad = next((e for e in ex if status(e) in ("NO", "BAD")), None)
        tagged = "" if bad is None else next(r for r in bad.replies if r.split()[:1] ==
                                             bad.command.split()[:1])
        return "" if bad is None else _(" (the server answered {0} with {1})").format(
            _quoted(bad.command, 40), _quoted(tagged, 60))

    def name(e: Exchange) -> str:
        words = e.command.split()
        return words[2].strip('"') if len(words) > 2 else ""

    ok = [e for e in ex if status(e) == "OK"]
    logged = [e for e in ok if verb(e) in ("LOGIN", "AUTHENTICATE")]
    problem = None
    if not logged:
        problem = _("the login did not work") + first_error()
    elif verb(logged[-1]) == "LOGIN" and name(logged[-1]) != user:
        problem = _("you logged in, but not as {0}").format(user)
    steps.add("login", _("log in as {0} (LOGIN)").format(user), problem)

    created = [e for e in ok if verb(e) == "CREATE" and name(e) == folder]
    steps.add("create", _("create the folder {0} (CREATE)").format(folder), None if created else
              _("no CREATE {0} was answered OK").format(folder) + first_error())

    def subjects(box: str) -> dict[str, DiskMessage]:
        try:
            files = maildir(evidence.lab, user, box)
        except Exception:
            return {}
        return {DiskMessage(p).header("Subject"): DiskMessage(p) for p in files.values()}

    inbox, moved = subjects("INBOX"), subjects(folder)
    problem = None
    if subject not in moved:
        problem = _("{0} is not in the folder {1}").format(_quoted(subject), folder) + \
            first_error()
    elif subject in inbox:
        problem = _("{0} was copied, not moved: it is still in INBOX (MOVE, or COPY then STORE "
                    "+FLAGS (\\Deleted) and EXPUNGE)").format(_quoted(subject))
    steps.add("move", _("move {0} into {1}").format(_quoted(subject), folder), problem)

    flagged = subject in moved and "F" in moved[subject].flags
    steps.add("flag", _("flag it (STORE ... +FLAGS (\\Flagged))"), None if flagged else
              _("the message in {0} has no \\Flagged flag on the server").format(folder)
              if subject in moved else _("there is no message to flag in {0}").format(folder))

    selected = None
    problem = _("no SEARCH was answered OK while {0} was selected").format(folder)
    for e in ex:
        if verb(e) in ("SELECT", "EXAMINE"):
            selected = name(e) if status(e) == "OK" else None
        elif verb(e) in ("SEARCH", "UID SEARCH") and status(e) == "OK" and selected == folder:
            hits = [r.split()[2:] for r in e.replies if r.upper().startswith("* SEARCH")]
            problem = None if any(hits) else _("your SEARCH in {0} found nothing").format(folder)
            if problem is None:
                break
    steps.add("search", _("find it with SEARCH, in {0}").format(folder), problem)

    out = [e for e in ex if verb(e) == "LOGOUT" and status(e) == "OK"]
    steps.add("logout", _("say goodbye (LOGOUT)"), None if out else
              _("no LOGOUT: end the session with LOGOUT (the server answers * BYE, then OK)"))
    return steps if found else steps.nothing(service)


# ---------------------------------------------------------------------------- integrity

def _code_digest(code: types.CodeType) -> str:
    h = hashlib.sha256(code.co_code)
    for c in code.co_consts:
        h.update(_code_digest(c).encode() if isinstance(c, types.CodeType) else repr(c).encode())
    h.update(repr(code.co_names).encode())
    return h.hexdigest()


def _source_digests(path: Path) -> dict[str, set[str]]:
    """qualname -> digests of the functions of that name compiled from a source file."""
    out: dict[str, set[str]] = {}

    def walk(code):
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                out.setdefault(c.co_qualname, set()).add(_code_digest(c))
                walk(c)
    walk(compile(path.read_bytes(), str(path), "exec"))
    return out


_CHECKED_MODULES = ("lab", "transcript", "store", "smtp", "net", "grading")


def _unwrap(value):
    """The functions behind a class attribute (method, static/class method, property)."""
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if f is not None]
    value = getattr(value, "__func__", value)
    # functools.lru_cache and friends: the function they wrap is the code to check
    return [getattr(value, "__wrapped__", value)]


def verify(lab) -> None:
    """Raise :class:`Tampered` if notebook code changed maillab's code, the lab or its evidence.

    Meant to run from a fresh copy of this module loaded from its file (hidden tests do that).
    """
    here = Path(__file__).resolve().parent
    problems = []
    for short in _CHECKED_MODULES:
        name = f"maillab.{short}"
        path = here / f"{short}.py"
        mod = sys.modules.get(name)
        if mod is None:
            continue
        if Path(getattr(mod, "__file__", "") or "").resolve() != path:
            problems.append(f"{name} was replaced")
            continue
        digests = _source_digests(path)
        objs = [mod] + [v for v in vars(mod).values()
                        if isinstance(v, type) and getattr(v, "__module__", "") == name]
        for obj in objs:
            prefix = "" if obj is mod else obj.__qualname__ + "."
            for attr, value in list(vars(obj).items()):
                wanted = digests.get(prefix + attr)
                if wanted is None:
                    continue  # imported, generated (dataclass) or data
                if isinstance(value, type) and obj is mod:
                    if value.__module__ != name:
                        problems.append(f"{name}.{attr} was replaced")
                    continue
                for fn in _unwrap(value):
                    code = getattr(fn, "__code__", None)
                    if not isinstance(fn, types.FunctionType) or code.co_filename != str(path) \
                            or _code_digest(code) not in wanted:
                        problems.append(f"{name}: {prefix}{attr} was changed")
    lab_mod = sys.modules.get("maillab.lab")
    tr_mod = sys.modules.get("maillab.transcript")
    st_mod = sys.modules.get("maillab.store")
    checks = [(lab, getattr(lab_mod, "MailLab", None)),
              (getattr(lab, "recorder", None), getattr(tr_mod, "Recorder", None)),
              (getattr(lab, "store", None), getattr(st_mod, "Store", None))]
    for obj, cls in checks:
        if cls is None or type(obj) is not cls:
            problems.append(f"{type(obj).__name__} is not maillab's {getattr(cls, '__name__', '?')}")
            continue
        for attr, value in vars(obj).items():
            if callable(value) and hasattr(cls, attr):
                problems.append(f"{cls.__name__}.{attr} was replaced on the object")
    lines = getattr(getattr(lab, "recorder", None), "_lines", None)
    if type(lines).__name__ != "_SealedLines" or \
            _code_digest(type(lines).append.__code__) != _code_digest(_SealedLines.append.__code__):
        problems.append("the lab's transcript is not sealed (run the setup cell)")
    elif getattr(lab, "_thread", None) is None or lines.loop_ident != lab._thread.ident:
        problems.append("the transcript seal belongs to another thread")
    if problems:
        raise Tampered("grading evidence cannot be trusted: " + "; ".join(sorted(set(problems))))


def fresh(lab):
    """The first line of every hidden test: ``_g = grading.fresh(lab)``.

    A copy of this module loaded afresh from its file (so that functions notebook code
    replaced here do not count), after :func:`verify` looked at the lab. Inside the learner's
    kernel this is feedback, not a defence: code in the same process can change this too.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("maillab_grading_fresh", __file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.verify(lab)
    return module


# ---------------------------------------------------------------------------- nbgrader side

def definitions(source: str) -> str:
    """The top-level ``def``, ``class`` and ``import`` statements of a cell's source.

    What a cell that ended the kernel still defined: replayed after the restart, so that the
    functions written in that cell are not lost for the later tests.
    """
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    kept = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.ClassDef, ast.Import, ast.ImportFrom))]
    return ast.unparse(ast.Module(kept, [])) if kept else ""


def is_test_cell(cell) -> bool:
    """An autograded test cell (nbgrader: graded, not a solution, code)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) \
        and not meta.get("solution")


def split_hidden(source: str) -> tuple[list[str], list[str]]:
    """A test cell's lines: (outside the hidden tests, between ``### BEGIN HIDDEN TESTS`` and
    ``### END HIDDEN TESTS``); the marker lines are in neither."""
    visible, hidden, inside = [], [], False
    for line in source.splitlines():
        if "BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "END HIDDEN TESTS" in line:
            inside = False
        else:
            (hidden if inside else visible).append(line)
    return visible, hidden


def visible_source(source: str) -> str:
    """A test cell's source without its hidden tests (what learners see)."""
    return "\n".join(split_hidden(source)[0]).rstrip()


def nbgrader_preprocessors() -> dict:
    """Preprocessor classes for nbgrader_config.py (imports nbgrader only when called).

    ``RobustExecute``: nbgrader's Execute, but a cell that kills the kernel (``os._exit``) or
    leaves it unresponsive (a loop that swallows interrupts) gets an error output, the kernel
    is restarted, the earlier non-test cells are run again (their outputs discarded), and the
    ``def``/``class``/``import`` statements of the guilty cell too, so that functions it
    defined are not lost; then grading goes on. Without it nbgrader drops the whole
    submission. A graded test cell that did not run fails (never a silent pass).

    ``RobustOverwriteCells``: also puts back deleted *locked* cells (the setup cell) and
    deleted test cells, after the nearest earlier cell that is still there.

    ``HideHiddenTests``: for ``nbgrader generate_feedback``: the hidden tests' source is taken
    out of the test cells, and so is an error's traceback when it would show hidden lines
    (the error's name and message stay: what failed and why).
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    import nbformat
    from nbformat import NotebookNode
    from nbgrader import utils
    from nbgrader.preprocessors import Execute, NbGraderPreprocessor, OverwriteCells
    from nbgrader.preprocessors.execute import UnresponsiveKernelError
    from traitlets import List

    stopped = (DeadKernelError, CellTimeoutError, UnresponsiveKernelError)

    def error_output(ename: str, evalue: str) -> NotebookNode:
        return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                            traceback=[f"{ename}: {evalue}"])

    class RobustExecute(Execute):
        max_restarts = 5

        def preprocess(self, nb, resources=None, km=None):
            for attempt in (1, 2):
                self._replayable: list[tuple[int, str]] = []
                self._restarts = 0
                self._ran_a_cell = False
                try:
                    return super().preprocess(nb, resources, km)
                except Exception as e:
                    # A kernel that fails to start (before any cell ran) gets one more try.
                    if self._ran_a_cell or attempt == 2:
                        raise
                    self.log.warning("The kernel did not start (%s); trying again", e)
                    try:
                        self._cleanup_kernel()
                    except Exception:
                        pass
                    self.km = self.kc = None

        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type != "code" or not cell.source.strip():
                return super().preprocess_cell(cell, resources, index)
            self._ran_a_cell = True
            try:
                result = super().preprocess_cell(cell, resources, index)
            except stopped as e:
                dead = isinstance(e, DeadKernelError)
                self.log.warning("Cell %d %s; restarting the kernel and replaying earlier cells",
                                 index, "killed the kernel" if dead else "did not stop")
                cell.outputs.append(error_output(
                    "KernelDied" if dead else "CellTimeoutError",
                    "this cell ended the Python kernel" if dead else
                    "this cell did not stop when interrupted"))
                self._recover()
                if not is_test_cell(cell):
                    self._keep_definitions(cell, index)
                return cell, self.resources
            if is_test_cell(cell):
                if cell.get("execution_count") is None and not any(
                        o.get("output_type") == "error" for o in cell.outputs):
                    cell.outputs.append(error_output("NotExecuted", "this test did not run"))
            else:
                self._replayable.append((index, cell.source))
            return result

        def _keep_definitions(self, cell, index: int) -> None:
            source = definitions(cell.source)
            if source:
                self._replayable.append((index, source))
                self._replay(index, source)

        def _replay(self, index: int, source: str) -> bool:
            original = self.nb.cells[index]
            copy = NotebookNode(dict(original))
            copy["source"], copy["outputs"] = source, []
            try:
                self.execute_cell(copy, index, store_history=False)
                return True
            except stopped:
                self._replayable = [r for r in self._replayable if r[0] != index]
                self._recover()
                return False
            finally:
                # nbclient stores the cell it ran at its index: put the learner's cell back,
                # with its own source and outputs (the error that says what happened)
                self.nb.cells[index] = original

        def _recover(self) -> None:
            from jupyter_core.utils import run_sync
            self._restarts += 1
            if self._restarts > self.max_restarts:
                raise UnresponsiveKernelError("too many kernel restarts")
            try:
                self.kc.stop_channels()
            except Exception:
                pass
            # new ports: the old kernel's may not be free yet (or a child it forked holds them)
            run_sync(self.km.restart_kernel)(now=True, newports=True)
            self.start_new_kernel_client()
            for index, source in list(self._replayable):
                if not self._replay(index, source):
                    return

    class HideHiddenTests(NbGraderPreprocessor):
        # generate_feedback's HTML exporter configures display_data_priority for every
        # nbconvert class; NbGraderPreprocessor declares the trait without config=True, and
        # traitlets then warned "not recognized" on every run. Taken, and not needed here.
        display_data_priority = List().tag(config=True)

        def preprocess_cell(self, cell, resources, index):
            if is_test_cell(cell):
                hidden = [l.strip() for l in split_hidden(cell.source)[1] if l.strip()]
                cell.source = visible_source(cell.source)
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error" and any(
                            h in "\n".join(out.get("traceback", [])) for h in hidden):
                        out["traceback"] = [f"{out.get('ename', '')}: {out.get('evalue', '')}"]
            return cell, resources

    class RobustOverwriteCells(OverwriteCells):
        def add_missing_grade_cells(self, nb, resources):
            source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
            source_cells = list(source_nb.source_cells)
            grade_ids = {c.name: c for c in source_nb.grade_cells}
            solution_ids = {c.name for c in source_nb.solution_cells}
            present = [c.metadata.nbgrader["grade_id"] for c in nb.cells
                       if (utils.is_grade(c) or utils.is_solution(c) or utils.is_locked(c))
                       and "grade_id" in c.metadata.get("nbgrader", {})]
            for pos, src in enumerate(source_cells):
                if src.name in present:
                    continue
                if src.name in grade_ids:
                    new = self.missing_cell_transform(src, grade_ids[src.name].max_score,
                                                      is_solution=src.name in solution_ids)
                elif src.locked:
                    new = NotebookNode(self.missing_cell_transform(src, 0))
                    new["metadata"]["nbgrader"]["grade"] = False
                    new["metadata"]["nbgrader"].pop("points", None)
                else:
                    continue  # a plain solution cell: the learner's loss, not a grading hole
                new = nbformat.from_dict(new)
                self.log.warning("Cell %s is missing; adding it back", src.name)
                where = 0
                for earlier in reversed(source_cells[:pos]):
                    idx = next((i for i, c in enumerate(nb.cells)
                                if c.metadata.get("nbgrader", {}).get("grade_id") == earlier.name),
                               None)
                    if idx is not None:
                        where = idx + 1
                        break
                nb.cells.insert(where, new)
                present.append(src.name)
            return nb, resources

    return {"RobustExecute": RobustExecute, "RobustOverwriteCells": RobustOverwriteCells,
            "HideHiddenTests": HideHiddenTests}
