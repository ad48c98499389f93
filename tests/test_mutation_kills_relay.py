"""The relay's pieces rule by rule: the bounce's text and status codes, the queue's files after
a restart (damaged entries, part numbers, renames, recipients reached already), the router's
retries, connection reuse and idle close, and what the next hop hears (a recording next hop:
STARTTLS, RSET between messages, SMTPUTF8 and 8BITMIME), close() and drain() while a message is
held at the next hop, without a whole lab. Each test was shown to fail on a planted bug
(bench/mutation.py) that the rest of the suite let through."""

from __future__ import annotations

import asyncio
import email
import gc
import email.policy
import json
import logging
import os
import smtplib
import socketserver
import ssl
import threading
import time
import warnings
from collections import deque
from pathlib import Path

import pytest

from maillab import relay
from maillab.relay import (QueuedMessage, RelayQueue, Router, _header_section, _Outcome,
                           delivery_status_notification)
from maillab.store import Store
from maillab.tls import LabCA
from test_relay import ScriptedMX, dead_port

HEADERS = b"From: alice@example.com\r\nSubject: the report\r\n"
CONTENT = HEADERS + b"\r\nbody\r\n"


def message(queue_id="Q1", rcpts=("john@example.net",), **kw) -> QueuedMessage:
    return QueuedMessage("alice@example.com", list(rcpts), CONTENT, queue_id,
                         domain="example.net", helo="mail.example.com", **kw)


# ----------------------------------------------------------------------------- the bounce

def bounce(errors: dict[str, str], headers: bytes = HEADERS) -> bytes:
    return delivery_status_notification(message(), errors, "mail.example.com", headers)


def test_a_bounce_is_crlf_throughout_and_comes_from_the_null_sender():
    data = bounce({"john@example.net": "550 5.1.1 no such user"})
    assert data.startswith(b"Return-Path: <>\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")  # no bare line feed anywhere
    assert b"\r\n\r\nYour message could not be delivered" in data
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    words, status, headers = msg.iter_parts()
    assert "john@example.net: 550 5.1.1 no such user" in words.get_content()
    assert "the report" in headers.as_string()


@pytest.mark.parametrize("error, status", [
    ("550 5.1.1 no such user", "5.1.1"),  # the next hop's own enhanced code
    ("554 go away", "5.0.0"),  # a permanent refusal without one
    ("451 4.3.0 try later", "4.4.7"),  # retried until the retries ran out
    ("ConnectionRefusedError: [Errno 111] refused", "4.4.7"),  # never reached the next hop
])
def test_a_bounce_gives_each_recipient_its_status(error, status):
    data = bounce({"john@example.net": error}).decode()
    assert f"\r\nStatus: {status}\r\n" in data
    assert f"Diagnostic-Code: smtp; {error}\r\n" in data


def test_a_bounce_is_dated_in_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "LAB-5:30")  # a POSIX zone 5.5 hours east of UTC (no tzdata needed)
    time.tzset()
    try:
        data = bounce({"john@example.net": "554 no"})
    finally:
        monkeypatch.undo()
        time.tzset()
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Date"].endswith("+0530")


def test_the_header_section_is_what_comes_before_the_first_blank_line():
    assert _header_section(CONTENT) == HEADERS.rstrip(b"\r\n")
    assert _header_section(b"A: 1\nB: 2\n\nbody\n\nmore") == b"A: 1\nB: 2"
    assert _header_section(b"\r\njust a body\r\n\r\nmore") == b""  # an empty header section
    assert len(_header_section(b"X: " + b"y" * 20_000 + b"\r\n\r\nbody")) == 16_000


# ----------------------------------------------------------------------------- the queue's files

def test_a_queue_opens_again_on_its_own_directory(tmp_path):
    where = tmp_path / "new" / "root" / "queue"  # made with its parents
    RelayQueue(where).add(message())
    (where / "tmp" / "leftover-dir").mkdir()  # a stray directory in tmp/ cannot be unlinked
    again = RelayQueue(where)
    [msg] = again.load()
    assert again.content(msg) == CONTENT


def test_damaged_or_foreign_entries_stay_on_disk_and_are_skipped(tmp_path, caplog):
    queue = RelayQueue(tmp_path / "queue")
    ready = queue.ready
    (ready / "A.1,A=0,T=0").write_bytes(b"not json\nx")
    (ready / "B.2,A=0,T=0").write_bytes(json.dumps({"from": "a@b"}).encode() + b"\nx")
    (ready / "C.3,A=0,T=0").write_bytes(b"[1, 2]\nx")
    (ready / "D.4,A=0,T=0").mkdir()
    header = {"from": "a@example.com", "to": ["b@example.net"], "domain": "example.net",
              "helo": "mail.example.com", "id": "F"}
    (ready / "someone-elses-file").write_bytes(json.dumps(header).encode() + b"\nx")
    (ready / "E.9,A=2,T=1500").write_bytes(json.dumps(dict(header, id="E")).encode() + b"\nx")
    [msg] = RelayQueue(tmp_path / "queue").load()
    assert (msg.queue_id, msg.attempts, msg.next_try, msg.rcpt_tos) == (
        "E", 2, 1.5, ["b@example.net"])
    assert len(os.listdir(ready)) == 6  # nothing deleted
    assert "A.1,A=0,T=0" in caplog.text and "someone-elses-file" in caplog.text


def test_after_a_restart_a_replaced_entry_never_overwrites_its_original(tmp_path):
    """Parts are numbered on from the highest part on disk: the entry that keeps the rest of a
    message's recipients must not get the very name of the one it replaces."""
    first = RelayQueue(tmp_path / "queue")
    first.add(message(rcpts=["john@example.net", "maria@example.net"]))
    assert os.listdir(first.ready) == ["Q1.1,A=0,T=0"]
    queue = RelayQueue(tmp_path / "queue")
    [old] = queue.load()
    rest = QueuedMessage(old.mail_from, ["maria@example.net"], queue.content(old), old.queue_id,
                         domain=old.domain, helo=old.helo)
    queue.add(rest)
    queue.remove(old)
    assert os.listdir(queue.ready) == [rest.path.name] and rest.path.name != "Q1.1,A=0,T=0"
    assert queue.content(rest) == CONTENT


