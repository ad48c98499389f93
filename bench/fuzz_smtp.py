"""SMTP fuzz targets: arbitrary bytes fed to the lab's real SMTP servers over loopback.

``TARGETS`` maps a target's name to ``fn(data: bytes) -> str | None`` for the harness in
``bench/fuzz.py``: None when the server coped, or a string naming the protocol failure:

* a reply that reports an exception (aiosmtpd's ``500 Error: (KeyError) ...``, our ``451
  4.3.0 internal error``), or a traceback in the lab's log;
* a refusal (4xx/5xx) without a hint for learners, or a reply that is not one printable line;
* a hang: the session did not end within ``HANG_SECONDS`` after the input and a closing
  ``<CRLF>.<CRLF>QUIT<CRLF>`` (which ends a message, an AUTH exchange or a plain session).

Every target opens a fresh connection, so the inputs do not influence each other. One lab per
process serves them all (started on first use, login throttling off so refused logins are
answered at once). A target costs a few milliseconds: 100,000 inputs take minutes.

    python bench/fuzz_smtp.py [--inputs 2000] [--seed 1]     # a quick run of every target
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import socket
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import maillab  # noqa: E402

HANG_SECONDS = 3.0
CLOSING = b"\r\n.\r\nQUIT\r\n"
_REPLY = re.compile(rb"^(\d{3})([ -])(.*)$")
# Refusals that need no hint: the server is hanging up, or the RFC fixes the words.
_NO_HINT_NEEDED = (b"421 ",)
_LAB_OPTIONS = {"login_guard": {"base": 0.0, "cap": 0.0}, "smtp_timeout": 10,
                "max_connections": 1000}


class SmtpFuzzer:
    """Feeds inputs to one lab's SMTP server and judges what comes back."""

    def __init__(self, lab: "maillab.MailLab", port: int | None = None):
        self.lab = lab
        self.port = port or lab.smtp_port
        self.inputs = 0
        self._log_errors = self._errors_in_log()

    # ---------------------------------------------------------------- targets
    def session(self, data: bytes) -> str | None:
        """Bytes right after the greeting, as a client would type them."""
        return self._run(data)

    def envelope(self, data: bytes) -> str | None:
        """``data`` as the address of MAIL FROM, then a recipient and a short message."""
        line = data.replace(b"\r", b"").replace(b"\n", b"")
        return self._run(b"EHLO fuzz.example\r\nMAIL FROM:" + line +
                         b"\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: f\r\n\r\nx")

    def recipient(self, data: bytes) -> str | None:
        """``data`` as the address of RCPT TO, after a login (so relaying is allowed)."""
        line = data.replace(b"\r", b"").replace(b"\n", b"")
        return self._run(b"EHLO fuzz.example\r\n" + _auth_plain(b"alice", b"wonderland") +
                         b"MAIL FROM:<alice@example.com>\r\nRCPT TO:" + line +
                         b"\r\nDATA\r\nSubject: f\r\n\r\nx")

    def auth(self, data: bytes) -> str | None:
        """``data`` as the lines of an AUTH exchange."""
        return self._run(b"EHLO fuzz.example\r\nAUTH " + data)

    def message(self, data: bytes) -> str | None:
        """``data`` as a message's text, from a stranger to a local user."""
        return self._run(b"EHLO fuzz.example\r\nMAIL FROM:<fuzz@elsewhere.example>\r\n"
                         b"RCPT TO:<bob@example.com>\r\nDATA\r\n" + data)

    # ---------------------------------------------------------------- running one input
    def _run(self, data: bytes) -> str | None:
        self.inputs += 1
        if self.inputs % 500 == 0:
            self._empty_mailboxes()
        try:
            replies, ended = self._converse(data + CLOSING)
        except OSError as e:
            return f"connection failed: {e!r}"
        verdict = _judge(replies)
        if verdict is None and not ended:
            verdict = f"hang: no end of session within {HANG_SECONDS} s"
        errors = self._errors_in_log()
        if errors > self._log_errors:
            self._log_errors = errors
            last = [r for r in self.lab.log().records("ERROR")][-1]
            verdict = verdict or f"error in the lab's log: {last.message[:300]}"
        return verdict

    def _converse(self, data: bytes) -> tuple[list[bytes], bool]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=HANG_SECONDS) as sock:
            sock.settimeout(HANG_SECONDS)
            received = bytearray()
            deadline = time.monotonic() + HANG_SECONDS
            try:
                sock.sendall(data)
            except OSError:
                pass  # the server may hang up before reading everything (421): judge its replies
            ended = False
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    break
                except OSError:
                    ended = True
                    break
                if not chunk:
                    ended = True
                    break
                received += chunk
                if b"\r\n220 Ready to start TLS\r\n" in received:
                    # The server now waits for a TLS handshake and, rightly, dropped what came
                    # after STARTTLS in clear text (RFC 3207 4.2): a quiet wait, not a hang.
                    ended = True
                    break
        return bytes(received).split(b"\r\n")[:-1] if received else [], ended

    def _errors_in_log(self) -> int:
        return len(self.lab.log().records("ERROR"))

    def _empty_mailboxes(self) -> None:
        for acct in self.lab.store.accounts:
            inbox = acct.folder("INBOX")
            inbox.expunge([m.uid for m in inbox.messages()])


def _auth_plain(user: bytes, password: bytes) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password) + b"\r\n"


