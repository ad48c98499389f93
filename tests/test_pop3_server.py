"""The POP3 server over real sockets, driven by Python's poplib and by curl."""

from __future__ import annotations

import asyncio
import contextlib
import poplib
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest

from conftest import require_tool
from maillab.imap.testing import FixedDelayGuard, SlowLogins
from maillab.net import ServerContext, bind_listener
from maillab.pop3.server import start_pop3
from maillab.store import Store
from maillab.transcript import Recorder, Transcript

PASSWORD = "alice-pw"
BOB_PASSWORD = "bob-pw"

MESSAGES = [
    b"From: bob@example.com\nSubject: one\n\nHello Alice.\n.\n..two dots\nBye.\n",
    b"From: carol@example.com\nSubject: two\n\nsecond\n",
    b"From: dave@example.com\nSubject: three\n\nthird\n",
]


@dataclass
class Lab:
    store: Store
    ctx: ServerContext
    loop: asyncio.AbstractEventLoop
    port: int

    def inbox(self, login: str = "alice"):
        return self.store.account(login).folder("INBOX")

    def pop(self) -> poplib.POP3:
        return poplib.POP3("127.0.0.1", self.port, timeout=10)

    def login(self, user: str = "alice", password: str = PASSWORD) -> poplib.POP3:
        client = self.pop()
        client.user(user)
        client.pass_(password)
        return client

    def transcript(self) -> Transcript:
        return Transcript(self.ctx.recorder.lines()).filter(service="pop3")

    def on_loop(self, fn):
        """Run ``fn()`` in the server's loop thread and return its result."""
        async def call():
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def start_lab(options: dict | None = None):
    store = Store(hash_n=2**10)
    alice = store.add_account("alice", PASSWORD, "example.com", apop=True)
    store.add_account("bob", BOB_PASSWORD, "example.com", apop=False)
    store.add_account("zoe", "zoe-pw", "other.example", apop=True)
    for data in MESSAGES:
        alice.folder("INBOX").deliver(data)
    ctx = ServerContext(store, Recorder(), "mail.example.com", "example.com", options or {})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pop3-test-loop", daemon=True)
    thread.start()
    sock = bind_listener(None)
    port = sock.getsockname()[1]
    server = asyncio.run_coroutine_threadsafe(start_pop3(ctx, sock), loop).result(5)
    lab = Lab(store, ctx, loop, port)

    def stop():
        async def shutdown():
            server.close()
            for transport in list(ctx.connections):
                transport.abort()
            await server.wait_closed()
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        store.close()
    return lab, stop


@pytest.fixture
def lab():
    lab, stop = start_lab()
    yield lab
    stop()


def maildrop_free(lab: Lab, login: str = "alice") -> bool:
    lock = lab.store.account(login).maildrop_lock
    if lock.acquire(blocking=False):
        lock.release()
        return True
    return False


# ----------------------------------------------------------------------------- poplib

def test_greeting_and_capa(lab):
    client = lab.pop()
    welcome = client.getwelcome().decode()
    assert welcome.startswith("+OK mail.example.com POP3 server ready <")
    assert welcome.endswith("@mail.example.com>")
    caps = client.capa()
    for cap in ["TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE",
                "IMPLEMENTATION"]:
        assert cap in caps
    client.quit()


def test_every_transaction_command(lab):
    client = lab.login()
    sizes = [len(m.replace(b"\n", b"\r\n")) for m in MESSAGES]
    assert client.stat() == (3, sum(sizes))
    resp, listing, _octets = client.list()
    assert listing == [f"{n} {s}".encode() for n, s in enumerate(sizes, 1)]
    assert client.list(2) == f"+OK 2 {sizes[1]}".encode()

    resp, lines, octets = client.retr(1)
    assert resp.startswith(b"+OK")
    # poplib undoes the byte-stuffing: the lines are the message as stored
    assert lines == MESSAGES[0].rstrip(b"\n").split(b"\n")
    assert b"." in lines and b"..two dots" in lines

    resp, lines, _octets = client.top(1, 0)
    assert lines == [b"From: bob@example.com", b"Subject: one", b""]
    resp, lines, _octets = client.top(1, 2)
    assert lines[-2:] == [b"Hello Alice.", b"."]

    resp, uids, _octets = client.uidl()
    assert len(uids) == 3
    assert client.uidl(3) == b"+OK " + uids[2]
    assert client.noop().startswith(b"+OK")

    client.dele(2)
    assert client.stat() == (2, sizes[0] + sizes[2])
    with pytest.raises(poplib.error_proto, match="message 2 is deleted"):
        client.retr(2)
    assert client.rset().startswith(b"+OK")
    assert client.stat() == (3, sum(sizes))
    assert client.quit().startswith(b"+OK")
    assert len(lab.inbox()) == 3


