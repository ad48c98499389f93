"""Helpers for tests and benchmarks: an IMAP server in a background thread, and a private Dovecot.

``ImapTestServer`` runs :func:`maillab.imap.server.start_imap` on its own asyncio loop in a
thread, on a fresh store in a temporary folder (fast password hashing), the way the lab does.

``Dovecot`` starts the Debian ``dovecot`` binary as a private instance (own config, base_dir,
log, port on 127.0.0.1) so that the same script can run against both servers. It needs root
(Dovecot drops to the unprivileged user ``nobody`` for mail), see facts.md.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ..net import ServerContext, bind_listener
from ..store import Store
from ..transcript import Recorder

__all__ = ["ImapTestServer", "Dovecot", "dovecot_path", "ACCOUNTS", "returns_within", "FixedDelayGuard",
           "SlowLogins"]

ACCOUNTS = {"alice": "alice-pw", "bob": "bob-pw"}
DOMAIN = "example.com"


class ImapTestServer:
    """``with ImapTestServer() as srv: M = srv.login("alice")``."""

    def __init__(self, accounts: dict[str, str] | None = None, options: dict | None = None,
                 root: str | None = None):
        self.store = Store(root, hash_n=2**10)
        for login, password in (accounts or ACCOUNTS).items():
            self.store.add_account(login, password, DOMAIN)
        self.passwords = dict(accounts or ACCOUNTS)
        self.recorder = Recorder()
        self.ctx = ServerContext(self.store, self.recorder, f"mail.{DOMAIN}", DOMAIN, dict(options or {}))
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="imap-test", daemon=True)
        self._thread.start()
        from .server import start_imap
        sock = bind_listener(None)
        self.port = sock.getsockname()[1]
        self.server = self.call(start_imap(self.ctx, sock))
        self.host = "127.0.0.1"

    def call(self, coro_or_fn, *args):
        """Run a coroutine (or a plain function) in the server's loop and return its result."""
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self.loop).result(30)

        async def run():
            return coro_or_fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def folder(self, login: str = "alice", name: str = "INBOX"):
        return self.store.account(login).folder(name)

    def deliver(self, data: bytes, login: str = "alice", name: str = "INBOX", flags=(), date=None):
        """Deliver like SMTP does: in the server's thread, so IMAP sessions hear of it."""
        return self.call(lambda: self.folder(login, name).deliver(data, flags, date))

    def connect(self) -> imaplib.IMAP4:
        return imaplib.IMAP4(self.host, self.port, timeout=10)

    def login(self, user: str = "alice") -> imaplib.IMAP4:
        M = self.connect()
        M.login(user, self.passwords[user])
        return M

    def transcript(self):
        from ..transcript import Transcript
        return Transcript(self.recorder.lines())

    def close(self) -> None:
        async def stop():
            self.server.close()
            for t in list(self.ctx.connections):
                t.close()
            await asyncio.sleep(0)
        try:
            self.call(stop())
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- Dovecot

