"""The relay's pieces rule by rule: the bounce's text and status codes, the queue's files after
a restart (damaged entries, part numbers, renames), and the router's retries, connection reuse
and idle close, without a whole lab. Each test was shown to fail on a planted bug
(bench/mutation.py) that the rest of the suite let through."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import smtplib
import time
from collections import deque

import pytest

from maillab import relay
from maillab.relay import (QueuedMessage, RelayQueue, Router, _connection_lost, _header_section,
                           _Outcome, delivery_status_notification)
from maillab.store import Store
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
    assert len(_header_section(b"X: " + b"y" * 20_000 + b"\r\n\r\nbody")) == 16_000


def test_a_broken_connection_is_told_from_a_reply():
    def outcome(error):
        return _Outcome(message(), temporary={"john@example.net": error})
    assert not _connection_lost(outcome("421 4.4.2 closing"))
    assert _connection_lost(outcome("SMTPServerDisconnected: Connection unexpectedly closed"))


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


def run_router(store, tmp_path, scenario, retry_delays=(0.01, 0.01), mx=None):
    async def main():
        router = Router(asyncio.get_running_loop(), tmp_path / "queue", retry_delays, store=store)
        if mx is not None:
            router.mx["example.net"] = ("127.0.0.1", mx.port)
        await router.start()
        try:
            return await scenario(router)
        finally:
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


def test_a_next_hop_we_cannot_even_greet_is_retried_then_bounced(store, tmp_path):
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
