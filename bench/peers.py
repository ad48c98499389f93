"""The systems the benchmarks run: maillab as its users start it, and its peers set up as theirs do.

* ``serve_in_thread``: a bare asyncio server (aiosmtpd, a TLS greeter) on its own loop thread;
* ``MaillabServe``: ``python -m maillab serve`` in a process of its own, ports read from its output;
* ``dovecot_import``: mail delivered into a private Dovecot with ``doveadm import`` (Dovecot's own
  tool: it writes the Maildir *and* Dovecot's index), never files dropped into ``new/``;
* ``dovecot_all_services``: the private Dovecot's config with POP3 and implicit TLS added;
* ``answers``, ``wait_answering``: "a service answers" means a client got its greeting;
* ``memory``: the memory of a process and all its children (Dovecot is many processes).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from common import python_env

from maillab.imap.testing import dovecot_path


def serve_in_thread(make_protocol: Callable[[asyncio.AbstractEventLoop], Callable], *,
                    ssl=None) -> tuple[int, Callable[[], None]]:
    """Start ``loop.create_server(make_protocol(loop), "127.0.0.1", 0, ssl=ssl)`` in a new thread.

    Returns the port and a function that stops the server and the thread.
    """
    loop = asyncio.new_event_loop()
    box, ready = {}, threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            loop.create_server(make_protocol(loop), "127.0.0.1", 0, ssl=ssl))
        box["server"], box["port"] = server, server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()

    def stop():
        box["server"].close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    return box["port"], stop


# ----------------------------------------------------------------------------- maillab serve

# A line of the lab's table: "  IMAPS      mail.example.com     port 40123  (stands for 993)"
_SERVICE_LINE = re.compile(r"^\s+([A-Z0-9]+)\s+(\S+)\s+port\s+(\d+)\s")
_TLS_PROTOCOLS = {"smtps", "pop3s", "imaps"}


class MaillabServe:
    """``python -m maillab serve --ports any [--root ROOT]`` as a child process, until close()."""

    def __init__(self, root: str | os.PathLike | None = None, timeout: float = 60):
        self.root = root
        self.timeout = timeout
        self.start()

    def restart(self) -> None:
        """Stop and start again on the same store (the ports change)."""
        self.close()
        self.start()

    def start(self) -> None:
        args = [sys.executable, "-m", "maillab", "serve", "--ports", "any"]
        if self.root is not None:
            args += ["--root", str(self.root)]
        self.started = time.perf_counter()
        # stderr to a file: a pipe nobody reads would stop the server once it filled up
        self.errors = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.errors,
                                     env=python_env(), text=True)
        self.pid = self.proc.pid
        self.host = "127.0.0.1"
        self.services: list[tuple[str, str, int]] = []  # (protocol, host name, port)
        self.output: list[str] = []
        deadline = time.monotonic() + self.timeout
        for line in self.proc.stdout:
            self.output.append(line)
            m = _SERVICE_LINE.match(line)
            if m:
                self.services.append((m.group(1).lower(), m.group(2), int(m.group(3))))
            if line.startswith("ready") or time.monotonic() > deadline:
                break
        if not self.services or self.proc.poll() is not None:
            self.close()
            self.errors.seek(0)
            raise RuntimeError(f"maillab serve did not start: {''.join(self.output)} "
                               f"{self.errors.read()[-3000:]}")

    def port(self, protocol: str, domain: str = "example.com") -> int:
        for proto, host, port in self.services:
            if proto == protocol and host.endswith(domain):
                return port
        raise KeyError(protocol)

    def endpoints(self) -> list[tuple[int, str]]:
        """Every service as (port, how a client knows it answers)."""
        kinds = {"webmail": "http"}
        return [(port, kinds.get(proto, "tls-greeting" if proto in _TLS_PROTOCOLS else "greeting"))
                for proto, _host, port in self.services]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()


# ----------------------------------------------------------------------------- services answer

_NO_VERIFY = ssl.create_default_context()
_NO_VERIFY.check_hostname = False
_NO_VERIFY.verify_mode = ssl.CERT_NONE


def answers(host: str, port: int, kind: str, timeout: float = 2) -> bool:
    """True when a client gets the service's first words: the greeting of SMTP, POP3 or IMAP
    (after the TLS handshake on implicit-TLS ports), or an HTTP status line."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = _NO_VERIFY.wrap_socket(raw) if kind == "tls-greeting" else raw
            if kind == "http":
                sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                return sock.recv(64).startswith(b"HTTP/")
            return sock.recv(512).endswith(b"\r\n")
    except OSError:
        return False


