"""The webmail's session store and login throttle, rule by rule: the edges of idle and lifetime
expiry, the session limit, logging out, clearing on shutdown, the throttle's defaults, its
bounded memory and the turns attempts take. Each test here was shown to fail on a planted bug
that the rest of the suite let through (bench/mutation.py's survivors)."""

from __future__ import annotations

import asyncio
import math

import pytest

from maillab.webmail.security import Busy, LoginThrottle, Session, SessionStore


class FakeClock:
    """time.monotonic for the security module, moved by hand."""

    def __init__(self, monkeypatch, start: float = 1000.0):
        self.now = start
        monkeypatch.setattr("maillab.webmail.security.time.monotonic", lambda: self.now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    return FakeClock(monkeypatch)


def new_session(store: SessionStore, clock: FakeClock, name: str = "alice") -> Session:
    s = store.create(f"{name}@example.com", "secret", "example.com")
    s.created = s.last_seen = clock.now  # (the dataclass stamps it with the real clock)
    return s


# --- sessions -------------------------------------------------------------------------------

def test_notices_keep_the_five_latest():
    s = Session("id", "a@example.com", "pw", "example.com")
    for i in range(7):
        s.notify(f"n{i}")
    assert [text for _, text in s.take_notices()] == ["n2", "n3", "n4", "n5", "n6"]
    assert s.take_notices() == []


def test_idle_expiry_is_measured_from_the_last_request(clock):
    store = SessionStore(idle=100, lifetime=10_000)
    s = new_session(store, clock)
    clock.now += 100  # exactly the idle time: still alive
    assert store.get(s.id) is s
    clock.now += 100  # idle counts from that request, not from the login
    assert store.get(s.id) is s
    clock.now += 100.5
    assert store.get(s.id) is None
    assert len(store) == 0  # an expired session is gone, not just hidden
    clock.now -= 200  # and it does not come back
    assert store.get(s.id) is None


def test_lifetime_ends_a_busy_session(clock):
    store = SessionStore(idle=100, lifetime=250)
    s = new_session(store, clock)
    for _ in range(5):  # a request every 50 s: never idle
        clock.now += 50
        assert store.get(s.id) is s  # at 250 s: exactly the lifetime, still alive
    clock.now += 1
    assert store.get(s.id) is None
    assert len(store) == 0


def test_a_new_login_sweeps_expired_sessions(clock):
    store = SessionStore(idle=100, lifetime=1000)
    idle_one = new_session(store, clock, "idle")
    clock.now += 60
    busy_one = new_session(store, clock, "busy")
    clock.now += 40  # idle_one exactly at the idle limit: kept
    new_session(store, clock, "third")
    assert len(store) == 3
    clock.now += 1  # idle_one over the idle limit, busy_one not, none over the lifetime
    new_session(store, clock, "fourth")
    assert len(store) == 3
    assert store.get(busy_one.id) is busy_one
    assert store.get(idle_one.id) is None


def test_a_new_login_sweeps_sessions_past_their_lifetime(clock):
    store = SessionStore(idle=100, lifetime=300)
    old = new_session(store, clock, "old")
    for _ in range(3):
        clock.now += 100
        assert store.get(old.id) is old  # kept busy: at 300 s exactly it still counts
    new_session(store, clock, "other")
    assert len(store) == 2
    clock.now += 1
    new_session(store, clock, "third")
    assert len(store) == 2  # old is past its lifetime though not idle


def test_at_the_limit_the_oldest_session_goes_first(clock):
    store = SessionStore(limit=3)
    sessions = [new_session(store, clock, f"u{i}") for i in range(3)]
    assert len(store) == 3 and all(store.get(s.id) is s for s in sessions)
    newest = new_session(store, clock, "u3")
    assert len(store) == 3
    assert store.get(sessions[0].id) is None
    assert [store.get(s.id) for s in sessions[1:] + [newest]] == sessions[1:] + [newest]


def test_the_default_limit_is_a_thousand_sessions(clock):
    store = SessionStore()
    first = new_session(store, clock, "first")
    for i in range(999):
        new_session(store, clock, f"u{i}")
    assert len(store) == 1000 and store.get(first.id) is first
    new_session(store, clock, "one-more")
    assert len(store) == 1000 and store.get(first.id) is None


def test_default_sessions_end_after_half_an_hour_idle_or_twelve_hours(clock):
    store = SessionStore()
    s = new_session(store, clock)
    clock.now += 30 * 60  # exactly half an hour without a request: still alive
    assert store.get(s.id) is s
    clock.now += 30 * 60 + 0.5
    assert store.get(s.id) is None
    busy = new_session(store, clock, "busy")
    for _ in range(24):  # a request every half hour for twelve hours
        clock.now += 30 * 60
        assert store.get(busy.id) is busy
    clock.now += 1
    assert store.get(busy.id) is None


def test_logging_out_ends_only_that_session(clock):
    store = SessionStore()
    a, b = new_session(store, clock, "a"), new_session(store, clock, "b")
    store.end(None)  # no cookie: nothing happens
    store.end("")
    store.end("not-a-session-id-at-all")
    assert len(store) == 2
    store.end(a.id)
    assert store.get(a.id) is None and store.get(b.id) is b and len(store) == 1


def test_clear_forgets_every_session_and_its_password(clock):
    store = SessionStore()
    a, b = new_session(store, clock, "a"), new_session(store, clock, "b")
    store.clear()
    assert len(store) == 0
    assert store.get(a.id) is None and store.get(b.id) is None
    assert a.password == "" and b.password == ""  # a page still holding one learns nothing


# --- login throttle -------------------------------------------------------------------------

def test_default_throttle_three_free_failures_then_one_second(clock):
    t = LoginThrottle()
    keys = ["acct:a@example.com"]
    for _ in range(3):
        assert t.delay(keys) == 0
        t.failed(keys)
    assert t.delay(keys) == 1.0
    clock.now += 1  # a little decay between attempts does not make the fourth free
    assert t.delay(keys) == 1.0
    clock.now -= 1
    t.failed(keys)
    assert t.delay(keys) == 2.0
    for _ in range(10):
        t.failed(keys)
    assert t.delay(keys) == 15.0  # the default cap


def test_without_a_cap_the_doubling_stops_at_two_to_the_32nd(clock):
    t = LoginThrottle(free=0, base=1.0, cap=math.inf)
    for _ in range(100):
        t.failed(["acct:a@example.com"])
    assert t.delay(["acct:a@example.com"]) == 2.0 ** 32


def test_throttle_memory_keeps_max_keys_then_halves(clock):
    t = LoginThrottle(max_keys=100)
    for i in range(100):
        t.failed([f"client:{i}"])
    assert t.score("client:0") == 1.0  # exactly max_keys: all remembered
    t.failed(["client:100"])
    assert t.score("client:0") == 0.0 and t.score("client:50") == 0.0
    assert [t.score(f"client:{i}") for i in (51, 99, 100)] == [1.0, 1.0, 1.0]


def test_default_throttle_remembers_ten_thousand_keys(clock):
    t = LoginThrottle()
    for i in range(10_000):
        t.failed([f"client:{i}"])
    assert t.score("client:0") == 1.0
    t.failed(["client:10000"])
    assert t.score("client:0") == 0.0 and t.score("client:5001") == 1.0


def test_throttle_memory_drops_faded_scores_before_old_strong_ones(clock):
    t = LoginThrottle(max_keys=4, half_life=60)
    for key in ("strong", "faded1", "faded2", "faded3"):
        t.failed([key])
    clock.now += 600  # ten half-lives: the three faded ones score under a thousandth
    t.failed(["strong"])  # failing again keeps its place as the oldest key
    clock.now += 60
    t.failed(["new"])  # five keys > 4: the faded ones go, the strong old one stays
    assert t.score("faded1") == t.score("faded3") == 0.0
    assert t.score("strong") > 0.5 and t.score("new") == 1.0


def test_throttle_memory_keeps_a_score_of_exactly_one_half(clock):
    t = LoginThrottle(max_keys=4, half_life=60)
    for key in ("faded1", "faded2", "faded3"):
        t.failed([key])
    clock.now += 600
    t.failed(["half"])
    clock.now += 60  # one half-life: "half" scores 0.5, the others under 0.001
    t.failed(["new"])
    assert t.score("half") == 0.5 and t.score("new") == 1.0
    assert t.score("faded1") == 0.0


def test_busy_says_when_to_come_back():
    async def scenario():
        t = LoginThrottle(max_waiting=2)
        gate = asyncio.Event()

        async def attempt():
            async with t.turn("acct:a@example.com"):
                await gate.wait()

        tasks = [asyncio.create_task(attempt()) for _ in range(3)]
        await asyncio.sleep(0)  # one holds the turn, two wait
        try:
            async with t.turn("acct:a@example.com"):
                raise AssertionError("a fourth attempt got in")
        except Busy as busy:
            retry = busy.retry_after
        gate.set()
        await asyncio.gather(*tasks)
        return retry

    # no failures yet: one second for each of the three attempts ahead
    assert asyncio.run(scenario()) == 3.0


def test_default_throttle_lets_eight_wait_and_refuses_the_tenth():
    async def scenario():
        t = LoginThrottle()
        gate = asyncio.Event()

        async def attempt():
            async with t.turn("acct:a@example.com"):
                await gate.wait()

        tasks = [asyncio.create_task(attempt()) for _ in range(10)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert [isinstance(r, Busy) for r in results] == [False] * 9 + [True]


def test_a_late_attempt_waits_behind_those_already_waiting():
    """The turn must outlive its first holder while others wait: an attempt that arrives after
    the first one finished still queues behind the second."""

    async def scenario():
        t = LoginThrottle()
        inside, most = 0, 0
        gates = [asyncio.Event() for _ in range(3)]

        async def attempt(i):
            nonlocal inside, most
            async with t.turn("acct:a@example.com"):
                inside += 1
                most = max(most, inside)
                await gates[i].wait()
                inside -= 1

        first = asyncio.create_task(attempt(0))
        second = asyncio.create_task(attempt(1))
        for _ in range(3):
            await asyncio.sleep(0)
        gates[0].set()
        await first
        for _ in range(3):
            await asyncio.sleep(0)  # the second holds the turn now
        third = asyncio.create_task(attempt(2))
        for _ in range(3):
            await asyncio.sleep(0)
        gates[1].set()
        gates[2].set()
        await asyncio.gather(second, third)
        return most, t._turns

    most, turns = asyncio.run(scenario())
    assert most == 1
    assert turns == {}