def test_a_retry_is_a_rename_that_keeps_the_part(tmp_path):
    queue = RelayQueue(tmp_path / "queue")
    queue.add(message("X"))
    msg = message("Y")
    queue.add(msg)
    assert msg.path.name == "Y.2,A=0,T=0"
    msg.attempts, msg.next_try = 1, 2.5
    queue.reschedule(msg)
    assert sorted(os.listdir(queue.ready)) == ["X.1,A=0,T=0", "Y.2,A=1,T=2500"]
    assert msg.path.name == "Y.2,A=1,T=2500"


def test_content_comes_from_memory_first_then_from_the_file(tmp_path):
    queue = RelayQueue(tmp_path / "queue")
    msg = message()
    queue.add(msg)
    os.unlink(msg.path)
    assert queue.content(msg) == CONTENT  # still in memory
    queue.remove(msg)  # already gone: fine
    saved = message("Z")
    queue.add(saved)
    saved.content = b""
    assert queue.content(saved) == CONTENT  # read back from disk


# ----------------------------------------------------------------------------- the router

@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", hash_n=2**10)
    s.add_account("alice", "pw", "example.com")
    yield s
    s.close()


@pytest.fixture
def no_socket_left_open():
    """Fails the test when a socket was dropped without being closed (CPython closes it then,
    with a ResourceWarning: a lab that runs for hours must not count on that)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


class Counting:
    """Counts the relay's SMTP connections and their QUITs."""

    def __init__(self, monkeypatch):
        self.connects, self.quits = 0, 0
        real_connect, real_quit = smtplib.SMTP.connect, smtplib.SMTP.quit

        def connect(client, *args, **kwargs):
            self.connects += 1
            return real_connect(client, *args, **kwargs)

        def quit_(client):
            self.quits += 1
            return real_quit(client)
        monkeypatch.setattr(smtplib.SMTP, "connect", connect)
        monkeypatch.setattr(smtplib.SMTP, "quit", quit_)


def run_router(store, tmp_path, scenario, retry_delays=(0.01, 0.01), mx=None, tls=None):
    """Run ``scenario(router)`` on a started router (closed afterwards unless the scenario
    closed it); ``tls``: the client context for STARTTLS to the next hop."""
    async def main():
        router = Router(asyncio.get_running_loop(), tmp_path / "queue", retry_delays, store=store)
        router.tls_context = tls
        if mx is not None:
            router.mx["example.net"] = ("127.0.0.1", mx.port)
        await router.start()
        try:
            return await scenario(router)
        finally:
            if not router._stopping:
                await router.close()
    return asyncio.run(main())


def relay_one(store, tmp_path, mx=None, **kwargs) -> Router:
    """Relay one message (to ``mx``, closed afterwards) until it is handed on or given up."""
    async def scenario(router):
        router.enqueue("mail.example.com", message())
        await asyncio.wait_for(router.settle(), 10)
        return router
    try:
        return run_router(store, tmp_path, scenario, mx=mx, **kwargs)
    finally:
        if mx is not None:
            mx.close()


def inbox_texts(store) -> list[str]:
    inbox = store.account("alice").folder()
    return [inbox.read(m.uid).decode() for m in inbox.messages()]


def test_a_4xx_is_tried_once_per_retry_delay_plus_once_then_bounced(store, tmp_path):
    mx = ScriptedMX(after_data=["451 4.3.0 try later"] * 5)
    router = relay_one(store, tmp_path, mx, retry_delays=(0.01, 0.01))
    assert mx.seen == 3 and mx.received == []
    [text] = inbox_texts(store)
    assert "Status: 4.4.7" in text and "451 4.3.0 try later" in text
    assert len(router.failed) == 1 and os.listdir(tmp_path / "queue" / "ready") == []


def test_mail_for_a_domain_without_a_server_bounces_with_its_headers(store, tmp_path):
    relay_one(store, tmp_path)
    [text] = inbox_texts(store)
    assert "Status: 5.4.4" in text and "Subject: the report" in text  # read from the entry


def test_one_connection_serves_messages_one_after_another_and_close_quits_it(
        store, tmp_path, monkeypatch):
    counting = Counting(monkeypatch)
    mx = ScriptedMX()

    async def scenario(router):
        for queue_id in ("M1", "M2"):
            router.enqueue("mail.example.com", message(queue_id))
            await asyncio.wait_for(router.settle(), 10)
        return counting.connects, counting.quits
    try:
        during = run_router(store, tmp_path, scenario, mx=mx)
    finally:
        mx.close()
    assert len(mx.received) == 2
    assert during == (1, 0)  # the second message reused the open connection
    assert counting.quits == 1  # close() said QUIT


def test_an_idle_connection_is_closed_after_a_while(store, tmp_path, monkeypatch):
    monkeypatch.setattr(relay, "IDLE_CLOSE", 0.05)
    counting = Counting(monkeypatch)
    mx = ScriptedMX()

    async def scenario(router):
        router.enqueue("mail.example.com", message())
        await asyncio.wait_for(router.settle(), 10)
        deadline = time.monotonic() + 5
        while counting.quits == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return counting.quits
    try:
        assert run_router(store, tmp_path, scenario, mx=mx) == 1
    finally:
        mx.close()


def test_drain_returns_early_when_only_late_retries_are_left(store, tmp_path):
    async def scenario(router):
        assert await asyncio.wait_for(router.drain(30), 5) is None  # empty: at once
        router.mx["example.net"] = ("127.0.0.1", dead_port())
        router.enqueue("mail.example.com", message())
        await asyncio.wait_for(router.drain(30), 5)  # the retry is 60 s away: no use waiting
        return router.pending()
    [left] = run_router(store, tmp_path, scenario, retry_delays=(60,))
    assert left.attempts == 1 and "ConnectionRefusedError" in left.errors[-1]


