"""The grader's side of a learner's answer process (:mod:`maillab.grader.answers`).

:class:`AnswerProcess` starts the sandboxed interpreter, loads the notebook's code into it and
skips any statement that ends or hangs it (so that the functions defined around such a
statement are not lost). Checks then call the learner's functions through proxies:

* :class:`LearnerFunction` for the learner's top-level functions and classes;
* :class:`Handle` for an object that is not plain data (a socket the learner's ``pop3_login``
  returned, say): its methods run in the answer process;
* exceptions the learner's code raises arrive as instances of classes made here, named after
  the learner's classes, so that ``except POP3Error:`` in a check works.

Arguments go the other way as data too; a check may also hand over a ``BytesIO``, an
``SSLContext`` (its trusted certificates and checks) or a socket or socket file it opened
(the file descriptor itself travels; from then on the learner's code reads it).
"""

from __future__ import annotations

import io
import socket
import ssl
import sys
import time

from ..i18n import _
from .codec import CodecError, decode, encode, frame, read_frame

STATEMENT_LIMIT = 8.0  # seconds one top-level statement of the learner's code may take to load
CALL_LIMIT = 8.0  # seconds one call of the learner's code may take (the notebook's cell limit)
MAX_LOADS = 8  # attempts at loading the code, each skipping what ended the process before
STARTUP_LIMIT = 60.0  # seconds the answer process may take to start (not the learner's code)


class LearnerStopped(BaseException):
    """The learner's code ended or outlasted the answer process during a check.

    A BaseException, so that ``except Exception`` in a check does not mistake it for an
    ordinary error of the learner's function and go on.
    """


class LearnerDied(LearnerStopped):
    pass


class LearnerTimeout(LearnerStopped):
    pass


class LearnerException(Exception):
    """Base of every exception the learner's code raised in the answer process."""

    learner_text = ""
    unwritten: str | None = None  # NotImplementedError: the learner's function that raised it


