"""The learner's answers in a plain interpreter: ``python -m maillab.grader.answers``.

The grader starts this module in a sandbox for every submission, with one end of a Unix
socket pair as file descriptor ``MAILLAB_ANSWERS_FD``. It loads the notebook's code cells (the
given ones from the master, the learner's own), one top-level statement at a time, and then
runs calls on the grader's behalf: "call the learner's ``send_mail`` with these arguments".
Results go back as plain data (:mod:`maillab.grader.codec`); objects that are not data stay
here and go back as handles.

Nothing in this process is trusted: the learner's code runs here and may change anything in
it, this module included. The grader never takes this process's word for a verdict; it only
receives values, which it compares with its own expectations in its own process. The
messages this module sends before each statement let the grader skip a statement that ends
or hangs the process, so that the definitions around it still load.
"""

from __future__ import annotations

import ast
import builtins
import io
import os
import socket
import sys
import threading
import time
import types

from ..grading import unwritten_function
from .codec import CodecError, decode, encode, frame, read_frame

MAX_FDS = 16
TEXT_LIMIT = 2000


class AnswerServer:
    def __init__(self, channel: socket.socket):
        self.channel = channel
        self.pid = os.getpid()
        self.namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
        self.objects: dict[int, object] = {}
        self.transferred: dict[str, object] = {}  # sockets and files the grader handed over
        self.fds: list[int] = []

    # ------------------------------------------------------------------ channel
    def send(self, message: dict) -> None:
        self.channel.sendall(frame(message))

    def receive(self) -> dict:
        self.fds = []
        return read_frame(lambda n: self._recv(n), self.fds)

    def _recv(self, n: int):
        data, fds, _flags, _addr = socket.recv_fds(self.channel, n, MAX_FDS)
        return data, fds

    def still_me(self) -> None:
        """A child made by os.fork() in learner code must not go on speaking for the parent."""
        if os.getpid() != self.pid:
            os._exit(0)

    # ------------------------------------------------------------------ loading
    def load(self, cells: list[str], skip: set[tuple[int, int]]) -> dict:
        problems = []
        for ci, source in enumerate(cells):
            if is_session_cell(source):
                continue
            statements = parse_cell(source)
            if statements is None:
                problems.append([ci, -1, "SyntaxError", "this cell is not Python"])
                continue
            for si, statement in enumerate(statements):
                if (ci, si) in skip:
                    continue
                self.send({"at": [ci, si]})
                try:
                    code = compile(ast.Module([statement], []), f"<cell {ci + 1}>", "exec")
                    exec(code, self.namespace)
                except BaseException as e:  # the learner's error: noted, loading goes on
                    problems.append([ci, si, type(e).__name__, safe_text(e)])
                self.still_me()
        return {"names": self.describe_names(), "problems": problems[:50]}

    def describe_names(self) -> dict:
        out = {}
        for name, value in list(self.namespace.items()):
            if name.startswith("__") or type(name) is not str:
                continue
            out[name] = self.describe(value)
        return out

    def describe(self, value) -> dict:
        if type(value) is types.ModuleType:
            return {"kind": "module", "module": str(getattr(value, "__name__", ""))[:200]}
        if isinstance(value, type) and issubclass(value, BaseException):
            return {"kind": "exception", "mro": class_names(value)}
        if callable(value):
            return {"kind": "callable"}
        try:
            return {"kind": "value", "value": encode(value)}
        except CodecError:
            return {"kind": "object", **self.as_handle(value)}

    # ------------------------------------------------------------------ serving calls
    def as_handle(self, obj) -> dict:
        """Keep an object that is not data here; the grader gets its number and type."""
        key = id(obj)
        self.objects[key] = obj
        return {"$h": key, "type": type_name(obj)}

    def resolve(self, target: dict):
        if "name" in target:
            obj = self.namespace[target["name"]]
        else:
            obj = self.objects[target["h"]]
        if "attr" in target:
            obj = getattr(obj, target["attr"])
        return obj

    def argument(self, tag: str, body):
        """Values only the grader sends: handles, byte streams, TLS contexts, sockets."""
        if tag == "$h":
            return self.objects[body]
        if tag == "$bio":
            stream = io.BytesIO(decode(body["data"]))
            stream.seek(body["pos"])
            return stream
        if tag == "$ssl":
            return tls_context(body)
        if tag == "$sock":
            key = body["key"]
            if key not in self.transferred:
                self.transferred[key] = socket.socket(fileno=self.fds[body["fd"]])
            return self.transferred[key]
        if tag == "$sockfile":
            key = body["key"]
            if key not in self.transferred:
                sock = self.argument("$sock", body["sock"])
                self.transferred[key] = socket_file(sock, decode(body["buffered"]))
            return self.transferred[key]
        return NotImplemented

    def serve_one(self, message: dict) -> dict:
        op = message.get("op")
        if op == "set":
            self.namespace[message["name"]] = decode(message["value"])
            return {"ok": None}
        target = self.resolve(message["target"])
        if op == "repr":
            return {"ok": safe_text(target, repr)}
        if op == "get":
            return {"ok": encode(target, self.as_handle)}
        if op == "call":
            args = decode(message["args"], extra=self.argument)
            kwargs = decode(message["kwargs"], extra=self.argument)
            return {"ok": encode(target(*args, **kwargs), self.as_handle)}
        raise CodecError(f"unknown operation {op!r}")

    def run(self) -> None:
        first = self.receive()
        skip = {(int(c), int(s)) for c, s in first.get("skip", [])}
        self.send({"loaded": self.load(list(first["cells"]), skip)})
        while True:
            message = self.receive()
            reply = {"id": message.get("id")}
            try:
                reply.update(self.serve_one(message))
            except BaseException as e:
                mro, text = describe_exception(e)
                reply["raised"] = {"mro": mro, "text": text,
                                   "unwritten": unwritten_function(e, self.namespace)}
            self.still_me()
            try:
                self.send(reply)
            except (CodecError, TypeError, ValueError) as e:
                self.send({"id": message.get("id"),
                           "raised": {"mro": [["builtins", "ValueError"]],
                                      "text": f"the value could not be sent back: {e}"}})


