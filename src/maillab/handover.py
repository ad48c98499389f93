"""One lab per Jupyter server on the mnemonic ports: a new lab takes them over from an older one.

Closing a browser tab does not stop its kernel. Without this module the lab started in
``00-welcome`` would still hold 2525, 1110, 1143, ... when the learner runs the first cell of
``01-smtp`` in another kernel; the new lab would get random ports and "2525 stands for 25" would
no longer be true.

So every lab on the mnemonic ports listens on a small *control socket*: a Unix socket in a
folder that only its user may enter (``$XDG_RUNTIME_DIR/maillab`` or ``/tmp/maillab-<uid>``,
mode 0700; the lab also checks the caller's uid). A new lab asks the older labs of the same
Jupyter server (the same ``JPY_PARENT_PID``: one learner's JupyterLab) to stop before it binds its
ports; each of them closes its servers, answers, and then stops completely, remembering who took
over (its notebook then says so). Labs of other users, of other Jupyter servers (another class
on the same computer, a test run, parallel nbgrader grading), labs outside Jupyter and programs
that are not labs are never asked: if they hold a port, the new lab takes a free one and its table
says why.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import struct
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

__all__ = ["scope", "control_dir", "stop_older_labs", "ControlSocket", "serve"]

ASK_TIMEOUT = 5.0  # seconds an older lab may take to close its servers
MAX_REQUEST = 4096  # bytes of a request line; anything longer is not ours


def scope() -> str | None:
    """The Jupyter server this kernel belongs to (its process id), or None outside Jupyter."""
    value = os.environ.get("JPY_PARENT_PID", "")
    return value if value.isdigit() and value != "0" else None


def me() -> dict:
    """Who is asking: this process, and the notebook it runs (Jupyter tells the kernel)."""
    notebook = os.environ.get("JPY_SESSION_NAME", "")
    return {"pid": os.getpid(), "notebook": os.path.basename(notebook), "time": time.time()}


def _private_dir(path: Path) -> Path | None:
    """``path`` as a folder only this user can enter (made if missing), or None if it is not."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # a symlink, someone else's folder, or one others may enter: not safe
    return path


def control_dir() -> Path | None:
    """This user's and this Jupyter server's folder of control sockets, or None (no handover)."""
    here = scope()
    if here is None or not hasattr(socket, "AF_UNIX") or not hasattr(os, "getuid"):
        return None
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "maillab" if runtime else \
        Path(tempfile.gettempdir()) / f"maillab-{os.getuid()}"
    top = _private_dir(base)
    return _private_dir(top / here) if top is not None else None


def _peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux), else None."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option,
                                                              struct.calcsize("3i")))
    except OSError:
        return None
    return uid


def stop_older_labs(timeout: float = ASK_TIMEOUT) -> list[dict]:
    """Ask every older lab of this Jupyter server to stop; return what each one said.

    Each answer is a dict with the older lab's ``pid``, ``notebook`` and ``ports``. A control
    socket nobody answers on (its kernel was killed) is removed.
    """
    folder = control_dir()
    if folder is None:
        return []
    stopped = []
    request = (json.dumps({"op": "stop", **me()}) + "\n").encode()
    for path in sorted(folder.glob("*.sock")):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(path))
                s.sendall(request)
                answer = s.makefile("rb").readline(MAX_REQUEST)
        except (ConnectionRefusedError, FileNotFoundError):
            _remove_stale(path)
            continue
        except OSError:  # it did not answer in time: leave it, take free ports where needed
            continue
        try:
            stopped.append(json.loads(answer))
        except ValueError:
            continue
    return stopped


def _remove_stale(path: Path) -> None:
    try:
        info = path.lstat()
        if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.getuid():
            path.unlink()
    except OSError:
        pass


class ControlSocket:
    """A lab's control socket: answers one request, "stop", from a newer lab of its user.

    ``on_stop(request)`` runs on the lab's loop, closes its servers and returns the answer;
    ``then()`` runs once the answer is sent (it finishes stopping the lab, in another thread).
    """

    def __init__(self, path: Path, on_stop: Callable[[dict], Awaitable[dict]],
                 then: Callable[[], None]):
        self.path = path
        self.on_stop = on_stop
        self.then = then
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> "ControlSocket":
        self.server = await asyncio.get_running_loop().create_unix_server(
            lambda: _ControlProtocol(self), str(self.path))
        os.chmod(self.path, 0o600)
        return self

    def close(self) -> None:
        """Stop listening and remove the socket file (safe to call more than once)."""
        if self.server is not None:
            self.server.close()
            self.server = None
            try:
                self.path.unlink()
            except OSError:
                pass


class _ControlProtocol(asyncio.Protocol):
    def __init__(self, control: ControlSocket):
        self.control = control
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("socket")
        uid = _peer_uid(peer) if peer is not None else None
        if uid is not None and uid != os.getuid():
            transport.abort()  # the folder is private; this is a second lock on the door

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" not in self.buffer:
            if len(self.buffer) > MAX_REQUEST:
                self.transport.abort()
            return
        line = self.buffer.split(b"\n", 1)[0]
        try:
            request = json.loads(line)
        except ValueError:
            self.transport.abort()
            return
        if not isinstance(request, dict) or request.get("op") != "stop":
            self.transport.abort()
            return
        asyncio.get_running_loop().create_task(self._stop(request))

    async def _stop(self, request: dict) -> None:
        self.control.close()  # one handover only; newer requests find no socket
        answer = await self.control.on_stop(request)
        self.transport.write((json.dumps(answer) + "\n").encode())
        self.transport.close()
        self.control.then()


async def serve(lab_id: int, on_stop: Callable[[dict], Awaitable[dict]],
                then: Callable[[], None]) -> ControlSocket | None:
    """Listen for "stop" requests from newer labs (None outside Jupyter or without a safe folder)."""
    folder = control_dir()
    if folder is None:
        return None
    path = folder / f"{os.getpid()}-{lab_id}.sock"
    try:
        return await ControlSocket(path, on_stop, then).start()
    except OSError:
        return None
