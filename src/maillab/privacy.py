"""Who may connect to a lab: on a shared machine, only the user who started it.

On a school's JupyterHub every student's kernel runs as its own Unix user, but all of them share
one loopback interface, and every lab accepts the same published passwords. So each listening
socket of a lab admits a connection only if the process at the other end belongs to the lab's
owner (or to root, where a teacher's grader runs). Everyone else is refused before the server
says a single byte, and the owner's transcript gets one line about it.

How a server learns who is at the other end of a loopback TCP connection: the kernel keeps both
ends of it, and the client's end carries the uid of the user who made it. :func:`peer_uid` asks
the kernel for exactly that one socket through netlink ``sock_diag`` (what ``ss`` uses: one
request, answered from the kernel's connection hash table, however many sockets the machine
has). Where netlink is not allowed it reads ``/proc/net/tcp`` and ``tcp6`` instead (one pass over
every socket on the machine: slower on a busy host, same answer). Other systems have neither:
there the lab still runs, says that it cannot be private, and admits everyone, as before.

The check happens in ``accept()`` of the listening socket (:class:`GuardedListener`), before
asyncio makes a transport: so it covers plain ports, implicit TLS (before the handshake) and the
webmail alike, with no change to any server.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import threading
from typing import Callable, Iterable, NamedTuple

from .i18n import _

__all__ = ["peer_uid", "PeerCheck", "OwnerOnly", "GuardedListener", "Verdict"]

# ---- netlink sock_diag (linux/sock_diag.h, linux/inet_diag.h)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid:
# sport, dport (big-endian), src[16], dst[16], interface, cookie[2]
_REQ = struct.Struct("=BBBxI")
_SOCKID = struct.Struct("!HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid, inode
_MSG = struct.Struct("=BBBB48xIIIII")



def _trusted(uid: int, inode: int) -> int | None:
    """The uid, unless the kernel may have made it up.

    A socket still held by a process (inode != 0) reports its creator's uid. Once the client has
    closed it, the kernel may keep a small leftover (TIME_WAIT, or FIN_WAIT2 turned into one)
    that reports uid 0 whoever made it: so uid 0 without an inode means "unknown", never root.
    A non-zero uid is never made up.
    """
    return uid if inode or uid else None


def _packed_address(family: int, address: str) -> bytes:
    """The 16-byte address field of inet_diag_sockid (an IPv4 address fills the first 4)."""
    return socket.inet_pton(family, address).ljust(16, b"\0")


def _netlink_uid(family: int, client: tuple, server: tuple) -> int | None:
    """uid of the socket whose own end is ``client`` and whose other end is ``server``."""
    request = (_REQ.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF)
               + _SOCKID.pack(client[1], server[1], _packed_address(family, client[0]),
                              _packed_address(family, server[0]))
               + _SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.send(header + request)
        reply = nl.recv(8192)
    length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(reply)
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, _NLMSGHDR.size)[0]
        if code == errno.ENOENT:  # no such connection (any more)
            return None
        raise OSError(code, os.strerror(code))
    if kind != SOCK_DIAG_BY_FAMILY or length < _NLMSGHDR.size + _MSG.size:
        raise OSError(errno.EPROTO, "unexpected sock_diag answer")
    _fam, _state, _timer, _retrans, _exp, _rq, _wq, uid, inode = _MSG.unpack_from(reply, _NLMSGHDR.size)
    return _trusted(uid, inode)


def _proc_hex(family: int, address: str, port: int) -> bytes:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host order, then the port."""
    raw = socket.inet_pton(family, address)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    return ("".join(f"{w:08X}" for w in words) + f":{port:04X}").encode()


def _v4_mapped(address: str) -> str:
    return "::ffff:" + address


def _proc_uid(family: int, client: tuple, server: tuple) -> int | None:
    """The same question answered from /proc/net/tcp and tcp6 (a dual-stack client that reached
    an IPv4 server through a mapped address ``::ffff:127.0.0.1`` is listed in tcp6)."""
    wanted = [("/proc/net/tcp" if family == socket.AF_INET else "/proc/net/tcp6", family,
               client[0], server[0])]
    if family == socket.AF_INET:
        wanted.append(("/proc/net/tcp6", socket.AF_INET6, _v4_mapped(client[0]), _v4_mapped(server[0])))
    for path, fam, caddr, saddr in wanted:
        # "sl: local remote st ..." with the client's end as local: found with one bytes.find
        # over the whole table rather than by splitting every line.
        needle = b" " + _proc_hex(fam, caddr, client[1]) + b" " + _proc_hex(fam, saddr, server[1]) + b" "
        try:
            with open(path, "rb") as f:
                table = f.read()
        except FileNotFoundError:
            continue
        at = table.find(needle)
        if at < 0:
            continue
        fields = table[at:table.find(b"\n", at)].split()
        # local rem st tx:rx tr:when retrnsmt uid timeout inode
        return _trusted(int(fields[6]), int(fields[8]))
    return None