def test_retr_marks_seen(lab):
    client = lab.login()
    client.retr(2)
    client.quit()
    infos = lab.inbox().messages()
    assert ["\\Seen" in i.flags for i in infos] == [False, True, False]


def test_apop(lab):
    client = lab.pop()
    assert client.apop("alice", PASSWORD).startswith(b"+OK alice's maildrop has 3")
    client.quit()


def test_apop_wrong_secret_and_apop_not_enabled(lab):
    client = lab.pop()
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] invalid user name or digest"):
        client.apop("alice", "wrong")
    with pytest.raises(poplib.error_proto, match="APOP is not enabled for this account"):
        client.apop("bob", BOB_PASSWORD)
    client.user("bob")
    assert client.pass_(BOB_PASSWORD).startswith(b"+OK bob's maildrop")
    client.quit()


def test_login_by_address(lab):
    client = lab.login("alice@example.com")
    assert client.stat()[0] == 3
    client.quit()


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("nobody", "x"),
                                           ("zoe", "zoe-pw")])
def test_failed_login(lab, user, password):
    client = lab.pop()
    client.user(user)  # USER never tells whether the user exists
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\] invalid user name or password"):
        client.pass_(password)
    client.user("alice")  # the session survives
    assert client.pass_(PASSWORD).startswith(b"+OK")
    client.quit()


def test_second_concurrent_login_is_in_use(lab):
    first = lab.login()
    second = lab.pop()
    second.user("alice")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_(PASSWORD)
    first.quit()
    assert wait_until(lambda: maildrop_free(lab))
    second.user("alice")
    assert second.pass_(PASSWORD).startswith(b"+OK")
    second.quit()


def test_dele_and_quit_deletes(lab):
    keep = [m.uid for m in lab.inbox().messages()][1:]
    client = lab.login()
    client.dele(1)
    assert len(lab.inbox()) == 3  # not yet
    assert client.quit() == b"+OK mail.example.com POP3 server signing off (1 messages deleted)"
    assert [m.uid for m in lab.inbox().messages()] == keep


def test_dele_then_dropped_connection_deletes_nothing(lab):
    client = lab.login()
    client.dele(1)
    client.dele(2)
    client.close()  # no QUIT: the connection just goes away
    assert wait_until(lambda: maildrop_free(lab))
    assert len(lab.inbox()) == 3
    client = lab.login()
    assert client.stat()[0] == 3
    client.quit()


def test_mail_arriving_during_a_session_waits_for_the_next(lab):
    client = lab.login()
    lab.on_loop(lambda: lab.inbox().deliver(b"Subject: new\n\nnew\n"))
    assert client.stat()[0] == 3
    client.quit()
    client = lab.login()
    assert client.stat()[0] == 4
    client.quit()


def test_message_expunged_by_another_session(lab):
    client = lab.login()
    first = lab.inbox().messages()[0].uid
    lab.on_loop(lambda: lab.inbox().expunge([first]))
    with pytest.raises(poplib.error_proto, match="removed by another session"):
        client.retr(1)
    assert client.retr(2)[0].startswith(b"+OK")
    client.quit()


def test_transcript_records_both_sides(lab):
    client = lab.login()
    transports = lab.on_loop(lambda: list(lab.ctx.connections))
    assert [t.get_protocol().conn.user for t in transports] == ["alice"]
    client.stat()
    client.quit()
    assert wait_until(lambda: not lab.ctx.connections)
    lines = lab.transcript()
    assert lines.client_lines() == ["USER alice", f"PASS {PASSWORD}", "STAT", "QUIT"]
    server = lines.server_lines()
    assert server[0].startswith("+OK mail.example.com POP3 server ready")
    assert server[-1].startswith("+OK mail.example.com POP3 server signing off")
    assert lines.lines[0].service == "pop3:example.com"
    assert lines.lines[-1].who == "*" and "QUIT" in lines.lines[-1].text