def wait_answering(host: str, endpoints: Iterable[tuple[int, str]], timeout: float = 30) -> None:
    """Poll every endpoint (every 5 ms) until each has answered once."""
    waiting = list(endpoints)
    deadline = time.monotonic() + timeout
    while waiting:
        waiting = [(port, kind) for port, kind in waiting if not answers(host, port, kind)]
        if waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from {waiting}")
            time.sleep(0.005)


# ----------------------------------------------------------------------------- Dovecot

def doveadm(dv, *args: str, fsync: bool = True) -> str:
    """Run ``doveadm`` against the private Dovecot ``dv`` (maillab.imap.testing.Dovecot)."""
    cmd = [shutil.which("doveadm") or "/usr/bin/doveadm", "-c", str(dv.dir / "dovecot.conf")]
    if not fsync:
        # Only for filling folders quickly: maillab's delivery does not fsync either.
        cmd += ["-o", "mail_fsync=never"]
    out = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=3600)
    if out.returncode != 0 or "Error:" in out.stderr:
        raise RuntimeError(f"doveadm {' '.join(args)}: {out.stderr[-2000:]}")
    return out.stdout


def dovecot_import(dv, folder: str, messages: Iterable[bytes], user: str = "alice") -> int:
    """Deliver ``messages`` (in order) into ``folder`` of ``user`` with ``doveadm import``.

    The messages are first written as a Maildir of their own (owned by Dovecot's user, which
    keeps its own uidlist there), then imported: Dovecot copies them into the user's Maildir
    and records them in its index, as a delivery would. Returns how many the folder holds."""
    source = Path(tempfile.mkdtemp(prefix="maillab-bench-import-"))
    try:
        box = source / ("." + folder) if folder != "INBOX" else source
        for sub in ("cur", "new", "tmp"):
            os.makedirs(source / sub, exist_ok=True)
            os.makedirs(box / sub, exist_ok=True)
        cur = box / "cur"
        count = 0
        for count, data in enumerate(messages, 1):
            # The name's leading timestamp orders the messages: Dovecot gives UIDs in that order.
            (cur / f"{1_600_000_000 + count}.M{count}P1.bench:2,").write_bytes(data.replace(b"\r\n", b"\n"))
        for d in [source] + [p for p in source.rglob("*") if p.is_dir()]:
            shutil.chown(d, "nobody", "nogroup")
        doveadm(dv, "import", "-u", user, f"maildir:{source}", "", "mailbox", folder, fsync=False)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    status = doveadm(dv, "mailbox", "status", "-u", user, "messages", folder)
    return int(status.split("=")[1])


def dovecot_all_services(dv, cert_file: str, key_file: str) -> dict[str, int]:
    """Rewrite the private Dovecot's config (it must be stopped) to serve IMAP, POP3, IMAPS and
    POP3S on free loopback ports, as a provider's Dovecot does. Returns protocol -> port."""
    conf_path = dv.dir / "dovecot.conf"
    conf = conf_path.read_text()
    ports = {name: free_port() for name in ("imaps", "pop3", "pop3s")}
    ports["imap"] = dv.port
    edits = [("protocols = imap\n", "protocols = imap pop3\n"),
             ("ssl = no\n", f"ssl = yes\nssl_cert = <{cert_file}\nssl_key = <{key_file}\n"),
             ("inet_listener imaps {\n    port = 0\n",
              f"inet_listener imaps {{\n    address = 127.0.0.1\n    port = {ports['imaps']}\n")]
    for old, new in edits:
        if old not in conf:
            raise RuntimeError(f"the reference Dovecot's config changed: no {old!r}")
        conf = conf.replace(old, new)
    conf += ("service pop3-login {\n"
             f"  inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {ports['pop3']}\n  }}\n"
             f"  inet_listener pop3s {{\n    address = 127.0.0.1\n    port = {ports['pop3s']}\n  }}\n"
             "}\n")
    conf_path.write_text(conf)
    return ports


def restart_dovecot(dv) -> None:
    """Stop the private Dovecot ``dv`` and start it again on the same config and mail (its
    index files stay on disk, as across a real restart); return when IMAP answers."""
    dv.proc.terminate()
    dv.proc.wait(30)
    dv.proc = subprocess.Popen([dovecot_path(), "-F", "-c", str(dv.dir / "dovecot.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_answering(dv.host, [(dv.port, "greeting")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- memory

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def memory(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, processes) of ``pid`` and all its descendants, in bytes. RSS counts pages
    shared between processes once per process; PSS divides them among their sharers."""
    tree = _children()
    todo, rss, pss, count = [pid], 0, 0, 0
    while todo:
        p = todo.pop()
        todo.extend(tree.get(p, []))
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:])
        rss += int(fields["Rss"].split()[0]) * 1024
        pss += int(fields["Pss"].split()[0]) * 1024
        count += 1
    return rss, pss, count