class PeerCheck:
    """Finds the uid of the other end of accepted loopback TCP connections.

    ``method`` is ``"netlink"``, ``"proc"`` or ``"none"`` (this system cannot tell); ``"auto"``
    picks the first that works here.
    """

    def __init__(self, method: str = "auto"):
        if method == "auto":
            method = self._probe()
        if method not in ("netlink", "proc", "none"):
            raise ValueError(f"unknown method {method!r}")
        self.method = method

    @staticmethod
    def _probe() -> str:
        if not sys.platform.startswith("linux"):
            return "none"
        # A real question about a real connection tells whether each way works here.
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=2) as client:
                accepted, _addr = server.accept()
                with accepted:
                    me = os.geteuid()
                    for method in ("netlink", "proc"):
                        try:
                            if PeerCheck(method).uid(accepted) == me:
                                return method
                        except OSError:
                            continue
        return "none"

    @property
    def works(self) -> bool:
        return self.method != "none"

    def uid(self, conn: socket.socket) -> int | None:
        """uid of the user whose process holds the other end of ``conn``; None if unknown
        (the client has gone already, or this system cannot tell)."""
        if self.method == "none":
            return None
        family = conn.family
        client, server = conn.getpeername()[:2], conn.getsockname()[:2]
        if self.method == "netlink":
            return _netlink_uid(family, client, server)
        return _proc_uid(family, client, server)


_default_check: PeerCheck | None = None
_default_lock = threading.Lock()


def default_check() -> PeerCheck:
    """One probed PeerCheck per process (probing costs a connection and a few system calls)."""
    global _default_check
    with _default_lock:
        if _default_check is None:
            _default_check = PeerCheck()
        return _default_check


def peer_uid(conn: socket.socket) -> int | None:
    """uid of the user whose process is at the other end of the TCP connection ``conn``."""
    return default_check().uid(conn)


class Verdict(NamedTuple):
    allowed: bool
    uid: int | None


def _user_name(uid: int | None) -> str:
    if uid is None:
        return _("an unknown user")
    try:
        import pwd
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


class OwnerOnly:
    """The policy of a private lab: its owner's processes and root may connect, nobody else.

    ``allow`` adds users (uids or names), for example the account a sandboxed grader runs
    students' kernels as. ``record_each`` refusals per user get a transcript line each; after
    that they are only counted in ``refused`` (a flood cannot push the owner's own sessions out
    of the transcript).
    """

    def __init__(self, allow: Iterable[int | str] = (), check: PeerCheck | None = None,
                 record_each: int = 100, owner: int | None = None):
        self.check = check if check is not None else default_check()
        self.record_each = record_each
        self.owner = owner if owner is not None else os.geteuid()
        self.allowed = {self.owner, 0} | {self._uid_of(u) for u in allow}
        self.refused: dict[int | None, int] = {}

    @staticmethod
    def _uid_of(user: int | str) -> int:
        if isinstance(user, int):
            return user
        import pwd
        return pwd.getpwnam(user).pw_uid

    @property
    def private(self) -> bool:
        """True when other users are really kept out (this system can tell who connects)."""
        return self.check.works

    def describe(self) -> str:
        """One sentence for the lab's table."""
        if not self.private:
            return _("not private: this system cannot tell which user a connection comes from "
                     "(only Linux can), so other users of this computer could connect")
        return _("private: only your own programs can connect (other users of this computer "
                 "are refused)")

    def judge(self, conn: socket.socket) -> Verdict:
        if not self.private:
            return Verdict(True, None)
        try:
            uid = self.check.uid(conn)
        except OSError:
            uid = None  # the connection vanished mid-question, or the kernel said no: refuse
        return Verdict(uid in self.allowed, uid)

    def note_refusal(self, verdict: Verdict) -> str | None:
        """Count a refusal; the transcript line to record, or None once there were enough."""
        n = self.refused[verdict.uid] = self.refused.get(verdict.uid, 0) + 1
        if n > self.record_each:
            return None
        text = _("refused a connection from another user: {0}").format(_user_name(verdict.uid))
        if n == self.record_each:
            text += " " + _("(further refusals of this user are counted, not recorded)")
        return text


class GuardedListener:
    """A listening socket as asyncio uses it, whose ``accept()`` returns allowed connections only.

    asyncio's servers call ``accept()`` on the listening socket until it raises
    ``BlockingIOError``; a refused connection is closed here and the next one is taken, so the
    server never sees it: no transport, no TLS handshake, no greeting. Everything else is the
    wrapped socket's own (``getsockname``, ``fileno``, ``close``, ...).
    """

    def __init__(self, sock: socket.socket, policy: OwnerOnly,
                 on_refused: Callable[[tuple, str], None] | None = None):
        self._sock = sock
        self.policy = policy
        self.on_refused = on_refused  # (peer address, transcript text)

    def accept(self):
        while True:
            conn, address = self._sock.accept()  # BlockingIOError when none is waiting
            verdict = self.policy.judge(conn)
            if verdict.allowed:
                return conn, address
            conn.close()
            text = self.policy.note_refusal(verdict)
            if text is not None and self.on_refused is not None:
                self.on_refused(address, text)

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def __repr__(self) -> str:
        return f"<GuardedListener {self._sock!r}>"


def guard(sock: socket.socket, policy: OwnerOnly | None, recorder=None, service: str = ""):
    """``sock`` guarded by ``policy`` (unchanged when there is none); refusals go into the
    recorder's transcript under ``service`` as one short connection each."""
    if policy is None or not policy.private:
        return sock

    def on_refused(address: tuple, text: str) -> None:
        if recorder is not None:
            conn = recorder.open(service, f"{address[0]}:{address[1]}")
            conn.close(text)

    return GuardedListener(sock, policy, on_refused)