class AnswerProcess:
    """The notebook's code, loaded in a fresh sandboxed interpreter, ready to be called.

    ``spawn(fd)`` starts ``python -m maillab.grader.answers`` with the channel's other end as
    file descriptor ``fd`` (in a sandbox, see :mod:`maillab.grader.sandbox`) and returns the
    ``subprocess.Popen``.
    """

    def __init__(self, cells: list[str], spawn, *, statement_limit: float = STATEMENT_LIMIT,
                 call_limit: float = CALL_LIMIT, max_loads: int = MAX_LOADS,
                 after_call=None):
        self.cells = list(cells)
        self.spawn = spawn
        self.after_call = after_call  # proc -> None: ends what a call left running
        self.statement_limit = statement_limit
        self.call_limit = call_limit
        self.max_loads = max_loads
        self.skip: set[tuple[int, int]] = set()
        self.events: list[str] = []  # what went wrong, for the teacher's report
        self.names: dict = {}
        self.problems: list = []
        self.generation = 0
        self.deadline: float | None = None  # a check's overall budget (time.monotonic())
        self.proc = None
        self.channel: socket.socket | None = None
        self._ids = 0
        self._standins: dict[tuple[str, str], type] = {}
        self._classes: dict[tuple, type] = {}
        self._sent: dict[str, object] = {}
        self.loads = 0

    # ------------------------------------------------------------------ life
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.channel is not None

    def ensure_loaded(self) -> None:
        """Start (or restart) the process and load the code, skipping statements that ended
        or hung an earlier attempt. Raises LearnerDied when nothing loads any more."""
        if self.alive:
            return
        while True:
            if self.loads >= self.max_loads:
                raise LearnerDied(_("your notebook's code could not be loaded: it ended Python "
                                    "{0} times").format(self.loads))
            self.loads += 1
            at = self._try_load()
            if at is None:
                return
            self.skip.add(at)

    def _try_load(self) -> tuple[int, int] | None:
        """One attempt; the statement that ended or hung it, or None when all went well."""
        self._start_process()
        self.send({"cells": self.cells, "skip": sorted(self.skip)})
        at = None
        while True:
            try:  # starting Python is not the learner's time: a busy machine may be slow
                message = self.receive(self.statement_limit if at else STARTUP_LIMIT)
            except LearnerStopped as e:
                where = f"cell {at[0] + 1}, statement {at[1] + 1}" if at else "start-up"
                self.events.append(f"loading: {where}: {e} (skipped)")
                if at is None:
                    raise
                return at
            if "at" in message:
                at = tuple(int(x) for x in message["at"])
            elif "loaded" in message:
                loaded = message["loaded"]
                self.names = loaded["names"] if type(loaded.get("names")) is dict else {}
                self.problems = loaded.get("problems", [])
                self.generation += 1
                if self.after_call is not None:
                    self.after_call(self.proc)
                return None
            else:
                self.kill()
                raise LearnerDied(_("the answer process said something unexpected"))

    def _start_process(self) -> None:
        self.kill()
        mine, theirs = socket.socketpair()
        try:
            self.proc = self.spawn(theirs.fileno())
        finally:
            theirs.close()
        self.channel = mine
        self._sent = {}

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except Exception:
                pass
        if self.channel is not None:
            self.channel.close()
        self.channel = None

    # ------------------------------------------------------------------ channel
    def send(self, message: dict, fds: list[int] = ()) -> None:
        data = frame(message)
        try:
            if fds:
                socket.send_fds(self.channel, [data[:4]], list(fds))
                self.channel.sendall(data[4:])
            else:
                self.channel.sendall(data)
        except OSError:
            self._stopped_by_death()

    def receive(self, limit: float) -> dict:
        deadline = time.monotonic() + limit
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)

        def recv(n: int):
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout
            self.channel.settimeout(left)
            return self.channel.recv(n), []
        try:
            return read_frame(recv)
        except socket.timeout:
            self.kill()
            raise LearnerTimeout(_("your code ran longer than {0:g} s (a loop that never ends, "
                                   "or a socket waiting for an answer that never comes?)")
                                 .format(limit)) from None
        except (EOFError, OSError):
            self._stopped_by_death()
        except CodecError as e:
            self.kill()
            raise LearnerDied(_("the answer process said something unexpected ({0})").format(e))

    def _stopped_by_death(self):
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(2)
            except Exception:
                pass
        self.kill()
        raise LearnerDied(_("your code ended the Python process (exit code {0})").format(code))

    # ------------------------------------------------------------------ requests
    def request(self, message: dict, fds: list[int] = ()):
        self.ensure_loaded()
        self._ids += 1
        message["id"] = self._ids
        self.send(message, fds)
        reply = self.receive(self.call_limit)
        if self.after_call is not None and self.proc is not None:
            self.after_call(self.proc)
        if reply.get("id") != self._ids:
            self.kill()
            raise LearnerDied(_("the answer process said something unexpected"))
        if "raised" in reply:
            raise self.exception_from(reply["raised"])
        if "ok" not in reply:
            self.kill()
            raise LearnerDied(_("the answer process said something unexpected"))
        try:
            return decode(reply["ok"], handle=self._handle)
        except CodecError as e:
            raise LearnerException(_("the value could not be read: {0}").format(e)) from None

    def call(self, target: dict, args: tuple, kwargs: dict):
        # Loaded first: a (re)start forgets which sockets and files the process holds, so
        # arguments encoded before it would be recorded as sent to a process that never got
        # them (and the next hand-over of the same socket file would read ahead here).
        self.ensure_loaded()
        fds: list[int] = []
        encoded = {"op": "call", "target": target,
                   "args": encode(list(args), lambda v: self._argument(v, fds)),
                   "kwargs": encode(dict(kwargs), lambda v: self._argument(v, fds))}
        return self.request(encoded, fds)

    def describe(self, handle: "Handle") -> str:
        return self.request({"op": "repr", "target": handle._target()})

    def set_value(self, name: str, value) -> None:
        """Give the learner's namespace a value a check defined (as a kernel would)."""
        self.request({"op": "set", "target": {}, "name": name, "value": encode(value)})

    def _handle(self, number: int, kind: str) -> "Handle":
        return Handle(self, number, kind, self.generation)

    def _argument(self, value, fds: list[int]):
        """The wire form of a check's argument that is not plain data."""
        if isinstance(value, Handle):
            if value._generation != self.generation:
                raise LearnerStopped(_("that object belonged to an earlier run of your code"))
            return {"$h": value._number}
        if isinstance(value, io.BytesIO):
            return {"$bio": {"data": encode(value.getvalue()), "pos": value.tell()}}
        if isinstance(value, ssl.SSLContext):
            certs = value.get_ca_certs(binary_form=True)
            return {"$ssl": {"cadata": encode(b"".join(certs)) if certs else None,
                             "check_hostname": value.check_hostname,
                             "verify_mode": int(value.verify_mode)}}
        if isinstance(value, socket.socket):
            return {"$sock": self._socket_ref(value, fds)}
        raw = getattr(value, "raw", None)
        if isinstance(value, io.BufferedReader) and isinstance(raw, socket.SocketIO):
            key = f"f{id(value)}"
            if key in self._sent:  # the learner's side reads it now: never read it here again
                return {"$sockfile": {"key": key}}
            self._sent[key] = value
            return {"$sockfile": {"key": key, "sock": self._socket_ref(raw._sock, fds),
                                  "buffered": encode(_buffered(value))}}
        raise TypeError(f"a check cannot hand a {type(value).__name__} to the learner's code")

    def _socket_ref(self, sock: socket.socket, fds: list[int]) -> dict:
        key = f"s{id(sock)}"
        first = key not in self._sent
        self._sent[key] = sock  # kept alive: the learner's side holds the same connection
        ref = {"key": key, "fd": len(fds) if first else -1}
        if first:
            fds.append(sock.fileno())
        return ref

    # ------------------------------------------------------------------ learner's exceptions
    def standin(self, module: str, qualname: str) -> type:
        """The class that stands for the learner's exception class of this name."""
        key = (module, qualname)
        if key not in self._standins:
            self._standins[key] = type(qualname.rsplit(".", 1)[-1], (LearnerException,),
                                       {"__module__": "learner"})
        return self._standins[key]

    def exception_from(self, raised: dict) -> LearnerException:
        mro = tuple((str(m), str(q)) for m, q in raised.get("mro", [])[:30])
        text = str(raised.get("text", ""))
        if mro not in self._classes:
            self._classes[mro] = self._exception_class(mro)
        e = self._classes[mro](text)
        e.learner_text = text
        unwritten = raised.get("unwritten")  # the learner's function that raised it, if any
        if type(unwritten) is str and len(unwritten) <= 200 and \
                all(part.isidentifier() for part in unwritten.split(".")):
            e.unwritten = unwritten
        return e

    def _exception_class(self, mro) -> type:
        """Subclass of the stand-ins of the learner's classes in ``mro`` and of the first
        standard exception class in it (ConnectionError, ssl.SSLError, ...): a check can catch
        either. Standard classes come from modules this process has imported already."""
        bases = [self._standins[m] for m in mro if m in self._standins] + [LearnerException]
        for module, qualname in mro:
            found = _standard_class(module, qualname)
            if found is not None:
                if found is not Exception:
                    bases.append(found)
                break
        name = mro[0][1].rsplit(".", 1)[-1] if mro else "Exception"
        try:
            return type(name, tuple(bases), {"__module__": "learner"})
        except TypeError:  # bases that cannot be combined: keep the name only
            return type(name, (LearnerException,), {"__module__": "learner"})