def test_large_message_retr(lab):
    body = b"".join(b"line %07d of a big message .\n" % i for i in range(200_000))  # ~6 MB
    big = b"Subject: big\n\n" + body + b".\n"
    lab.on_loop(lambda: lab.inbox().deliver(big))
    client = lab.login()
    start = time.perf_counter()
    resp, lines, _octets = client.retr(4)
    elapsed = time.perf_counter() - start
    assert lines == big.rstrip(b"\n").split(b"\n")
    assert elapsed < 10, f"RETR of {len(big)} bytes took {elapsed:.1f} s"
    client.quit()


def test_retr_of_many_messages_in_one_session(lab):
    lab.on_loop(lambda: [lab.inbox().deliver(b"Subject: %d\n\nbody %d\n" % (i, i))
                         for i in range(200)])
    client = lab.login()
    for n in range(1, 204):
        resp, lines, octets = client.retr(n)
        expected = MESSAGES[n - 1] if n <= 3 else b"Subject: %d\n\nbody %d\n" % (n - 4, n - 4)
        assert resp == b"+OK %d octets" % len(expected.replace(b"\n", b"\r\n"))
        assert lines == expected.rstrip(b"\n").split(b"\n"), n
    assert client.quit().endswith(b"(0 messages deleted)")
    assert all("\\Seen" in info.flags for info in lab.inbox().messages())


# ----------------------------------------------------------------------------- raw socket

def test_many_pipelined_big_retrs(lab):
    big = b"Subject: big\n\n" + (b"x" * 62 + b"\n") * 16_000  # ~1 MB with CRLF
    lab.on_loop(lambda: lab.inbox().deliver(big))
    with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as sock:
        sock.sendall(f"USER alice\r\nPASS {PASSWORD}\r\n".encode() + b"RETR 4\r\n" * 12
                     + b"QUIT\r\n")
        got = bytearray()
        while chunk := sock.recv(1 << 20):
            got += chunk
    assert got.count(b"\r\n.\r\n") == 12
    assert got.endswith(b"signing off (0 messages deleted)\r\n")


def raw_connect(lab) -> tuple[socket.socket, object]:
    sock = socket.create_connection(("127.0.0.1", lab.port), timeout=10)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"+OK")
    return sock, reader


def test_pipelined_commands_over_the_wire(lab):
    sock, reader = raw_connect(lab)
    with sock, reader:
        sock.sendall(f"USER alice\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST 1\r\nQUIT\r\n".encode())
        replies = [reader.readline() for _line in range(5)]
        assert all(r.startswith(b"+OK") for r in replies)
        assert reader.readline() == b""  # the server closed after QUIT


def test_garbage_and_overlong_line_over_the_wire(lab):
    sock, reader = raw_connect(lab)
    with sock, reader:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\r\n")
        assert reader.readline().startswith(b"-ERR unknown command")
        sock.sendall(b"X" * 100_000)
        sock.sendall(b"\r\n")
        assert reader.readline().startswith(b"-ERR line too long")
        sock.sendall(b"\r\n")
        assert reader.readline().startswith(b"-ERR empty command")
        sock.sendall(b"noop\r\n")
        assert reader.readline().startswith(b"-ERR command not valid in this state (log in")
        sock.sendall(b"quit\r\n")
        assert reader.readline().startswith(b"+OK")