def test_a_partial_failure_keeps_only_the_retried_recipients_and_ten_errors(store, tmp_path):
    async def scenario(router):
        router._task.cancel()  # outcomes given by hand below
        msg = message(rcpts=["john@example.net", "maria@example.net"])
        router.enqueue("mail.example.com", msg)
        [entry] = router.pending()
        router._settle_outcome(_Outcome(entry, permanent={"john@example.net": "550 5.1.1 gone"},
                                        temporary={"maria@example.net": "451 4.2.1 busy 0"}))
        for i in range(1, 12):
            router._settle_outcome(_Outcome(entry, temporary={"maria@example.net": f"451 4.2.1 busy {i}"}))
        return entry
    entry = run_router(store, tmp_path, scenario, retry_delays=(60,) * 20)
    [name] = os.listdir(tmp_path / "queue" / "ready")
    header = json.loads((tmp_path / "queue" / "ready" / name).read_bytes().split(b"\n", 1)[0])
    assert header["to"] == ["maria@example.net"]  # john's refusal is final: not retried
    assert entry.rcpt_tos == ["maria@example.net"] and entry.attempts == 12
    assert len(entry.errors) == 10 and entry.errors[-1].endswith("busy 11")
    [text] = inbox_texts(store)
    assert "john@example.net: 550 5.1.1 gone" in text and "maria" not in text


def test_close_quits_a_connection_released_this_very_instant(store, tmp_path, monkeypatch):
    """On a coarse clock a connection can be released and closed at the same reading: close()
    still quits it and keeps nothing."""
    class CoarseClock:
        time = staticmethod(time.time)
        monotonic = staticmethod(lambda: 1000.0)
    monkeypatch.setattr(relay, "time", CoarseClock)
    counting = Counting(monkeypatch)
    router = relay_one(store, tmp_path, ScriptedMX())
    assert counting.quits == 1 and router._idle == {}


def test_domains_take_turns_batch_by_batch(store, tmp_path, monkeypatch):
    monkeypatch.setattr(relay, "PARALLEL", 1)
    monkeypatch.setattr(relay, "BATCH", 2)
    order = []
    real_send_one = Router._send_one

    def send_one(router, client, msg):
        order.append(msg.queue_id)
        return real_send_one(router, client, msg)
    monkeypatch.setattr(Router, "_send_one", send_one)
    in_flight = []
    real_start_batch = Router._start_batch

    def start_batch(router, domain, batch):
        real_start_batch(router, domain, batch)
        in_flight.append(len(router._batches))
    monkeypatch.setattr(Router, "_start_batch", start_batch)
    mx_net, mx_org = ScriptedMX(), ScriptedMX()

    async def scenario(router):
        router.mx["example.org"] = ("127.0.0.1", mx_org.port)
        router._task.cancel()  # queue everything first, then let the scheduler run
        for i in range(5):
            router.enqueue("mail.example.com", message(f"N{i}"))
        for i in range(2):
            router.enqueue("mail.example.com", message(f"O{i}", rcpts=["x@example.org"]))
        router._task = asyncio.get_running_loop().create_task(router._run())
        await asyncio.wait_for(router.settle(), 10)
    try:
        run_router(store, tmp_path, scenario, mx=mx_net)
    finally:
        mx_net.close()
        mx_org.close()
    assert order == ["N0", "N1", "O0", "O1", "N2", "N3", "N4"]
    assert in_flight == [1, 1, 1, 1]  # one batch at a time (PARALLEL)
    assert len(mx_net.received) == 5 and len(mx_org.received) == 2


def test_a_batch_that_crashed_is_tried_again_without_counting_an_attempt(
        store, tmp_path, monkeypatch, caplog):
    real_send_batch = Router._send_batch
    crashes = []

    def send_batch(router, domain, batch):
        if not crashes:
            crashes.append(domain)
            raise RuntimeError("a bug")
        return real_send_batch(router, domain, batch)
    monkeypatch.setattr(Router, "_send_batch", send_batch)
    mx = ScriptedMX()
    router = relay_one(store, tmp_path, mx, retry_delays=())
    assert crashes == ["example.net"] and len(mx.received) == 1  # no retry delay left: still sent
    assert router.delivered[-1].attempts == 0 and router.failed == deque()
    assert "will be tried again" in caplog.text


async def until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the relay did not get there in time"
        await asyncio.sleep(0.01)


def tried(router) -> bool:
    """Whether the router did all it does at once: every entry handed on, given up, or
    waiting for a retry."""
    return all(m.attempts for m in router.pending())


def test_reply_codes_400_and_500_are_the_edges_of_temporary(store, tmp_path):
    mx = ScriptedMX(rcpt={"a@example.net": "400 4.0.0 odd but temporary",
                          "b@example.net": "500 5.5.2 no"})

    async def scenario(router):
        router.enqueue("mail.example.com", message(rcpts=["a@example.net", "b@example.net"]))
        await until(lambda: router.failed and router.pending() and router.pending()[0].attempts)
        return router.pending(), list(router.failed)
    try:
        [waiting], [failed] = run_router(store, tmp_path, scenario, retry_delays=(60,), mx=mx)
    finally:
        mx.close()
    assert waiting.rcpt_tos == ["a@example.net"] and failed.rcpt_tos == ["b@example.net"]


def test_a_400_after_data_is_temporary(store, tmp_path):
    mx = ScriptedMX(after_data=["400 4.0.0 later"])

    async def scenario(router):
        router.enqueue("mail.example.com", message())
        await until(lambda: router.pending() and router.pending()[0].attempts)
        return router.failed
    try:
        assert not run_router(store, tmp_path, scenario, retry_delays=(60,), mx=mx)
    finally:
        mx.close()


