"""Evidence for graded labs: what the servers saw, read back in a way learners' code cannot fake.

Lab notebooks (solutions/ -> labs/) use this module in three places:

* the locked setup cell calls :func:`prepare` on the lab it started: evidence recording is
  sealed (only the lab's own server thread may add transcript lines), every cell gets a time
  limit, and sockets get a default timeout, so hung code fails fast instead of hanging a grader;
* test cells wrap a call of the learner's function in :func:`watch` and check the evidence: which
  sessions the learner's client opened, what it sent (byte for byte), what the servers stored
  on disk and what they removed;
* hidden tests load a fresh copy of this module straight from its file (checked against a
  digest written into the test when the masters were built) and call :func:`verify` first, so
  that patching this module, the lab's classes or the lab object itself is detected.

The second half holds the nbgrader side (:func:`nbgrader_preprocessors`): an executor that
survives a killed or unresponsive kernel (restart, replay the earlier non-test cells, fail only
the guilty cell) and an OverwriteCells that puts back deleted locked and test cells.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import re
import signal
import sys
import threading
import time
import types
from pathlib import Path

__all__ = ["prepare", "watch", "verify", "Watch", "CellTimeLimit", "Tampered", "unstuff",
           "maildir", "SOCKET_TIMEOUT", "CELL_LIMIT"]

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


def seal(lab) -> None:
    """Make the lab's transcript accept lines from its own server thread only."""
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
        self.hard = os.environ.get("NBGRADER_EXECUTION", "") in ("autograde", "validate")
        self.lock = threading.Lock()

    def pre(self, *args) -> None:
        with self.lock:
            self.started = time.monotonic()
        signal.signal(signal.SIGALRM, self.alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds, 1.0)

    def post(self, *args) -> None:
        with self.lock:
            self.started = None
        signal.setitimer(signal.ITIMER_REAL, 0, 0)

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
    """The setup cell's call: seal the evidence, limit cell time, time out sockets."""
    import socket

    if not lab.running:
        raise RuntimeError("start the lab first: lab = maillab.start(ports='any')")
    seal(lab)
    socket.setdefaulttimeout(socket_timeout)
    limit_cells(cell_limit)
    return lab


# ---------------------------------------------------------------------------- evidence

def maildir(lab, user: str, folder: str = "INBOX") -> dict[str, Path]:
    """The message files of a user's folder, read from disk: {unique base name: path}."""
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
        ``UID FETCH`` counts as one verb). Message text after SMTP's 354 and IMAP literals
        are not commands."""
        out, in_data, skip = [], False, 0
        for l in self.lines:
            if l.who == "S" and l.text.startswith("354"):
                in_data = True
            if l.who != "C":
                continue
            if in_data:
                if l.raw.rstrip(b"\r\n") == b".":
                    in_data = False
                continue
            if skip > 0:
                skip = max(0, skip - len(l.raw))
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


class Watch:
    """What happened on the lab between entering and leaving a ``with watch(lab):`` block."""

    def __init__(self, lab, users=None):
        self.lab = lab
        lines = lab.recorder.lines()
        self.first_conn = (max((l.conn for l in lines), default=0)) + 1
        if users is None:
            accounts = lab.store.accounts
            users = [a.login for a in (accounts() if callable(accounts) else accounts)]
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
        return False  # the learner's own traceback is the best feedback

    def settle(self) -> None:
        try:
            self.lab.settle(5)
        except Exception:
            pass
        time.sleep(0.05)  # let the server record the last lines of a just-closed connection
        self.after = {u: maildir(self.lab, u) for u in self.users}

    def sessions(self, service: str | None = None) -> list[Session]:
        """Connections opened since the mark, optionally of one service ("smtp:example.net")."""
        by_conn: dict[int, list] = {}
        for l in self.lab.recorder.lines():
            if l.conn < self.first_conn:
                continue
            if service is not None and not (l.service == service or
                                            l.service.startswith(service + ":")):
                continue
            by_conn.setdefault(l.conn, []).append(l)
        return [Session(v) for _k, v in sorted(by_conn.items())]

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
        ids = session.queue_ids()
        out = []
        for m in self.new_messages(user):
            received = [v for k, v in _headers(m.raw) if k.lower() == "received"]
            if any(re.search(rf"\bid {qid}\b", r) for r in received for qid in ids):
                out.append(m)
        return out


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
    return [getattr(value, "__func__", value)]


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


def file_digest() -> str:
    """sha256 of this module's file (hidden tests compare it before loading a fresh copy)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- nbgrader side

def nbgrader_preprocessors() -> dict:
    """Preprocessor classes for nbgrader_config.py (imports nbgrader only when called).

    ``RobustExecute``: nbgrader's Execute, but a cell that kills the kernel (``os._exit``) or
    leaves it unresponsive (a loop that swallows interrupts) gets an error output, the kernel
    is restarted, the earlier non-test cells are run again (their outputs discarded) and grading
    goes on. Without it nbgrader drops the whole submission. A graded test cell that did not run
    fails (never a silent pass).

    ``RobustOverwriteCells``: also puts back deleted *locked* cells (the setup cell) and
    deleted test cells, after the nearest earlier cell that is still there.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    import nbformat
    from nbformat import NotebookNode
    from nbgrader import utils
    from nbgrader.preprocessors import Execute, OverwriteCells
    from nbgrader.preprocessors.execute import UnresponsiveKernelError

    def error_output(ename: str, evalue: str) -> NotebookNode:
        return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                            traceback=[f"{ename}: {evalue}"])

    class RobustExecute(Execute):
        max_restarts = 5

        def preprocess(self, nb, resources=None, km=None):
            for attempt in (1, 2):
                self._replayable: list[int] = []
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
            except (DeadKernelError, CellTimeoutError, UnresponsiveKernelError) as e:
                dead = isinstance(e, DeadKernelError)
                self.log.warning("Cell %d %s; restarting the kernel and replaying earlier cells",
                                 index, "killed the kernel" if dead else "did not stop")
                cell.outputs.append(error_output(
                    "KernelDied" if dead else "CellTimeoutError",
                    "this cell ended the Python kernel" if dead else
                    "this cell did not stop when interrupted"))
                self._recover()
                return cell, self.resources
            if utils.is_grade(cell) and not utils.is_solution(cell):
                if cell.get("execution_count") is None and not any(
                        o.get("output_type") == "error" for o in cell.outputs):
                    cell.outputs.append(error_output("NotExecuted", "this test did not run"))
            else:
                self._replayable.append(index)
            return result

        def _recover(self) -> None:
            from jupyter_core.utils import run_sync
            self._restarts += 1
            if self._restarts > self.max_restarts:
                raise UnresponsiveKernelError("too many kernel restarts")
            try:
                self.kc.stop_channels()
            except Exception:
                pass
            run_sync(self.km.restart_kernel)(now=True)
            self.start_new_kernel_client()
            for i in list(self._replayable):
                copy = NotebookNode(dict(self.nb.cells[i]))
                copy["outputs"] = []
                try:
                    self.execute_cell(copy, i, store_history=False)
                except (DeadKernelError, CellTimeoutError, UnresponsiveKernelError):
                    self._replayable.remove(i)
                    self._recover()
                    return

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

    return {"RobustExecute": RobustExecute, "RobustOverwriteCells": RobustOverwriteCells}