def _standard_class(module: str, qualname: str) -> type | None:
    """The exception class of that name in an already imported standard module, if any."""
    if module != "builtins" and module not in sys.stdlib_module_names and \
            module.lstrip("_") not in sys.stdlib_module_names:
        return None
    found = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def _buffered(reader: io.BufferedReader) -> bytes:
    """Bytes a socket file has read ahead but not handed out yet (without waiting for more)."""
    sock = reader.raw._sock
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        return reader.peek()
    except (BlockingIOError, OSError):
        return b""
    finally:
        sock.settimeout(timeout)


class LearnerFunction:
    """A name the learner's code defined (a function or class), called in the answer process."""

    __slots__ = ("_answers", "_name")

    def __init__(self, answers: AnswerProcess, name: str):
        self._answers, self._name = answers, name

    def __call__(self, *args, **kwargs):
        return self._answers.call({"name": self._name}, args, kwargs)

    def __repr__(self) -> str:
        return f"<the learner's {self._name}>"


class Handle:
    """An object that lives in the answer process. Its methods run there; it equals nothing
    but itself, and it is neither a number, nor a string, nor a container."""

    __slots__ = ("_answers", "_number", "_type", "_generation")

    def __init__(self, answers: AnswerProcess, number: int, kind: str, generation: int):
        self._answers, self._number, self._type, self._generation = \
            answers, number, kind, generation

    def _target(self, attr: str | None = None) -> dict:
        target = {"h": self._number}
        if attr is not None:
            target["attr"] = attr
        return target

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Method(self, attr)

    def __repr__(self) -> str:
        """The object's type (not a plain value: say so) and its own repr."""
        try:
            if self._generation == self._answers.generation and self._answers.alive:
                return f"<{self._type}: {self._answers.describe(self)}>"
        except (LearnerException, LearnerStopped):
            pass
        return f"<{self._type}>"

    __str__ = __repr__


class _Method:
    __slots__ = ("_handle", "_attr")

    def __init__(self, handle: Handle, attr: str):
        self._handle, self._attr = handle, attr

    def __call__(self, *args, **kwargs):
        h = self._handle
        if h._generation != h._answers.generation:
            raise LearnerStopped(_("that object belonged to an earlier run of your code"))
        return h._answers.call(h._target(self._attr), args, kwargs)