def test_a_mixed_answer_is_settled_on_disk_at_once_and_bounced_with_headers(
        store, tmp_path, monkeypatch):
    """john took it, maria is busy, nobody does not exist: before the loop even hears of it,
    the entry on disk holds maria alone (a crash now repeats nothing); nobody's bounce carries
    the message's headers though the entry is gone from under it."""
    mx = ScriptedMX(rcpt={"maria@example.net": "450 4.2.1 busy",
                          "nobody@example.net": "550 5.1.1 no such user"})
    on_disk = []
    real_batch_done = Router._batch_done

    def batch_done(router, future, batch):
        for name in os.listdir(tmp_path / "queue" / "ready"):
            raw = (tmp_path / "queue" / "ready" / name).read_bytes()
            on_disk.append(json.loads(raw.split(b"\n", 1)[0])["to"])
        real_batch_done(router, future, batch)
    monkeypatch.setattr(Router, "_batch_done", batch_done)

    async def scenario(router):
        router.enqueue("mail.example.com", message(
            rcpts=["john@example.net", "maria@example.net", "nobody@example.net"]))
        await until(lambda: router.failed)
    try:
        run_router(store, tmp_path, scenario, retry_delays=(60,), mx=mx)
    finally:
        mx.close()
    assert on_disk == [["maria@example.net"]]
    assert [r[1] for r in mx.received] == [["john@example.net"]]
    [text] = inbox_texts(store)
    assert "nobody@example.net: 550 5.1.1" in text and "Subject: the report" in text


def test_a_connection_lost_mid_batch_defers_the_rest_untried(store, tmp_path, monkeypatch):
    counting = Counting(monkeypatch)
    mx = ScriptedMX(after_data=["hangup"])

    async def scenario(router):
        router._task.cancel()  # the three go in one batch
        for queue_id in ("M1", "M2", "M3"):
            router.enqueue("mail.example.com", message(queue_id))
        router._task = asyncio.get_running_loop().create_task(router._run())
        await asyncio.wait_for(router.settle(), 10)
        return counting.connects, counting.quits
    try:
        connects, quits = run_router(store, tmp_path, scenario, retry_delays=(0.01,), mx=mx)
    finally:
        mx.close()
    assert mx.seen == 4 and len(mx.received) == 3  # one cut short, then all three again
    assert connects == 2  # the broken connection was not kept for the retry ...
    assert quits == 1  # ... but closed at once with QUIT (the second is still open)


def test_a_refusal_of_one_message_does_not_hold_up_the_rest_of_its_batch(store, tmp_path):
    mx = ScriptedMX(after_data=["451 4.3.0 try later"])

    async def scenario(router):
        router._task.cancel()  # the two go in one batch
        for queue_id in ("M1", "M2"):
            router.enqueue("mail.example.com", message(queue_id))
        router._task = asyncio.get_running_loop().create_task(router._run())
        await until(lambda: tried(router))
        return ([(m.queue_id, m.attempts) for m in router.delivered],
                [(m.queue_id, m.attempts) for m in router.pending()])
    try:
        delivered, waiting = run_router(store, tmp_path, scenario, retry_delays=(60,), mx=mx)
    finally:
        mx.close()
    assert delivered == [("M2", 0)] and waiting == [("M1", 1)]


def test_a_next_hop_we_cannot_even_greet_is_retried_then_bounced(store, tmp_path,
                                                                 no_socket_left_open):
    mx = ScriptedMX()

    async def scenario(router):
        router.enqueue("mäil.example.com", message())  # smtplib cannot say this in EHLO
        await asyncio.wait_for(router.settle(), 10)
    try:
        run_router(store, tmp_path, scenario, retry_delays=(0.01,), mx=mx)
    finally:
        mx.close()
    [text] = inbox_texts(store)
    assert "Status: 4.4.7" in text and "UnicodeEncodeError" in text


def test_drain_waits_for_what_is_due(store, tmp_path):
    mx = ScriptedMX()

    async def scenario(router):
        router.enqueue("mail.example.com", message())
        await router.drain(10)  # called before the scheduler even started a batch
        return router.pending()
    try:
        assert run_router(store, tmp_path, scenario, mx=mx) == []
    finally:
        mx.close()
    assert len(mx.received) == 1


def test_a_bounce_after_a_partly_delivered_message_still_has_its_headers(store, tmp_path):
    mx = ScriptedMX(rcpt={"nobody@example.net": "550 5.1.1 no such user"})

    async def scenario(router):
        router.enqueue("mail.example.com", message(rcpts=["john@example.net", "nobody@example.net"]))
        await asyncio.wait_for(router.settle(), 10)
    try:
        run_router(store, tmp_path, scenario, mx=mx)
    finally:
        mx.close()
    [text] = inbox_texts(store)  # the entry left the queue with john's 250
    assert "nobody@example.net: 550 5.1.1" in text and "Subject: the report" in text


# ----------------------------------------------------------------------------- what the next hop hears