def test_idle_timeout_closes_without_deleting():
    """Only complete commands count as activity: a line trickled byte by byte does not keep a
    session (a byte every 20 s once did, for ever)."""
    lab, stop = start_lab({"pop3_timeout": 0.6})
    try:
        sock, reader = raw_connect(lab)
        with sock, reader:
            sock.sendall(f"USER alice\r\nPASS {PASSWORD}\r\nDELE 1\r\n".encode())
            for _line in range(3):
                assert reader.readline().startswith(b"+OK")

            def trickle():
                try:
                    for byte in b"NOOP and more" * 20:
                        sock.sendall(bytes([byte]))
                        time.sleep(0.05)
                except OSError:
                    pass
            t0 = time.monotonic()
            trickler = threading.Thread(target=trickle)
            trickler.start()
            assert reader.readline() == b""  # closed by the server, with no reply (RFC 1939)
            assert time.monotonic() - t0 < 5
        trickler.join()
        assert wait_until(lambda: maildrop_free(lab))
        assert len(lab.inbox()) == 3
        assert "idle: no complete command for 0.6 s" in lab.transcript().lines[-1].text
    finally:
        stop()


# ----------------------------------------------------------------------------- curl

def curl(lab, *args: str, user: str = "alice", password: str = PASSWORD, path: str = "/"):
    exe = require_tool("curl")
    return subprocess.run([exe, "-sS", "-m", "10", f"pop3://127.0.0.1:{lab.port}{path}",
                           "-u", f"{user}:{password}", *args],
                          capture_output=True, timeout=30)


def test_curl_list_retrieve_uidl_top(lab):
    sizes = [len(m.replace(b"\n", b"\r\n")) for m in MESSAGES]
    listing = curl(lab)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == b"".join(f"{n} {s}\r\n".encode() for n, s in enumerate(sizes, 1))

    message = curl(lab, path="/1")
    assert message.returncode == 0, message.stderr
    assert message.stdout == MESSAGES[0].replace(b"\n", b"\r\n")  # curl undoes the stuffing

    uidl = curl(lab, "-X", "UIDL")
    assert uidl.returncode == 0 and len(uidl.stdout.splitlines()) == 3

    top = curl(lab, "-X", "TOP 1 0")
    assert top.returncode == 0
    assert top.stdout == b"From: bob@example.com\r\nSubject: one\r\n\r\n"
    assert len(lab.inbox()) == 3  # nothing of that deleted anything


def test_curl_dele(lab):
    result = curl(lab, "-I", "-X", "DELE 1")
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: len(lab.inbox()) == 2)  # curl sends QUIT: UPDATE removes it


def test_curl_wrong_password(lab):
    result = curl(lab, password="wrong")
    assert result.returncode == 67  # CURLE_LOGIN_DENIED
    assert wait_until(lambda: maildrop_free(lab))


def test_curl_account_without_apop_needs_a_server_without_apop():
    # curl always answers a greeting's APOP timestamp with APOP and does not fall back to
    # USER/PASS, so an account without an APOP secret needs pop3_apop=False.
    lab, stop = start_lab({"pop3_apop": False})
    try:
        result = curl(lab, user="bob", password=BOB_PASSWORD)
        assert result.returncode == 0, result.stderr
        # bob's maildrop is empty; for "+OK ...\r\n.\r\n" curl prints a lone CRLF
        assert result.stdout.strip() == b""
        listing = curl(lab)
        assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 3
    finally:
        stop()


# ----------------------------------------------------------------------------- issue 10 and 16

def test_pipelined_wrong_passwords_are_each_answered_late(lab):
    """A packet of wrong PASS commands and then the right one: each login waits its own turn
    (issue 16: a POP3 loop that went on after a refusal answered them all at once)."""
    lab.ctx.guard = guard = FixedDelayGuard(lab.ctx.guard)
    sock, reader = raw_connect(lab)
    with sock, reader:
        packet = b"".join(b"USER alice\r\nPASS wrong%d\r\n" % i for i in range(6))
        t0 = time.monotonic()
        sock.sendall(packet + f"USER alice\r\nPASS {PASSWORD}\r\nSTAT\r\n".encode())
        answers = [reader.readline() for _ in range(15)]
        elapsed = time.monotonic() - t0
        assert [a.startswith(b"-ERR [AUTH]") for a in answers[1:12:2]] == [True] * 6
        assert answers[13].startswith(b"+OK alice's maildrop") and answers[14].startswith(b"+OK 3 ")
    assert guard.asked == 7  # each login waited its turn, the right one too
    assert elapsed >= 7 * guard.pause, f"{elapsed:.2f} s for 7 logins"