def _judge(replies: list[bytes]) -> str | None:
    """The first protocol failure in the server's replies, or None."""
    for line in replies:
        m = _REPLY.match(line)
        if m is None:
            return f"not a reply line: {line[:200]!r}"
        text = m.group(3)
        if b"Error: (" in text or b"internal error" in text:
            return f"internal error from input alone: {line[:300]!r}"
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            return f"reply not UTF-8: {line[:200]!r}"
        if not decoded.isprintable():
            return f"reply not printable: {line[:200]!r}"
        code = int(m.group(1))
        if code >= 400 and m.group(2) == b" " and b"hint" not in text \
                and not line.startswith(_NO_HINT_NEEDED):
            return f"refusal without a hint: {line[:200]!r}"
    return None


# ---------------------------------------------------------------- the harness's view

_fuzzer: SmtpFuzzer | None = None


def fuzzer() -> SmtpFuzzer:
    """The process's fuzzer and its lab (started on first use, stopped at exit)."""
    global _fuzzer
    if _fuzzer is None:
        import atexit
        lab = maillab.MailLab(ports="any", options=dict(_LAB_OPTIONS)).start()
        _fuzzer = SmtpFuzzer(lab)
        atexit.register(CLOSE)
    return _fuzzer


def _target(name: str) -> Callable[[bytes], str | None]:
    def run(data: bytes) -> str | None:
        return getattr(fuzzer(), name)(data)
    run.__name__ = f"smtp_{name}"
    return run


TARGETS: dict[str, Callable[[bytes], str | None]] = {
    "smtp": _target("session"),
    "smtp-envelope": _target("envelope"),
    "smtp-recipient": _target("recipient"),
    "smtp-auth": _target("auth"),
    "smtp-message": _target("message"),
}

# ---------------------------------------------------------------- inputs (bench/fuzz.py's contract)

# Pieces a learner (or an attacker) combines: commands, addresses, encodings, line ends.
TOKENS = [b"EHLO x", b"HELO x", b"MAIL FROM:<a@b.example>", b"MAIL FROM:<>", b"RCPT TO:<bob@example.com>",
          b"RCPT TO:<john@example.net>", b"DATA", b"RSET", b"NOOP", b"QUIT", b"VRFY bob", b"HELP",
          b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH CRAM-MD5", b"STARTTLS", b"EXPN x", b"Subject: hi",
          b"MAIL FROM:<@a.example:", b"<\xff\xfe@x>", b"SIZE=99999999999", b"BODY=8BITMIME",
          b"SMTPUTF8", b"\x00", b"\r", b"\n", b"\r\n", b".", b"..", b"*", b"=", b"AGFsaWNl",
          b"\xc3\xa9", b"\x80", b"A" * 600, b"A" * 1100, b":", b"<", b">", b"\\", b'"', b" "]

# Whole inputs worth mutating, per target.
SEEDS = {
    "smtp": [b"EHLO laptop.example\r\nMAIL FROM:<x@elsewhere.example>\r\nRCPT TO:<bob@example.com>\r\n"
             b"DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\n",
             b"EHLO me\r\nAUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\nMAIL FROM:<alice@example.com>\r\n"
             b"RCPT TO:<john@example.net>\r\nDATA\r\nSubject: relay\r\n\r\nx\r\n.\r\n",
             b"HELO me\r\nVRFY bob\r\nHELP MAIL\r\nRSET\r\nNOOP\r\n"],
    "smtp-envelope": [b"<x@elsewhere.example>", b"<> SIZE=100 BODY=8BITMIME", b"<\xc3\xa9@example.org> SMTPUTF8",
                      b"<@relay.example:x@y.example>", b"x@y.example"],
    "smtp-recipient": [b"<john@example.net>", b"<bob@EXAMPLE.COM>", b"<postmaster>", b"<nobody@unknown.example>"],
    "smtp-auth": [b"PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\n", b"LOGIN\r\nYWxpY2U=\r\nd29uZGVybGFuZA==\r\n",
                  b"PLAIN\r\nAGJvYgB3cm9uZw==\r\n", b"LOGIN YWxpY2U=\r\n*\r\n"],
    "smtp-message": [b"From: a@b.example\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\n..leading dot\r\nbody\r\n",
                     b"Subject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
                     b"boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"],
}
# A session's commands are answered one by one; 4 KiB of them is plenty (a longer input would
# be slow for its length, not because of a fault). A message may be as long as the harness likes.
MAX_INPUT = {"smtp": 4096, "smtp-envelope": 4096, "smtp-recipient": 4096, "smtp-auth": 4096}


def CLOSE() -> None:  # noqa: N802 - the name bench/fuzz.py looks for
    """Stop the lab of this process, if a target started one."""
    if _fuzzer is not None:
        _fuzzer.lab.stop(0)


def random_input(rng: random.Random) -> bytes:
    parts = [rng.choice(TOKENS) for _ in range(rng.randint(1, 8))]
    glue = [rng.choice([b"", b" ", b"\r\n", b"\n", b":"]) for _ in parts]
    data = b"".join(p + g for p, g in zip(parts, glue))
    if rng.random() < 0.3:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=int, default=2000, help="inputs per target")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"SMTP fuzz, {args.inputs} inputs per target, seed {args.seed}, "
          f"load {os.getloadavg()[0]:.2f}")
    failed = 0
    for name, target in TARGETS.items():
        t0, slowest, failures = time.perf_counter(), 0.0, {}
        for _ in range(args.inputs):
            data = random_input(rng)
            t = time.perf_counter()
            verdict = target(data)
            slowest = max(slowest, time.perf_counter() - t)
            if verdict is not None:
                failures.setdefault(verdict.split(":")[0], (verdict, data))
        took = time.perf_counter() - t0
        print(f"{name:16} {args.inputs / took:7.0f} inputs/s  slowest {slowest * 1000:6.1f} ms  "
              f"failures {len(failures)}" + ("  FAIL" if failures else ""))
        for verdict, data in failures.values():
            print(f"    {verdict}\n      input: {data[:200]!r}")
        failed += len(failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