# ---------------------------------------------------------------------- helpers

def is_session_cell(source: str) -> bool:
    """A cell that starts with a cell magic (``%%pop3 example.com``): a session typed by hand,
    which the notebook's kernel ran against its own lab. It defines nothing a test calls, and
    here it could not run (IPython makes it a ``get_ipython()`` call): not loaded."""
    first = next((line for line in source.splitlines() if line.strip()), "")
    return first.lstrip().startswith("%%")


def parse_cell(source: str) -> list | None:
    """The top-level statements of a cell; IPython syntax (magics, !commands) is turned into
    Python first, as the kernel would. None if it is not Python at all."""
    try:
        return ast.parse(source).body
    except SyntaxError:
        pass
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return ast.parse(TransformerManager().transform_cell(source)).body
    except Exception:
        return None


def class_names(cls) -> list[list[str]]:
    out = []
    for c in type.mro(cls) if isinstance(cls, type) else []:
        out.append([str(getattr(c, "__module__", "?"))[:200], str(c.__qualname__)[:200]])
    return out[:30]


def type_name(value) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"[:200]


def describe_exception(e: BaseException) -> tuple[list, str]:
    return class_names(type(e)), safe_text(e)


def safe_text(obj, how=str) -> str:
    try:
        text = how(obj)
        if type(text) is not str:
            return "?"
        return text[:TEXT_LIMIT]
    except BaseException:
        return "?"


def tls_context(recipe: dict):
    """An SSLContext like the grader's: the same trusted certificates and checks."""
    import ssl
    cadata = decode(recipe["cadata"])
    ctx = ssl.create_default_context(cadata=cadata) if cadata else ssl.create_default_context()
    ctx.check_hostname = bool(recipe["check_hostname"])
    ctx.verify_mode = ssl.VerifyMode(int(recipe["verify_mode"]))
    return ctx


class _Prefixed(io.RawIOBase):
    """A socket's raw stream that first gives back bytes the grader had already buffered."""

    def __init__(self, reader, prefix: bytes):
        self.reader, self.raw, self.prefix = reader, reader.raw, prefix  # reader: kept open

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int | None:
        if self.prefix:
            n = min(len(b), len(self.prefix))
            b[:n], self.prefix = self.prefix[:n], self.prefix[n:]
            return n
        return self.raw.readinto(b)


def socket_file(sock: socket.socket, buffered: bytes):
    reader = sock.makefile("rb")
    if not buffered:
        return reader
    return io.BufferedReader(_Prefixed(reader, buffered))


def end_with_parent(interval: float = 0.5) -> None:
    """Exit as soon as the process that started this one is gone. Learner code that never
    returns (a loop while the cells load, a call that spins) never reads the channel's end of
    file, and would run on with nobody left to read it. In a sandbox bwrap's
    ``--die-with-parent`` does this; a ``--no-sandbox`` grading and the tests have only this."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)
    threading.Thread(target=watch, name="maillab-parent-watch", daemon=True).start()


def main() -> int:
    end_with_parent()
    channel = socket.socket(fileno=int(os.environ["MAILLAB_ANSWERS_FD"]))
    # The learner's prints go nowhere: this process's verdicts are made elsewhere.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
    sys.stderr = sys.stdout
    try:
        AnswerServer(channel).run()
    except (EOFError, ConnectionError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