def test_a_login_does_not_stop_other_sessions(lab):
    """Passwords are checked in a worker thread: while one is checked, others are served."""
    with SlowLogins(lab.ctx) as slow:
        sock, reader = raw_connect(lab)
        sock.sendall(f"USER alice\r\nPASS {PASSWORD}\r\n".encode())
        assert reader.readline().startswith(b"+OK")
        assert slow.checking.wait(5)
        other = socket.create_connection(("127.0.0.1", lab.port), timeout=3)
        other_reader = other.makefile("rb")
        assert other_reader.readline().startswith(b"+OK")  # would time out if the loop were stuck
        other.sendall(b"CAPA\r\n")
        assert other_reader.readline().startswith(b"+OK capability list follows")
        slow.release.set()
        assert reader.readline().startswith(b"+OK alice's maildrop")
        for s in (sock, reader, other, other_reader):
            s.close()


def test_a_big_retr_is_written_as_the_client_reads(lab):
    """A message goes out as fast as the client reads it: it never piles up in memory."""
    big = b"Subject: big\n\n" + (b"z" * 98 + b"\n") * 320_000  # 32 MB
    lab.on_loop(lambda: lab.inbox().deliver(big))
    sock, reader = raw_connect(lab)
    with sock, reader:
        sock.sendall(f"USER alice\r\nPASS {PASSWORD}\r\nRETR 4\r\nQUIT\r\n".encode())
        time.sleep(0.5)  # the client reads nothing meanwhile
        buffered = lab.on_loop(lambda: sum(t.get_write_buffer_size() for t in lab.ctx.connections))
        assert buffered < 4 * 1024 * 1024, f"{buffered} bytes waiting in the server"
        got = bytearray()
        while chunk := sock.recv(1 << 20):
            got += chunk
    assert got.count(b"\r\n") == 3 + 2 + 320_000 + 1 + 1  # USER, PASS, RETR; header; body; "."; QUIT
    assert got.endswith(b"\r\n.\r\n+OK mail.example.com POP3 server signing off (0 messages deleted)\r\n")


def test_a_client_over_the_connection_limit_gets_a_polite_refusal():
    lab, stop = start_lab({"max_connections": 1})
    try:
        sock, reader = raw_connect(lab)
        with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as other:
            answer = other.makefile("rb").readline()
            assert answer == (b"-ERR [SYS/TEMP] mail.example.com has too many connections open; "
                              b"close one of yours or try again in a moment\r\n")
        assert wait_until(lambda: any("refused: 1 connections already open" in line.text
                                      for line in lab.transcript()))  # says so, and why
        sock.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"+OK")
        sock.close()
        reader.close()
        assert wait_until(lambda: not lab.ctx.connections)
        sock, reader = raw_connect(lab)  # a place is free again
        sock.close()
        reader.close()
    finally:
        stop()


def test_a_burst_of_pipelined_commands_does_not_starve_other_sessions(lab):
    """Pipelined commands are answered one per turn of the loop: a client sending hundreds at
    once cannot hold the server for itself."""
    for batch in range(3):
        lab.on_loop(lambda: [lab.inbox().deliver(b"Subject: %d\n\nx\n" % i) for i in range(200)])
    sock, reader = raw_connect(lab)
    other, other_reader = raw_connect(lab)
    with sock, reader, other, other_reader:
        sock.sendall(f"USER alice\r\nPASS {PASSWORD}\r\n".encode())
        assert reader.readline().startswith(b"+OK") and reader.readline().startswith(b"+OK")
        sock.sendall(b"UIDL 1\r\n" + b"STAT\r\n" * 3000 + b"UIDL 2\r\n")
        # the server is at the start of the burst (its first answer is here): 3,000 turns to go
        assert reader.readline().startswith(b"+OK 1 ")
        other.sendall(b"CAPA\r\n")
        assert other_reader.readline().startswith(b"+OK capability list follows")
        while not reader.readline().startswith(b"+OK 2 "):
            pass
    said = [line.text for line in lab.transcript() if line.who == "S"]
    capa = said.index("+OK capability list follows")
    last = next(i for i, text in enumerate(said) if text.startswith("+OK 2 "))
    assert capa < last, "the other session waited for the whole burst"
