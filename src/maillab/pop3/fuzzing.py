"""Fuzz target for the POP3 core (see ``maillab.imap.fuzzing`` for what a target is).

:class:`Pop3Target` turns the first byte of an input into the state the session starts in
(AUTHORIZATION, TRANSACTION, waiting for AUTH PLAIN's data, a strict lab before STLS) and feeds
the rest as what the client sent, in two chunks. A failure is an internal error, a reply that is
not ``+OK``/``-ERR``/``+`` where one must start, or an answer that does not end.
"""

from __future__ import annotations

import re
import time

from ..imap.fuzzing import HOSTILE_MESSAGES, StoreTarget
from ..imap.testing import SAMPLES
from ..store import Store
from .core import Pop3Session

__all__ = ["Pop3Target", "POP3_SEEDS", "POP3_TOKENS"]

POP3_SEEDS = [
    b"CAPA\r\n", b"USER alice\r\nPASS alice-pw\r\n", b"APOP alice 0123456789abcdef0123456789abcdef\r\n",
    b"AUTH PLAIN AGFsaWNlAGFsaWNlLXB3\r\n", b"AUTH PLAIN\r\nAGFsaWNlAGFsaWNlLXB3\r\n", b"AUTH\r\n", b"STLS\r\n",
    b"STAT\r\n", b"LIST\r\n", b"LIST 2\r\n", b"UIDL\r\n", b"UIDL 3\r\n", b"RETR 1\r\n", b"TOP 2 5\r\n",
    b"TOP 3 0\r\n", b"DELE 1\r\nRSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b"RETR 1\r\nRETR 2\r\nRETR 3\r\nQUIT\r\n",
]
POP3_TOKENS = [b" ", b"\r\n", b"\n", b"\r", b"0", b"1", b"-1", b"99999999999999999999", b"*", b"=", b"\x00",
               b"\xff", b"\xc3\xa9", b"USER ", b"PASS ", b"RETR ", b"TOP ", b"AUTH PLAIN ", b"x" * 600]

_REPLY_START = re.compile(rb"(\+OK|-ERR|\+)( |\r\n)")


class Pop3Target(StoreTarget):
    """A POP3 session fed one input."""

    STATES = ("authorization", "transaction", "auth plain", "strict")

    def fill(self, store: Store) -> None:
        acct = store.add_account("alice", "alice-pw", "example.com", apop=True)
        for message in [m if isinstance(m, bytes) else m.encode() for m in SAMPLES] + HOSTILE_MESSAGES:
            acct.folder("INBOX").deliver(message)

    def __call__(self, data: bytes) -> str | None:
        self.next_input()
        state = self.STATES[data[0] % len(self.STATES)] if data else self.STATES[0]
        body = data[1:]
        self.ctx.strict = state == "strict"
        s = Pop3Session(self.ctx, peer="127.0.0.1:1", tls_available=True, commands_per_turn=1)
        s.greeting()
        if state == "transaction":
            s.receive_data(b"USER alice\r\n")
            s.receive_data(b"PASS alice-pw\r\n")
        elif state == "auth plain":
            s.receive_data(b"AUTH PLAIN\r\n")
        answers = []
        size = 0
        try:
            cut = (data[1] * len(body) // 256) if len(data) > 1 else 0
            for chunk in (body[:cut], body[cut:]):
                started = time.perf_counter()
                answers.append(s.receive_data(chunk))
                while True:
                    took, started = time.perf_counter() - started, time.perf_counter()
                    if took > self.turn_limit:
                        return f"one turn held the loop for {took:.2f} s"
                    if not s.pending:
                        break
                    answers.append(s.receive_data())
                    size += len(answers[-1])
                    if size > self.output_limit:
                        return f"answer longer than {self.output_limit} bytes"
                    if not answers[-1]:
                        return "pending, but nothing more to say: the answer never ends"
        finally:
            s.connection_lost()
        if s.failed:
            return "internal error: " + b"".join(answers)[-200:].decode("ascii", "replace")
        out = b"".join(answers)
        if out and not out.endswith(b"\r\n"):
            return f"answer without CRLF at its end: {out[-80:]!r}"
        first = answers[0] if answers and answers[0] else out
        if first and not _REPLY_START.match(first):
            return f"not a POP3 reply: {first[:80]!r}"
        return None