def dovecot_path() -> str | None:
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin:/usr/local/sbin")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_CONFIG = """\
base_dir = {d}/run
instance_name = maillab-ref-{n}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_failure_delay = 0
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u
first_valid_uid = 1
last_valid_uid = 0
default_vsz_limit = 512M
imap_idle_notify_interval = 1 mins
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%n
}}
namespace inbox {{
  inbox = yes
  separator = .
  mailbox INBOX {{
    auto = subscribe
  }}
  mailbox Sent {{
    auto = subscribe
    special_use = \\Sent
  }}
  mailbox Drafts {{
    auto = subscribe
    special_use = \\Drafts
  }}
  mailbox Trash {{
    auto = subscribe
    special_use = \\Trash
  }}
  mailbox Junk {{
    auto = subscribe
    special_use = \\Junk
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 64
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
service anvil {{
  chroot =
}}
service auth {{
  unix_listener auth-userdb {{
    mode = 0666
  }}
}}
"""


class Dovecot:
    """A private Dovecot on 127.0.0.1:<free port> with accounts alice and bob (see ACCOUNTS)."""

    _count = 0

    def __init__(self, accounts: dict[str, str] | None = None):
        binary = dovecot_path()
        if binary is None:
            raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd)")
        if os.geteuid() != 0:
            raise RuntimeError("the reference Dovecot needs root (it switches to user nobody)")
        Dovecot._count += 1
        self.passwords = dict(accounts or ACCOUNTS)
        self.dir = Path(tempfile.mkdtemp(prefix="maillab-dovecot-"))
        os.chmod(self.dir, 0o755)
        for sub in ("mail", "home"):
            (self.dir / sub).mkdir()
            shutil.chown(self.dir / sub, "nobody", "nogroup")
        (self.dir / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.passwords.items()))
        self.port = _free_port()
        self.host = "127.0.0.1"
        conf = self.dir / "dovecot.conf"
        conf.write_text(_CONFIG.format(d=self.dir, n=f"{os.getpid()}-{Dovecot._count}", port=self.port))
        self.proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.time() + 15
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                    log = (self.dir / "dovecot.log").read_text(errors="replace") if (self.dir / "dovecot.log").exists() else ""
                    self.close()
                    raise RuntimeError(f"dovecot did not start: {err} {log[-2000:]}")
                time.sleep(0.05)

    def connect(self) -> imaplib.IMAP4:
        return imaplib.IMAP4(self.host, self.port, timeout=10)

    def login(self, user: str = "alice") -> imaplib.IMAP4:
        M = self.connect()
        M.login(user, self.passwords[user])
        return M

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- sample messages
# Real-world-shaped messages (LF line ends, as a Maildir keeps them) for FETCH and SEARCH tests.

PLAIN = b"""\
Return-Path: <bob@example.com>
Date: Mon, 1 Jan 2024 10:00:00 +0100
From: Bob Builder <bob@example.com>
To: Alice <alice@example.com>, carol@example.org
Cc: "Dave, the reviewer" <dave@example.net>
Subject: Lunch on Friday?
Message-ID: <lunch-1@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hi Alice,

shall we have lunch on Friday?

Bob
"""

ALTERNATIVE = """\
Date: Tue, 2 Jan 2024 09:30:00 +0200
From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>
To: alice@example.com
Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgQmVybGlu?=
Message-ID: <berlin-2@example.de>
In-Reply-To: <lunch-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt-boundary-42"

This is a multi-part message in MIME format.
--alt-boundary-42
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Gr=C3=BC=C3=9Fe aus Berlin!
Das Wetter ist sch=C3=B6n.
--alt-boundary-42
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Gr=C3=BC=C3=9Fe aus <b>Berlin</b>!</p></body></html>
--alt-boundary-42--
""".encode()

ATTACHMENT = b"""\
Date: Wed, 3 Jan 2024 14:15:16 -0500
From: Carol <carol@example.org>
To: Alice <alice@example.com>
Bcc: archive@example.org
Reply-To: Carol Replies <replies@example.org>
Subject: The report (with attachment)
Message-ID: <report-3@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mixed-1"

--mixed-1
Content-Type: multipart/alternative; boundary="alt-2"

--alt-2
Content-Type: text/plain; charset=us-ascii

Please find the report attached.
--alt-2
Content-Type: text/html; charset=us-ascii

<p>Please find the <i>report</i> attached.</p>
--alt-2--

--mixed-1
Content-Type: application/pdf; name="report.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="report.pdf"
Content-Description: Quarterly report
Content-ID: <part3@example.org>

JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl
Y29kZT4+CnN0cmVhbQp4nDPQM1Qo5ypUMFAwALJMLU31jBQsTAz1LBSKUrnCtRTyuAIVAIRMBqQK
ZW5kc3RyZWFtCmVuZG9iagoKMyAwIG9iago0MgplbmRvYmoK
--mixed-1--
"""

FORWARD = b"""\
Date: Thu, 4 Jan 2024 08:00:00 +0000
From: Dave <dave@example.net>
To: alice@example.com
Subject: Fwd: Lunch on Friday?
Message-ID: <fwd-4@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: text/plain; charset=us-ascii

See below.
--outer
Content-Type: message/rfc822

Date: Mon, 1 Jan 2024 10:00:00 +0100
From: Bob Builder <bob@example.com>
To: Alice <alice@example.com>
Subject: Lunch on Friday?
Message-ID: <lunch-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset=us-ascii

shall we have lunch on Friday?
--inner
Content-Type: text/html; charset=us-ascii

<p>shall we have lunch on Friday?</p>
--inner--

--outer--
"""

GROUP = b"""\
Date: Fri, 5 Jan 2024 23:59:59 -0800
From: "Eve \\"the\\" Example" <eve@example.com>
Sender: list-bounces@lists.example.com
To: undisclosed-recipients:;
Cc: Friends: frank@example.com, Grace <grace@example.com>;, henry@example.com (Henry H)
Subject: A group, a comment and a very long header line that is folded
 onto a second line
Message-ID: <group-5@example.com>
X-Priority: 1

Plain body without MIME headers.
"""

SAMPLES = [PLAIN, ALTERNATIVE, ATTACHMENT, FORWARD, GROUP]


# ----------------------------------------------------------------------------- raw client

class RawClient:
    """Sends tagged commands as typed and returns the server's responses, literals included."""

    def __init__(self, host: str, port: int, timeout: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.n = 0
        self.greeting = self.read_response()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        i = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self) -> bytes:
        """One response line with any literals it carries."""
        import re
        out = b""
        while True:
            line = self._line()
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return out
            out += self._exact(int(m.group(1)))

    def command(self, text: str | bytes) -> list[bytes]:
        """Send ``tag text`` (text may hold literals written as {n+}) and read to the tagged reply."""
        self.n += 1
        tag = b"t%d" % self.n
        data = text.encode() if isinstance(text, str) else text
        self.sock.sendall(tag + b" " + data + b"\r\n")
        responses = []
        while True:
            r = self.read_response()
            responses.append(r)
            if r.startswith(tag + b" "):
                return responses

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def literal(data: bytes) -> bytes:
    """A non-synchronizing literal (LITERAL+) for use inside RawClient.command text."""
    return b"{%d+}\r\n" % len(data) + data


class FixedDelayGuard:
    """Wraps a lab's LoginGuard for tests: every login waits ``pause`` seconds before its
    password is checked, and the server's calls to ``admit`` are counted (one per login)."""

    def __init__(self, guard, pause: float = 0.15):
        self._guard, self.pause, self.asked = guard, pause, 0

    def admit(self, peer: str, user: str):
        from ..net import Turn
        self.asked += 1
        return Turn(self.pause)

    def __getattr__(self, name):  # record(), attempts ... as the lab's guard
        return getattr(self._guard, name)


class SlowLogins:
    """``with SlowLogins(ctx) as slow:`` every password check waits until ``slow.release`` is
    set (``slow.checking`` says one has begun): a test sees what the server does meanwhile."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.checking, self.release = threading.Event(), threading.Event()

    def __enter__(self):
        authenticate = self._authenticate = self.ctx.authenticate

        def slow(*args, **kwargs):
            self.checking.set()
            self.release.wait(30)
            return authenticate(*args, **kwargs)
        self.ctx.authenticate = slow
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.ctx.authenticate = self._authenticate


def returns_within(seconds: float, fn, *args) -> bool:
    """Whether ``fn(*args)`` returns (or raises) within ``seconds``, run in a forked child.

    For tests of inputs that once made a parser loop forever: a thread cannot be stopped, a
    child process can (and its memory goes with it).
    """
    import multiprocessing

    def child():
        try:
            fn(*args)
        except BaseException:
            pass
    proc = multiprocessing.get_context("fork").Process(target=child, daemon=True)
    proc.start()
    proc.join(seconds)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return False
    return True


# ----------------------------------------------------------------------------- normalizing

def _sexp(data: bytes, i: int = 0, depth: int = 0):
    """Parse response text into nested lists of bytes (strings and atoms alike), None for NIL."""
    import re
    items = []
    n = len(data)
    while i < n:
        c = data[i:i + 1]
        if c in (b" ", b"\r", b"\n"):
            i += 1
        elif c == b"(":
            sub, i = _sexp(data, i + 1, depth + 1)
            items.append(sub)
        elif c == b")":
            return items, i + 1
        elif c == b'"':
            j = i + 1
            out = bytearray()
            while j < n and data[j:j + 1] != b'"':
                if data[j:j + 1] == b"\\":
                    j += 1
                out += data[j:j + 1]
                j += 1
            items.append(bytes(out))
            i = j + 1
        elif c == b"{":
            m = re.match(rb"\{(\d+)\+?\}\r\n", data[i:])
            size = int(m.group(1))
            start = i + m.end()
            items.append(data[start:start + size])
            i = start + size
        else:
            j = i
            bracket = 0
            while j < n:
                ch = data[j:j + 1]
                if ch == b"[":
                    bracket += 1
                elif ch == b"]":
                    bracket -= 1
                elif bracket == 0 and ch in (b" ", b"(", b")", b"\r", b"\n"):
                    break
                j += 1
            atom = data[i:j]
            items.append(None if atom.upper() == b"NIL" else atom)
            i = j
    return items, i


def _lower(x):
    if isinstance(x, list):
        return [_lower(y) for y in x]
    return x.lower() if isinstance(x, bytes) else x


def _norm_fetch(items: list) -> dict:
    out = {}
    for k in range(0, len(items) - 1, 2):
        key = items[k].upper()
        val = items[k + 1]
        if key == b"FLAGS":
            val = tuple(sorted(v for v in val if v != b"\\Recent"))
        elif key in (b"BODYSTRUCTURE", b"BODY"):
            val = _lower(val)
        elif key.startswith(b"BODY["):
            key = key.upper()
        out[key.decode()] = val
    return out


def normalize(responses: list[bytes], *, keep_recent: bool = False) -> list:
    """What must match between two servers: tags, UIDVALIDITY, human text and the order of
    CAPABILITY and LIST lines set aside. (Internal dates are compared: give APPEND a date.)"""
    import re
    out = []
    lists = []
    flags_seen = False
    for r in responses:
        untagged = r.startswith(b"* ")
        head = r[2:] if untagged else r.split(b" ", 1)[1]
        if not head.endswith(b"}\r\n"):
            head = head.rstrip(b"\r\n")
        word = head.split(b" ", 1)[0].upper()
        if untagged and word == b"CAPABILITY":
            continue
        if word in (b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"):
            m = re.match(rb"\w+ \[([^\]]*)\]", head)
            code = m.group(1).split(b" ") if m else []
            if code:
                code[0] = code[0].upper()
            if code and code[0] in (b"UIDVALIDITY",):
                code[1] = b"V"
            if code and code[0] in (b"APPENDUID", b"COPYUID"):
                code[1] = b"V"
            if code and code[0] in (b"CLIENTBUG", b"NONEXISTENT", b"CANNOT", b"CAPABILITY"):
                code = []  # Dovecot sends these codes where maillab does not, or the reverse
            if code and code[0] in (b"CAPABILITY", b"BADCHARSET"):
                code = code[:1]
            if code and code[0] == b"PERMANENTFLAGS":
                if untagged and word == b"OK" and flags_seen:
                    continue  # announced with a new keyword: when is up to the server
                code = [b"PERMANENTFLAGS"]  # Dovecot and maillab differ in the keywords they list
            out.append(("*" if untagged else "tagged", word.decode(), [c.decode() for c in code]))
            continue
        if untagged and word in (b"LIST", b"LSUB"):
            items, _i = _sexp(head.rstrip(b"\r\n"))
            attrs = tuple(sorted(a.lower() for a in items[1]))
            lists.append((word.decode(), attrs, items[2], items[3]))
            continue
        if untagged and word == b"ID":
            out.append(("ID",))  # each server names itself
            continue
        if untagged and word == b"FLAGS":
            flags_seen = True
            continue
        m = re.match(rb"(\d+) (\w+)(.*)", head, re.S)
        if untagged and m and m.group(2).upper() == b"FETCH":
            items, _i = _sexp(m.group(3))
            out.append(("FETCH", int(m.group(1)), _norm_fetch(items[0])))
            continue
        if untagged and m and m.group(2).upper() == b"RECENT" and not keep_recent:
            continue
        if untagged and m:
            out.append((m.group(2).upper().decode(), int(m.group(1))))
            continue
        if untagged and word == b"SEARCH":
            out.append(("SEARCH", sorted(int(x) for x in head.split()[1:])))
            continue
        if untagged and word == b"STATUS":
            items, _i = _sexp(head.rstrip(b"\r\n"))
            vals = dict(zip(items[2][::2], items[2][1::2]))
            vals.pop(b"UIDVALIDITY", None)
            out.append(("STATUS", items[1], vals))
            continue
        out.append(("other", head.rstrip(b"\r\n")))
    if lists:
        out.append(("LISTS", sorted(lists)))
    return out

# Unusual but real: raw UTF-8 headers, no body, odd addresses, RFC 2231 names, a multipart
# without boundary, a digest, encoded words in a quoted name, mixed line ends.
UNUSUAL = [
    "From: Zoë <zoe@example.com>\nTo: alice@example.com\nSubject: Καλημέρα κόσμε\n"
    "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nΓεια σου!\n".encode(),
    b"Subject: no body at all",
    b"Subject: empty body\n\n",
    b"From: a@b.c\nTo: \"Smith, John\" <john@x.org>, Group: ;, <bare@x.org>, x@y (comment), "
    b"Route <@route,@r2:user@dom.org>\n"
    b"Content-Type: multipart/mixed; boundary=b1\n\n--b1\nContent-Type: application/octet-stream\n"
    b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.txt\n"
    b"Content-Language: en, de\nContent-Location: http://example.com/x\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\nabc\n--b1\n"
    b"Content-Type: text/plain; charset=\"ISO-8859-1\"; format=flowed\n"
    b"Content-Transfer-Encoding: quoted-printable\n\nS=E9bastien\n--b1\nContent-Type: message/rfc822\n\n"
    b"Subject: inner without mime\n\ninner body\n--b1--\nepilogue\n",
    b"Content-Type: multipart/alternative\n\nno boundary param\n",
    b"Content-Type: text/html; format=flowed\n\n<p>x</p>",
    b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: d1\n\none\n--d\n\nSubject: d2\n\ntwo\n--d--\n",
    b"Message-ID: <a@b>\nDate: garbage date\nIn-Reply-To: <x@y> <z@w>\n"
    b"From: \"=?iso-8859-1?q?Andr=E9?=\" <andre@example.fr>\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= =?utf-8?q?_cr=C3=A8me?=\n\nbody\r\nwith crlf\nand lf\n",
]
