"""What ``maillab.start()`` returns inside a sandboxed kernel while the grader grades it.

The grader sets ``MAILLAB_SEALED`` to the path of a sealed lab's control socket
(:mod:`maillab.grader.sealed`); :func:`connect` then returns a :class:`SealedLabClient`
instead of starting servers in the kernel. It is a :class:`maillab.MailLab` in everything a
notebook uses (ports, accounts, ``lab.mx``, ``lab.transcript()``, ``lab.mailbox()``,
``lab.logins()``, ``lab.client_context()``, the table it shows), but the servers, the mail
store and the transcripts are the grader's: this object only reads copies of them.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import tempfile
import threading
from pathlib import Path, PurePosixPath

from ..i18n import _
from ..lab import LabAccount, MailLab, Service, StoredMessage
from ..net import LoginAttempt
from ..transcript import Line, Transcript

_clients: dict[str, "SealedLabClient"] = {}
_lock = threading.Lock()


def connect(path: str, **kwargs) -> "SealedLabClient":
    """The sealed lab at ``path`` (one per kernel: starting it again returns the same one)."""
    from .. import lab as labmodule

    with _lock:
        if path not in _clients:
            _clients[path] = SealedLabClient(path)
        # session cells (%%smtp ...) talk to "the lab maillab.start() made"
        labmodule._current = _clients[path]
        return _clients[path]


class _Control:
    """One connection to the sealed lab's control socket, one request at a time."""

    def __init__(self, path: str):
        self.path = path
        self.sock: socket.socket | None = None
        self.file = None
        self.lock = threading.Lock()

    def ask(self, op: str, **args):
        with self.lock:
            for attempt in (1, 2):
                try:
                    if self.sock is None:
                        self.sock = socket.socket(socket.AF_UNIX)
                        self.sock.settimeout(30)
                        self.sock.connect(self.path)
                        self.file = self.sock.makefile("rb")
                    self.sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
                    line = self.file.readline()
                    if not line:
                        raise ConnectionError(_("the lab closed the connection"))
                    reply = json.loads(line)
                    break
                except OSError:
                    if self.sock is not None:
                        self.sock.close()
                    self.sock = None
                    if attempt == 2:
                        raise
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["ok"]


class _Recorder:
    """The part of a Recorder that notebooks and maillab.grading read: ``lines()``."""

    def __init__(self, control: _Control):
        self.control = control

    def lines(self, min_conn: int = 0) -> list[Line]:
        found = self.control.ask("lines", min_conn=min_conn)
        return [Line(t, service, conn, who, base64.b64decode(raw), peer)
                for t, service, conn, who, raw, peer in found]


class StoredFile:
    """A message file of the sealed store, as the few Path methods maillab.grading uses."""

    def __init__(self, name: str, mtime: float, data: bytes):
        self.name, self._mtime, self._data = name, mtime, data

    def read_bytes(self) -> bytes:
        return self._data

    def stat(self) -> os.stat_result:
        return os.stat_result((0o600, 0, 0, 1, 0, 0, len(self._data), int(self._mtime),
                               self._mtime, self._mtime))

    def __repr__(self) -> str:
        return f"<StoredFile {self.name}>"


class SealedEvidence:
    """What maillab.grading asks of a sealed lab instead of reading its store from disk."""

    def __init__(self, control: _Control):
        self.control = control

    def files(self, user: str, folder: str = "INBOX") -> dict[str, StoredFile]:
        return {base: StoredFile(name, mtime, base64.b64decode(raw))
                for base, name, mtime, raw in self.control.ask("files", user=user, folder=folder)}

    def users(self) -> list[str]:
        return self.control.ask("users")

    def make_account(self, messages, domain=None, flags=()) -> tuple[str, str]:
        raw = [m.encode() if isinstance(m, str) else bytes(m) for m in messages]
        login, password = self.control.ask(
            "account", messages=[base64.b64encode(m).decode() for m in raw], domain=domain,
            flags=[list(f) for f in flags])
        return login, password


class _TrustedCA:
    """The sealed lab's CA certificate (public), for ``client_context()`` and ``ca_file``."""

    def __init__(self, pem: str):
        folder = Path(tempfile.mkdtemp(prefix="maillab-ca-"))
        self.ca_file = folder / "maillab-ca.pem"
        self.ca_file.write_text(pem)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def close(self) -> None:
        pass


class SealedLabClient(MailLab):
    """A MailLab whose servers run in the grader (see the module's docstring)."""

    def __init__(self, path: str):
        self._sealed = _Control(path)
        info = self._sealed.ask("info")
        super().__init__(accounts=[LabAccount(*a) for a in info["accounts"]],
                         tls=info["tls"], strict=info["strict"], ports="any")
        self.host = info["host"]
        self.services = [Service(*s[:6], login_policy=s[6]) for s in info["services"]]
        self._mx = {d: tuple(hp) for d, hp in info["mx"].items()}
        self.ca = _TrustedCA(info["ca"]) if info["ca"] else None
        self.recorder = _Recorder(self._sealed)
        self.sealed_evidence = SealedEvidence(self._sealed)
        self.started_at = 0.0

    def start(self) -> "SealedLabClient":
        return self

    def stop(self) -> None:
        """The grader owns these servers: stopping here stops nothing."""

    @property
    def running(self) -> bool:
        return True

    @property
    def mx(self) -> dict[str, tuple[str, int]]:
        return dict(self._mx)

    def transcript(self, service: str | None = None, conn: int | None = None,
                   since: float | None = None) -> Transcript:
        return Transcript(self.recorder.lines()).filter(service=service, conn=conn, since=since)

    def mailbox(self, user: str, folder: str = "INBOX") -> list[StoredMessage]:
        return [StoredMessage(uid, frozenset(flags), size, date, PurePosixPath(name),
                              base64.b64decode(raw))
                for uid, flags, size, date, name, raw in
                self._sealed.ask("mailbox", user=user, folder=folder)]

    def logins(self) -> list:
        return [LoginAttempt(*a) for a in self._sealed.ask("logins")]

    def settle(self, timeout: float = 10) -> None:
        self._sealed.ask("settle", timeout=timeout)

    def observed(self, service=None, conn=None):
        raise RuntimeError(_("the wire copies are not available while your work is graded"))

    @property
    def webmail_url(self) -> str:
        return f"http://{self.host}:{self.webmail_port}/"

    def __del__(self):
        pass
