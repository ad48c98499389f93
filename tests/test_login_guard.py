"""Throttling failed logins across connections (maillab.net.LoginGuard) and over SMTP."""

import base64
import socket
import threading
import time

import pytest

import maillab
from maillab.net import LoginAttempt, LoginGuard
from rawclient import Raw


def failure(user="bob", peer="127.0.0.1:5000"):
    return LoginAttempt(time.time(), "pop3:example.com", user, peer, "USER/PASS", False, False)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_no_overflow_after_ten_thousand_failures():
    guard = LoginGuard(base=0.25, cap=4.0)
    for _ in range(10_000):
        guard.record(failure())
        delay = guard.delay("127.0.0.1:5000", "bob")  # a traceback here once was the answer
    assert 0 < delay < float("inf")


def test_a_sequential_guesser_waits_longer_and_longer_up_to_the_cap():
    clock = Clock()
    guard = LoginGuard(base=0.25, cap=4.0, clock=clock)
    waits = []
    for _ in range(200):
        guard.record(failure())
        waits.append(guard.delay("127.0.0.1:5000", "bob"))
        clock.now += waits[-1]  # the guesser sends the next guess once answered
    assert waits[0] == 0 and 0.2 < waits[1] <= 0.25 and waits[2] > waits[1]
    assert max(waits) == pytest.approx(4.0) and waits[-1] == pytest.approx(4.0)


def test_concurrent_failures_queue_one_answer_after_another():
    clock = Clock()
    guard = LoginGuard(base=0.25, cap=1.0, clock=clock)
    answers = []
    for port in range(20):  # twenty connections fail at the same moment
        guard.record(failure(peer=f"127.0.0.1:{5000 + port}"))
        answers.append(clock.now + guard.delay(f"127.0.0.1:{5000 + port}", "bob"))
    gaps = [b - a for a, b in zip(answers, answers[1:])]
    assert all(g > 0 for g in gaps)  # each answer later than the previous one
    assert gaps[-10:] == pytest.approx([1.0] * 10)  # then one answer per `cap` seconds


def test_the_account_is_throttled_whatever_the_address():
    clock = Clock()
    guard = LoginGuard(base=0.5, cap=2.0, clock=clock)
    delays = []
    for i in range(6):  # a guesser with six addresses
        guard.record(failure(peer=f"10.0.0.{i}:5000"))
        delays.append(guard.delay(f"10.0.0.{i}:5000", "bob"))
    assert delays[-1] > 2.0  # queued behind the others


def test_an_address_spraying_many_accounts_is_throttled_too():
    clock = Clock()
    guard = LoginGuard(base=0.5, cap=2.0, free_per_address=10, clock=clock)
    delays = []
    for i in range(20):
        guard.record(failure(user=f"user{i}"))
        delays.append(guard.delay("127.0.0.1:5000", f"user{i}"))
    assert delays[:10] == [0] * 10 and delays[-1] >= 2.0


def test_counters_decay_and_a_success_resets_the_account():
    clock = Clock()
    guard = LoginGuard(base=0.5, cap=2.0, half_life=60, clock=clock)
    for _ in range(5):
        guard.record(failure())
    clock.now += 60 * 10  # ten half-lives later: forgiven
    guard.record(failure())
    assert guard.delay("127.0.0.1:5000", "bob") == 0
    for _ in range(5):
        guard.record(failure())
    guard.record(LoginAttempt(time.time(), "pop3:example.com", "bob", "127.0.0.1:6000",
                              "USER/PASS", False, True))
    clock.now += 10
    guard.record(failure())
    assert guard.delay("127.0.0.1:5000", "bob") == 0


def test_memory_is_bounded_whatever_the_names():
    guard = LoginGuard(max_keys=1000, keep=500)
    for i in range(20_000):
        guard.record(failure(user=f"made-up-{i}-" + "x" * 10_000, peer=f"10.{i % 250}.0.1:1"))
    assert len(guard._failures) <= 1000 and len(guard.attempts) == 500
    assert max(len(a.user) for a in guard.attempts) <= 256


# ---------------------------------------------------------------- over SMTP

GUARD = {"base": 0.1, "cap": 0.2}


@pytest.fixture
def lab():
    with maillab.MailLab(ports="any", options={"login_guard": GUARD}) as lab:
        yield lab


def auth_plain(user, password):
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def smtp_client(lab, source="127.0.0.1"):
    sock = socket.create_connection((lab.host, lab.smtp_port), timeout=10,
                                    source_address=(source, 0))
    r = Raw.__new__(Raw)
    r.sock, r.file = sock, sock.makefile("rb")
    r.smtp_reply()
    r.cmd("EHLO guesser.example")
    return r


def test_parallel_wrong_guesses_are_answered_at_the_configured_rate(lab):
    n = 12
    clients = [smtp_client(lab) for _ in range(n)]
    answered, go = [], threading.Barrier(n)

    def guess(r):
        go.wait()
        code, _lines = r.cmd(auth_plain("bob", "guess"))
        answered.append((time.monotonic(), code))

    threads = [threading.Thread(target=guess, args=(r,)) for r in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for r in clients:
        r.close()
    times = sorted(t for t, code in answered)
    assert [code for _t, code in answered] == [535] * n
    gaps = [b - a for a, b in zip(times, times[1:])]
    # After the first few, one refused answer per `cap` seconds, however many connections.
    assert min(gaps[2:]) > GUARD["cap"] * 0.7, gaps
    assert times[-1] - times[0] > GUARD["cap"] * (n - 3)


def test_the_owner_logs_in_at_once_while_guesses_queue(lab):
    clients = [smtp_client(lab) for _ in range(10)]
    for r in clients:  # ten guesses sent together: their answers queue up for ~1.7 s
        r.send(auth_plain("bob", "guess") + "\r\n")
    time.sleep(0.2)
    owner = smtp_client(lab, source="127.0.0.2")  # another client, the right password
    start = time.monotonic()
    code, _lines = owner.cmd(auth_plain("bob", "builder"))
    took = time.monotonic() - start
    assert code == 235 and took < 0.5
    answers = [r.smtp_reply()[0] for r in clients]
    assert answers == [535] * 10
    for r in clients + [owner]:
        r.close()


def test_smtp_answers_a_repeated_535_late_and_never_beyond_the_cap(lab):
    r = smtp_client(lab)
    waits = []
    for _ in range(6):
        start = time.monotonic()
        code, lines = r.cmd(auth_plain("bob", "guess"))
        waits.append(time.monotonic() - start)
        assert code == 535 and "hint" in lines[0]
    r.close()
    assert waits[0] < 0.08 and waits[2] > 0.15  # slowed down from the second failure on
    assert max(waits) < GUARD["cap"] + 0.15  # but never past the cap