class _RecordingHandler(socketserver.StreamRequestHandler):
    """One connection to a :class:`RecordingMX`: each command is answered by ``do_<VERB>``;
    a method that returns False ends the connection."""

    def handle(self):
        self.commands: list[str] = []
        self.server.sessions.append(self.commands)
        self.reply("220 mx.test ESMTP recording")
        self.rcpts: list[str] = []
        while line := self.rfile.readline():
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
            encrypted = isinstance(self.request, ssl.SSLSocket)
            self.commands.append(verb + (" [tls]" if encrypted else ""))
            answer = getattr(self, f"do_{verb}", None)
            if answer is None:
                self.reply("502 5.5.1 not here")
            elif answer(command) is False:
                return

    def reply(self, *lines: str) -> None:
        text = "".join(f"{line[:3]}{'-' if i < len(lines) - 1 else ' '}{line[4:]}\r\n"
                       for i, line in enumerate(lines))
        self.wfile.write(text.encode())

    def do_EHLO(self, command):
        starttls = ["250 STARTTLS"] if self.server.tls and not isinstance(self.request, ssl.SSLSocket) else []
        self.reply("250 mx.test", "250 8BITMIME", "250 SMTPUTF8", *starttls)

    def do_STARTTLS(self, command):
        self.reply("220 2.0.0 go ahead")
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        self.setup()  # files over the TLS socket (the client said nothing more before the handshake)

    def do_MAIL(self, command):
        self.mail, self.rcpts = command, []
        self.reply("250 2.1.0 OK")

    def do_RCPT(self, command):
        self.rcpts.append(command.split(":", 1)[1].strip().strip("<>"))
        self.reply("250 2.1.5 OK")

    def do_DATA(self, command):
        self.reply("354 go ahead")
        lines = []
        for line in iter(self.rfile.readline, b""):  # (b"": the client hung up)
            if line == b".\r\n":
                break
            lines.append(line)
        content = b"".join(lines)
        if self.server.hold is not None:
            self.server.holding.set()
            self.server.hold.wait(5)  # (the test releases it; 5 s: a stuck test still ends)
            self.server.holding.clear()
        if self.server.data_reply is not None:  # refused: closes after a 421 (RFC 5321 3.8)
            self.reply(self.server.data_reply)
            return not self.server.data_reply.startswith("421")
        self.server.received.append((self.mail, self.rcpts, content))
        self.reply("250 2.0.0 OK")
        return not self.server.hang_up_after_each

    def do_RSET(self, command):
        self.reply(self.server.rset_reply)
        return self.server.rset_reply.startswith("250")  # (a 421 closes the connection)

    def do_QUIT(self, command):
        self.reply("221 2.0.0 bye")
        return False


class RecordingMX(socketserver.ThreadingTCPServer):
    """A next hop that writes down the commands of each connection (``sessions``: a list of
    lists, "MAIL [tls]" for a command sent over TLS), offers 8BITMIME, SMTPUTF8 and, with
    ``tls`` (a server context), STARTTLS. With ``hold`` (a threading.Event) it answers each
    message only once the test sets it (``holding`` is set meanwhile); ``rset_reply`` is what
    RSET gets; ``hang_up_after_each`` closes the connection after each message's 250;
    ``data_reply`` (if given) answers every message's final dot instead of 250."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None, hold: threading.Event | None = None,
                 rset_reply: str = "250 2.0.0 OK", hang_up_after_each: bool = False,
                 data_reply: str | None = None):
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.tls, self.hold, self.rset_reply = tls, hold, rset_reply
        self.data_reply = data_reply
        self.hang_up_after_each = hang_up_after_each
        self.sessions: list[list[str]] = []
        self.received: list[tuple[str, list[str], bytes]] = []  # (MAIL command, rcpts, content)
        self.holding = threading.Event()
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.shutdown()
        self.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def relay_in_turn(store, tmp_path, mx, *messages: QueuedMessage, **kwargs) -> Router:
    """Relay what an earlier run left in the queue, then ``messages`` one after another
    (each until it is handed on, given up or waits for a retry), to ``mx``."""
    async def scenario(router):
        await until(lambda: tried(router))
        for msg in messages:
            router.enqueue("mail.example.com", msg)
            await until(lambda: tried(router))
        return router
    return run_router(store, tmp_path, scenario, mx=mx, **kwargs)


def wait_until(condition, timeout: float = 5) -> bool:
    """``condition()`` became true within ``timeout`` seconds (for threads, after the loop)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    authority = LabCA(["mx.test"], tmp_path_factory.mktemp("ca"))
    yield authority
    authority.close()


