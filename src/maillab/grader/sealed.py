"""A lab whose servers and evidence belong to the grader, not to the learner's kernel.

While a submission is graded, :class:`SealedLab` runs an ordinary :class:`maillab.MailLab` in
the grader's worker process: its mail store lives in a folder only the grader can read, its
transcripts and login records stay in the grader's memory. The sandboxed kernel reaches the
servers over loopback as usual, and everything else through a small control socket
(:class:`ControlServer`): the ports and accounts, and read-only copies of transcripts, stored
messages and logins, so that the notebook's own visible tests and the learner's
``lab.transcript()`` keep working (:mod:`maillab.grader.client`, what ``maillab.start()``
returns there). Nothing the kernel sends through that socket can change what was recorded.
"""

from __future__ import annotations

import base64
import json
import os
import socketserver
import threading
from pathlib import Path

from ..i18n import _
from ..lab import MailLab

MAX_REQUEST = 4 * 1024 * 1024  # bytes in one request line
MAX_CONNECTIONS = 16  # open control connections at once (more are closed straight away)
MAX_ACCOUNTS = 200  # accounts the kernel may ask for (visible tests make one each)
MAX_ACCOUNT_BYTES = 4 * 1024 * 1024  # message bytes in one such account


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class SealedLab:
    """One lab for one phase of one submission: servers in this process, a control socket."""

    def __init__(self, private: Path, socket_path: Path, options: dict | None = None,
                 allow: list[int] = (), evidence: bool = True):
        """``allow``: the sandbox's user id (the lab admits its owner, root and these only).
        ``evidence=False``: the control socket tells ports and accounts only; the learner's
        answer process has no use for the transcripts or the store, and must not read them
        while the grader's tests run (it could answer a test from the store without a session).
        """
        self.evidence = evidence
        self.options = dict(options or {})
        private.mkdir(parents=True, exist_ok=True)
        self.lab = MailLab(root=private / "store", ports="any", allow_users=list(allow),
                           **self.options).start()
        self.accounts_made = 0
        self.stopped = False
        self.control = ControlServer(str(socket_path), self)
        os.chmod(socket_path, 0o666)  # the sandbox's user connects to it
        threading.Thread(target=self.control.serve_forever, name="maillab-control",
                         daemon=True).start()

    def close(self) -> None:
        """Stop the servers and the control socket (again: nothing happens)."""
        if self.stopped:
            return
        self.stopped = True
        self.control.shutdown()
        self.control.server_close()
        self.lab.stop()

    stop = close

    # ---------------------------------------------------------------- what the kernel may ask
    def info(self) -> dict:
        lab = self.lab
        return {
            "host": lab.host, "domains": lab.domains, "tls": lab.ca is not None,
            "strict": lab.strict,
            "services": [[s.protocol, s.domain, s.hostname, s.port, s.standard_port,
                          s.description, s.login_policy] for s in lab.services],
            "accounts": [[a.login, a.password, a.address, a.domain] for a in lab.accounts],
            "mx": {d: list(hp) for d, hp in lab.mx.items()},
            "ca": lab.ca.ca_file.read_text() if lab.ca is not None else None,
        }

    def lines(self, min_conn: int = 0) -> list:
        return [[l.time, l.service, l.conn, l.who, _b64(l.raw), l.peer]
                for l in self.lab.recorder.lines() if l.conn >= min_conn]

    def files(self, user: str, folder: str) -> list:
        from ..grading import maildir
        out = []
        for base, path in maildir(self.lab, user, folder).items():
            try:
                out.append([base, path.name, path.stat().st_mtime, _b64(path.read_bytes())])
            except FileNotFoundError:  # removed meanwhile
                continue
        return out

    def mailbox(self, user: str, folder: str) -> list:
        return [[m.uid, sorted(m.flags), m.size, m.internaldate, m.path.name, _b64(m.raw)]
                for m in self.lab.mailbox(user, folder)]

    def logins(self) -> list:
        return [[a.time, a.service, a.user, a.peer, a.mechanism, a.secure, a.success]
                for a in self.lab.logins()]

    def users(self) -> list:
        from ..grading import account_logins
        return account_logins(self.lab)

    def make_account(self, messages: list, domain: str | None, flags: list) -> list:
        from ..grading import make_account
        raw = [base64.b64decode(m) for m in messages]
        if self.accounts_made >= MAX_ACCOUNTS or sum(map(len, raw)) > MAX_ACCOUNT_BYTES:
            raise ValueError(_("too many test accounts for one notebook"))
        if domain is not None and domain not in self.lab.domains:
            raise ValueError(_("no such domain: {0}").format(domain))
        self.accounts_made += 1
        return list(make_account(self.lab, raw, domain=domain,
                                 flags=[tuple(str(f) for f in fl) for fl in flags]))

    def settle(self, timeout: float) -> None:
        self.lab.settle(min(float(timeout), 10.0))

    def answer(self, request: dict) -> object:
        op = request.get("op")
        if op == "info":
            return self.info()
        if not self.evidence:
            raise PermissionError(_("not while your work is graded"))
        if op == "lines":
            return self.lines(int(request.get("min_conn", 0)))
        if op == "files":
            return self.files(str(request["user"]), str(request.get("folder", "INBOX")))
        if op == "mailbox":
            return self.mailbox(str(request["user"]), str(request.get("folder", "INBOX")))
        if op == "logins":
            return self.logins()
        if op == "users":
            return self.users()
        if op == "settle":
            return self.settle(request.get("timeout", 10))
        if op == "account":
            return self.make_account(list(request.get("messages", []))[:100],
                                     request.get("domain"), list(request.get("flags", []))[:100])
        raise ValueError(f"unknown request {op!r}")


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers the kernel's requests, one JSON line each way."""

    daemon_threads = True

    def __init__(self, path: str, sealed: SealedLab):
        self.sealed = sealed
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(path, _Handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_REQUEST + 1)
            if not line or len(line) > MAX_REQUEST:
                return
            try:
                request = json.loads(line)
                if type(request) is not dict:
                    raise ValueError("a request is a JSON object")
                reply = {"ok": self.server.sealed.answer(request)}
            except Exception as e:  # the kernel's mistake (or mischief): an answer, not a crash
                reply = {"error": f"{type(e).__name__}: {e}"[:500]}
            try:
                self.wfile.write(json.dumps(reply).encode() + b"\n")
            except OSError:
                return