def test_a_kept_connection_is_reset_before_its_next_message(store, tmp_path):
    with RecordingMX() as mx:
        relay_in_turn(store, tmp_path, mx, message("M1"), message("M2"))
    assert mx.sessions == [["EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]]


@pytest.mark.parametrize("dropped", [
    dict(hang_up_after_each=True),  # closed without a word
    dict(rset_reply="421 4.4.2 mx.test idle for too long, closing"),  # as aiosmtpd's timeout does
])
def test_a_kept_connection_the_next_hop_dropped_is_replaced_at_once(store, tmp_path, dropped,
                                                                     no_socket_left_open):
    with RecordingMX(**dropped) as mx:
        router = relay_in_turn(store, tmp_path, mx, message("M1"), message("M2"), retry_delays=(60,))
    assert [(m.queue_id, m.attempts) for m in router.delivered] == [("M1", 0), ("M2", 0)]
    assert [m[1] for m in mx.received] == [["john@example.net"]] * 2
    assert len(mx.sessions) == 2


def test_a_421_to_data_defers_the_rest_of_the_batch_with_that_reply(store, tmp_path):
    """The next hop closes after its 421 (smtplib too): the batch's other messages wait for a
    retry with the server's reason, not an error of a closed client."""
    async def scenario(router):
        router._task.cancel()  # the three go in one batch
        for queue_id in ("M1", "M2", "M3"):
            router.enqueue("mail.example.com", message(queue_id))
        router._task = asyncio.get_running_loop().create_task(router._run())
        await until(lambda: tried(router))
        return sorted((m.queue_id, m.attempts, m.errors) for m in router.pending())
    refusal = "421 4.3.2 mx.test shutting down"
    with RecordingMX(data_reply=refusal) as mx:
        left = run_router(store, tmp_path, scenario, mx=mx, retry_delays=(60,))
    assert left == [(q, 1, [f"john@example.net: {refusal}"]) for q in ("M1", "M2", "M3")]
    assert mx.sessions == [["EHLO", "MAIL", "RCPT", "DATA"]]


def test_the_relay_says_starttls_and_greets_again_over_tls(store, tmp_path, ca):
    with RecordingMX(tls=ca.server_context("mx.test")) as mx:
        relay_in_turn(store, tmp_path, mx, message(), tls=ca.client_context())
    assert mx.sessions == [["EHLO", "STARTTLS", "EHLO [tls]", "MAIL [tls]", "RCPT [tls]",
                            "DATA [tls]", "QUIT [tls]"]]
    assert len(mx.received) == 1


def test_without_a_tls_context_the_relay_sends_in_the_clear(store, tmp_path, ca):
    """A lab without TLS has no CA to check a next hop's certificate against."""
    with RecordingMX(tls=ca.server_context("mx.test")) as mx:
        relay_in_turn(store, tmp_path, mx, message())
    assert mx.sessions == [["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]]


@pytest.mark.parametrize("rcpt, text, options", [
    ("john@example.net", "plain", []),
    ("γιάννης@example.net", "plain", ["SMTPUTF8"]),
    ("john@example.net", "καλημέρα", ["BODY=8BITMIME"]),
])
def test_mail_from_declares_non_ascii_addresses_and_8bit_text(store, tmp_path, rcpt, text, options):
    msg = message(rcpts=[rcpt])
    msg.content = HEADERS + f"\r\n{text}\r\n".encode()
    with RecordingMX() as mx:
        relay_in_turn(store, tmp_path, mx, msg)
    [(mail, rcpts, content)] = mx.received
    assert mail.split()[2:] == options
    assert (rcpts, content) == ([rcpt], msg.content)


# ----------------------------------------------------------------------------- stopping

def test_close_lets_the_message_being_sent_finish_and_keeps_the_rest_untried(store, tmp_path):
    hold = threading.Event()

    async def scenario(router):
        router._task.cancel()  # the three go in one batch
        for queue_id in ("M1", "M2", "M3"):
            router.enqueue("mail.example.com", message(queue_id))
        router._task = asyncio.get_running_loop().create_task(router._run())
        await until(mx.holding.is_set)  # M1's DATA is at the next hop, unanswered
        closing = asyncio.get_running_loop().create_task(router.close(timeout=10))
        await asyncio.sleep(0)  # close() has begun
        hold.set()
        await closing
        return ([m.queue_id for m in router.delivered],
                sorted((m.queue_id, m.attempts) for m in router.pending()))
    with RecordingMX(hold=hold) as mx:
        delivered, left = run_router(store, tmp_path, scenario, mx=mx)
    assert delivered == ["M1"] and left == [("M2", 0), ("M3", 0)]
    assert sorted(n.split(".")[0] for n in os.listdir(tmp_path / "queue" / "ready")) == ["M2", "M3"]
    assert mx.sessions == [["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]]


def test_close_stops_waiting_for_a_stuck_next_hop_whose_connection_is_quit_later(store, tmp_path):
    hold = threading.Event()

    async def scenario(router):
        router.enqueue("mail.example.com", message())
        await until(mx.holding.is_set)
        await router.close(timeout=0.1)
        return mx.holding.is_set(), [m.queue_id for m in router.pending()]
    with RecordingMX(hold=hold) as mx:
        holding, left = run_router(store, tmp_path, scenario, mx=mx)
        hold.set()
        assert wait_until(lambda: mx.sessions[0][-1:] == ["QUIT"])
    assert holding and left == ["Q1"]  # close() returned while the next hop still held it
    assert len(mx.received) == 1  # (it got its 250 afterwards: its entry is on disk anyway)


def test_a_router_that_never_started_closes_quietly(tmp_path):
    async def main():
        router = Router(asyncio.get_running_loop(), tmp_path / "queue")
        await router.close()  # the lab stops when a server of it could not start
    asyncio.run(main())


def test_drain_gives_up_at_its_deadline_while_a_message_is_still_being_sent(
        store, tmp_path, monkeypatch):
    sleeps = []
    real_wait = Router._wait_for_change

    async def wait_for_change(router, timeout=None):
        sleeps.append(timeout)
        await real_wait(router, timeout)
    monkeypatch.setattr(Router, "_wait_for_change", wait_for_change)
    hold = threading.Event()

    async def scenario(router):
        router.enqueue("mail.example.com", message())
        await until(mx.holding.is_set)
        sleeps.clear()
        await asyncio.wait_for(router.drain(0.2), 10)
        during = list(sleeps), len(router.pending())
        hold.set()
        await asyncio.wait_for(router.settle(), 10)
        return during
    with RecordingMX(hold=hold) as mx:
        drain_sleeps, left = run_router(store, tmp_path, scenario, mx=mx)
    assert left == 1  # drain returned with the message still at the next hop
    timed = [t for t in drain_sleeps if t is not None]
    assert 1 <= len(timed) < 10  # it slept (no busy loop) ...
    assert all(0 <= t <= 0.2 for t in timed)  # ... and not past its deadline


# ----------------------------------------------------------------------------- idle connections

def test_an_idle_connection_is_closed_while_another_next_hop_is_slow(store, tmp_path, monkeypatch):
    """A learner's next hop may serve one connection at a time: the relay's idle connection
    to it must go after IDLE_CLOSE even while a batch to another domain takes long."""
    monkeypatch.setattr(relay, "IDLE_CLOSE", 0.05)
    hold = threading.Event()

    async def scenario(router):
        router.mx["example.org"] = ("127.0.0.1", slow.port)
        router.enqueue("mail.example.com", message("FAST"))
        await until(lambda: router.delivered)
        router.enqueue("mail.example.com", message("SLOW", rcpts=["x@example.org"]))
        await until(slow.holding.is_set)
        await until(lambda: fast.sessions[0][-1:] == ["QUIT"])
        still_at_work = slow.holding.is_set()
        hold.set()
        return still_at_work
    with RecordingMX() as fast, RecordingMX(hold=hold) as slow:
        assert run_router(store, tmp_path, scenario, mx=fast)  # the slow one was still at work
    assert fast.sessions == [["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]]


def test_an_idle_connection_is_closed_though_the_next_retry_is_far_off(store, tmp_path, monkeypatch):
    monkeypatch.setattr(relay, "IDLE_CLOSE", 0.05)

    async def scenario(router):
        router.mx["example.org"] = ("127.0.0.1", dead_port())
        router.enqueue("mail.example.com", message("LATER", rcpts=["x@example.org"]))
        router.enqueue("mail.example.com", message("NOW"))
        await until(lambda: tried(router) and router.delivered)
        await until(lambda: mx.sessions[0][-1:] == ["QUIT"])
        return [(m.queue_id, m.attempts) for m in router.pending()]
    with RecordingMX() as mx:
        assert run_router(store, tmp_path, scenario, retry_delays=(60,), mx=mx) == [("LATER", 1)]


# ----------------------------------------------------------------------------- a restart

AN_HOUR_AGO = time.time() - 3600


def leave_in_queue(tmp_path, msg: QueuedMessage, written: float = AN_HOUR_AGO) -> Path:
    """An entry as a lab that stopped ``written`` (a time) ago left it."""
    RelayQueue(tmp_path / "queue").add(msg)
    os.utime(msg.path, (written, written))
    return msg.path


@pytest.fixture
def lab_store(store):
    """The store with john and maria of example.net, as in a lab where that domain is ours."""
    for login in ("john", "maria"):
        store.add_account(login, "pw", "example.net")
    return store


def received_line(queue_id: str) -> bytes:
    return (f"Received: from mail.example.com ([127.0.0.1])\r\n\tby mail.example.net (maillab) "
            f"with ESMTP id {queue_id}\r\n\tfor <john@example.net>; Mon, 1 Jan 2024 10:00:00 +0000\r\n").encode()


@pytest.mark.parametrize("inbox", ["as the lab left it", "read (in cur/), new/ gone",
                                   "read (in cur/), a stray folder in new/"])
def test_a_restart_sends_a_left_over_entry_only_to_the_recipients_it_had_not_reached(
        lab_store, tmp_path, caplog, inbox):
    """The lab stopped an hour ago between john's 250 and the end of the entry: john has the
    message (its queue id in his Received: line), maria does not."""
    leave_in_queue(tmp_path, message(rcpts=["john@example.net", "maria@example.net"]))
    folder = lab_store.account("john").folder("INBOX")
    folder.deliver(received_line("Q1") + CONTENT, internaldate=AN_HOUR_AGO + 1)
    if inbox != "as the lab left it":
        [name] = os.listdir(folder.path / "new")
        os.rename(folder.path / "new" / name, folder.path / "cur" / (name + ":2,S"))
        os.rmdir(folder.path / "new")
        if "stray" in inbox:
            (folder.path / "new" / "stray").mkdir(parents=True)
    caplog.set_level(logging.INFO, "maillab.relay")
    with RecordingMX() as mx:
        relay_in_turn(lab_store, tmp_path, mx)
    assert [(rcpts, content) for _mail, rcpts, content in mx.received] == [(["maria@example.net"], CONTENT)]
    assert os.listdir(tmp_path / "queue" / "ready") == []
    assert "had reached john@example.net" in caplog.text
    assert "1 queued message(s) from an earlier run will be relayed" in caplog.text


def test_only_the_header_sections_of_mail_that_came_after_the_entry_count(lab_store, tmp_path):
    """john's INBOX names the queue id only where it proves nothing: in a body (written by the
    lab, or with CRLF line ends by another mail program), or in the trace of a message older
    than the entry (a queue id used again)."""
    leave_in_queue(tmp_path, message("QX7"))
    folder = lab_store.account("john").folder("INBOX")
    folder.deliver(HEADERS + b"\r\nthe log said: relayed with id QX7\r\n")
    (folder.path / "new" / "by-another-program").write_bytes(
        HEADERS + b"\r\nqueued with id QX7\r\n")
    folder.deliver(received_line("QX7") + CONTENT, internaldate=AN_HOUR_AGO - 86400)
    with RecordingMX() as mx:
        relay_in_turn(lab_store, tmp_path, mx)
    assert [rcpts for _mail, rcpts, _content in mx.received] == [["john@example.net"]]


@pytest.mark.parametrize("who", ["no store", "a store without the recipient"])
def test_a_restart_relays_what_no_inbox_here_could_have_received(store, tmp_path, caplog, who):
    leave_in_queue(tmp_path, message())
    with RecordingMX() as mx:
        relay_in_turn(None if who == "no store" else store, tmp_path, mx)
    assert [rcpts for _mail, rcpts, _content in mx.received] == [["john@example.net"]]


def test_an_entry_that_vanished_fails_alone_and_its_batch_mates_are_delivered(lab_store, tmp_path,
                                                                              monkeypatch):
    """Its file went while a restart read the queue: the restart goes on, and the next hop's
    connection is fine. Before: KEPT, after GONE in each batch, was deferred with GONE's file
    error as if the connection had broken, every time, and bounced with it."""
    leave_in_queue(tmp_path, message("GONE"))
    leave_in_queue(tmp_path, message("KEPT"))
    real_load = RelayQueue.load

    def load(queue):
        entries = real_load(queue)
        os.unlink(entries[0].path)  # (someone cleaning the queue folder by hand just then)
        return entries
    monkeypatch.setattr(RelayQueue, "load", load)

    async def scenario(router):
        await asyncio.wait_for(router.settle(), 10)
        return router
    with RecordingMX() as mx:
        router = run_router(lab_store, tmp_path, scenario, mx=mx, retry_delays=(0.01,))
    assert [m.queue_id for m in router.delivered] == ["KEPT"]
    assert [m.queue_id for m in router.failed] == ["GONE"]


def test_when_the_reached_recipients_cannot_be_struck_off_the_entry_all_get_it_again(
        lab_store, tmp_path, monkeypatch, caplog):
    """A duplicate rather than a loss: the disk is full, the entry keeps john and maria."""
    leave_in_queue(tmp_path, message(rcpts=["john@example.net", "maria@example.net"]))
    lab_store.account("john").folder("INBOX").deliver(received_line("Q1") + CONTENT)
    real_add = RelayQueue.add
    full = []

    def add(queue, msg):
        if not full:
            full.append(msg.queue_id)
            raise OSError(28, "No space left on device")
        return real_add(queue, msg)
    monkeypatch.setattr(RelayQueue, "add", add)
    with RecordingMX() as mx:
        relay_in_turn(lab_store, tmp_path, mx)
    assert full == ["Q1"] and "could not update queue entry Q1" in caplog.text
    assert [rcpts for _mail, rcpts, _content in mx.received] == [["john@example.net", "maria@example.net"]]


# ----------------------------------------------------------------------------- answers and failures

def test_queued_entries_keep_their_text_on_disk_only(store, tmp_path, caplog):
    """However many messages wait for a next hop that is down, their text is not in memory."""
    async def scenario(router):
        router.mx["example.net"] = ("127.0.0.1", dead_port())
        router.enqueue("mail.example.com", message())
        await until(lambda: tried(router))
        [entry] = router.pending()
        return entry.content, router.queue.content(entry)
    in_memory, on_disk = run_router(store, tmp_path, scenario, retry_delays=(60,))
    assert (in_memory, on_disk) == (b"", CONTENT)
    assert "earlier run" not in caplog.text  # nothing was left over


def test_mail_for_a_domain_without_a_server_bounces_without_waiting_for_retries(store, tmp_path):
    async def scenario(router):
        router.enqueue("mail.example.com", message())
        await until(lambda: tried(router))
        return router
    router = run_router(store, tmp_path, scenario, retry_delays=(60,))
    assert router.pending() == [] and [m.attempts for m in router.failed] == [0]


@pytest.mark.parametrize("reply, temporary", [("400 4.0.0 later", True), ("499 4.0.0 later", True),
                                              ("500 5.0.0 no", False)])
def test_the_reply_after_data_decides_between_retry_and_bounce(store, tmp_path, reply, temporary):
    mx = ScriptedMX(after_data=[reply])

    async def scenario(router):
        router.enqueue("mail.example.com", message())
        await until(lambda: tried(router))
        return len(router.pending()), len(router.failed)
    try:
        waiting, failed = run_router(store, tmp_path, scenario, retry_delays=(60,), mx=mx)
    finally:
        mx.close()
    assert (waiting, failed) == ((1, 0) if temporary else (0, 1))


@pytest.mark.parametrize("spoil", ["the entry's file is gone", "an address smtplib refuses"])
def test_a_message_that_cannot_be_sent_counts_an_attempt_and_bounces(store, tmp_path, spoil):
    """Not a crash of the batch (which is tried again at once, without counting, forever)."""
    async def scenario(router):
        router._task.cancel()
        msg = message(rcpts=['"jo\nhn"@example.net'] if "address" in spoil else ["john@example.net"])
        router.enqueue("mail.example.com", msg)
        if "gone" in spoil:
            os.unlink(router.pending()[0].path)
        router._task = asyncio.get_running_loop().create_task(router._run())
        await until(lambda: router.failed)
        return router.failed[0].errors[-1]
    with RecordingMX() as mx:
        error = run_router(store, tmp_path, scenario, retry_delays=(), mx=mx)
    assert ("FileNotFoundError" if "gone" in spoil else "ValueError") in error
    [text] = inbox_texts(store)
    assert "Status: 4.4.7" in text


def test_a_vanished_entry_for_a_domain_without_a_server_still_bounces(store, tmp_path):
    async def scenario(router):
        router._task.cancel()
        router.enqueue("mail.example.com", message())
        os.unlink(router.pending()[0].path)
        router._task = asyncio.get_running_loop().create_task(router._run())
        await asyncio.wait_for(router.settle(), 10)
    run_router(store, tmp_path, scenario)
    [text] = inbox_texts(store)
    assert "Status: 5.4.4" in text and "Subject: the report" not in text


def test_a_message_without_headers_partly_refused_still_bounces(store, tmp_path):
    mx = ScriptedMX(rcpt={"nobody@example.net": "550 5.1.1 no such user"})
    msg = message(rcpts=["john@example.net", "nobody@example.net"])
    msg.content = b"\r\njust a body\r\n"  # (learners send such things)

    async def scenario(router):
        router.enqueue("mail.example.com", msg)
        await asyncio.wait_for(router.settle(), 10)
    try:
        run_router(store, tmp_path, scenario, mx=mx)
    finally:
        mx.close()
    [text] = inbox_texts(store)
    assert "nobody@example.net: 550 5.1.1" in text and "just a body" not in text


def test_a_retry_that_cannot_be_noted_on_disk_is_still_made(store, tmp_path, monkeypatch, caplog):
    def reschedule(queue, msg):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(RelayQueue, "reschedule", reschedule)
    mx = ScriptedMX(after_data=["451 4.3.0 try later"])
    try:
        router = relay_one(store, tmp_path, mx, retry_delays=(0.01,))
    finally:
        mx.close()
    assert [m.attempts for m in router.delivered] == [1] and len(mx.received) == 1
    assert "could not note the retry of Q1" in caplog.text


def test_queued_messages_compare_by_content_not_by_where_they_are(tmp_path):
    a, b = message(), message()
    RelayQueue(tmp_path / "queue").add(a)  # a has a path now, b not
    assert a == b and a != message(rcpts=["maria@example.net"]) and a != message("Q2")
    assert (a == "Q1") is False and a.__eq__("Q1") is NotImplemented


def test_a_queue_waiting_for_a_late_retry_sleeps_instead_of_polling(store, tmp_path):
    """With only a retry an hour away and nothing due, the relay's loop waits for that hour
    (or a change), it does not wake up again and again meanwhile."""
    async def scenario(router):
        router.mx["example.net"] = ("127.0.0.1", dead_port())
        router.enqueue("mail.example.com", message())
        for _ in range(100):  # the first attempt fails: the entry now waits for its retry
            await asyncio.sleep(0.02)
            if router.pending()[0].attempts == 1 and not router._batches:
                break
        await asyncio.sleep(0.1)  # its last turn after the attempt
        waits = []
        real = router._wait_for_change

        async def counted(timeout=None):
            waits.append(timeout)
            await real(timeout)
        router._wait_for_change = counted
        await asyncio.sleep(0.5)
        assert not router._task.done()  # (still there to send the retry)
        return waits
    waits = run_router(store, tmp_path, scenario, retry_delays=(3600,))
    assert len(waits) <= 2 and all(w is None or w > 60 for w in waits), waits
