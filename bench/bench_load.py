"""Load, faults and promises: 200 concurrent sessions against a lab that is stopped and killed.

Run: python bench/bench_load.py [--seconds 60] [--clients 200] [--quick]

The lab runs in a child process on a store of its own (``root=``). Clients (asyncio, in this
process) run mixed sessions the whole time: SMTP to a local user, SMTP relayed between the two
domains after AUTH, POP3 and IMAP reads. Each message carries a Message-ID of its own and is
remembered when its client got the ``250``. In the middle of the run the lab is stopped with
SIGTERM (``lab.stop()``, which drains its relay queue) and started again on the same root; later
it is killed with SIGKILL in the middle of a burst and started again. At the end a last lab on
the same root settles its queue, and the Maildirs on disk are counted: every ``250`` must be in
its recipient's mailbox exactly once.

Then a hostile phase (garbage lines that the server refuses, thousands of failed logins with
made-up names, hundreds of idle connections) and the lab's memory against the same lab warm
(after the idle round, when the code it loads on first use is in; fresh is printed too).

Printed: p50/p99 of whole sessions per kind under load, beside the same sessions in the idle lab
(the peer, measured in this run), errors, the exactly-once count, RSS before/after. FAIL marks
a figure on the wrong side of its goal: any lost or duplicated message; RSS after > 1.5 x warm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import at_most, header, python_env  # noqa: E402

# The child: a lab on ROOT until SIGTERM; one JSON line with its ports when it is up.
CHILD = """
import json, signal, sys, threading
import maillab
lab = maillab.MailLab(root=sys.argv[1], ports="any").start()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
ports = {f"{s.protocol}:{s.domain}": s.port for s in lab.services}
print(json.dumps(ports), flush=True)
done.wait()
lab.stop()
print("stopped", flush=True)
"""

USERS = {"alice": ("wonderland", "alice@example.com"), "bob": ("builder", "bob@example.com"),
         "john": ("postman", "john@example.net"), "maria": ("sunflower", "maria@example.net")}


class Lab:
    """The lab's child process; ``up`` is set while it answers."""

    def __init__(self, root: Path):
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.up = asyncio.Event()

    async def start(self) -> float:
        t = time.perf_counter()
        self.proc = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-c", CHILD, str(self.root)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=python_env(), text=True)
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if not line:
            raise RuntimeError("the lab did not start: " + self.proc.stderr.read())
        self.ports = json.loads(line)
        self.up.set()
        return time.perf_counter() - t

    async def stop(self) -> float:
        """SIGTERM: lab.stop(), which gives queued relays their chance first."""
        self.up.clear()
        t = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.proc.wait, 60)
        return time.perf_counter() - t

    async def kill(self) -> None:
        self.up.clear()
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait, 10)

    def port(self, service: str) -> int:
        return self.ports[service]

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kib / 1024


# ---------------------------------------------------------------- minimal async clients

class Conn:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Conn":
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        return cls(reader, writer)

    async def line(self) -> bytes:
        got = await asyncio.wait_for(self.r.readline(), 30)
        if not got:
            raise ConnectionError("closed by the server")
        return got

    async def smtp(self, command: bytes | None = None) -> int:
        if command is not None:
            self.w.write(command + b"\r\n")
        while True:
            line = await self.line()
            if line[3:4] != b"-":
                return int(line[:3])

    async def until(self, predicate) -> bytes:
        while True:
            line = await self.line()
            if predicate(line):
                return line

    def close(self) -> None:
        self.w.close()


class Load:
    """The clients and what they saw."""

    def __init__(self, lab: Lab, rng: random.Random):
        self.lab, self.rng = lab, rng
        self.latency: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.acknowledged: dict[str, str] = {}  # Message-ID -> the mailbox it must reach
        self.unacknowledged: dict[str, str] = {}  # sent, but no 250 came (the lab went away)
        # Logins per service: accepted, or refused as "busy, try again" (SMTP 454, IMAP
        # NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]) with the password unchecked.
        self.logins: dict[str, list[int]] = {"smtp": [0, 0], "pop3": [0, 0], "imap": [0, 0]}
        self.relayed: set[str] = set()  # Message-IDs sent through the relay (after AUTH)
        self.running = True

    async def session(self, kind: str) -> None:
        await self.lab.up.wait()
        t = time.perf_counter()
        try:
            await getattr(self, kind)()
        except (OSError, ConnectionError, asyncio.TimeoutError, ValueError, KeyError) as e:
            name = f"{kind}: {type(e).__name__}"
            self.errors[name] = self.errors.get(name, 0) + 1
            await asyncio.sleep(0.05)
            return
        self.latency.setdefault(kind, []).append(time.perf_counter() - t)

    async def worker(self) -> None:
        kinds = ["smtp_local"] * 35 + ["smtp_relay"] * 35 + ["pop3"] * 15 + ["imap"] * 15
        while self.running:
            await self.session(self.rng.choice(kinds))

    async def _send(self, port: int, sender: str, rcpt: str, login: tuple | None, mailbox: str):
        c = await Conn.open(port)
        msgid = f"<{uuid.uuid4().hex}@bench.example>"
        try:
            await c.smtp()
            await c.smtp(b"EHLO bench.example")
            if login:
                blob = base64.b64encode(f"\0{login[0]}\0{login[1]}".encode())
                code = await c.smtp(b"AUTH PLAIN " + blob)
                self._count_login("smtp", code == 235, code == 454)
                if code != 235:
                    raise ValueError("login refused")
            if await c.smtp(f"MAIL FROM:<{sender}>".encode()) != 250:
                raise ValueError("sender refused")
            if await c.smtp(f"RCPT TO:<{rcpt}>".encode()) != 250:
                raise ValueError("recipient refused")
            if await c.smtp(b"DATA") != 354:
                raise ValueError("DATA refused")
            self.unacknowledged[msgid] = mailbox
            if login:
                self.relayed.add(msgid)
            c.w.write(f"Message-ID: {msgid}\r\nFrom: <{sender}>\r\nTo: <{rcpt}>\r\n"
                      f"Subject: load\r\n\r\n".encode() + b"A line of text.\r\n" * 20 + b".\r\n")
            if await c.smtp() == 250:
                self.acknowledged[msgid] = self.unacknowledged.pop(msgid)
            await c.smtp(b"QUIT")
        finally:
            c.close()

    def _count_login(self, service: str, accepted: bool, busy: bool) -> None:
        self.logins[service][0] += accepted
        self.logins[service][1] += busy

    async def smtp_local(self) -> None:
        user = self.rng.choice(list(USERS))
        domain = USERS[user][1].split("@")[1]
        await self._send(self.lab.port(f"smtp:{domain}"), "stranger@elsewhere.example",
                         USERS[user][1], None, user)

    async def smtp_relay(self) -> None:
        sender, rcpt = self.rng.choice([("alice", "john"), ("bob", "maria"), ("john", "alice"),
                                        ("maria", "bob")])
        domain = USERS[sender][1].split("@")[1]
        await self._send(self.lab.port(f"smtp:{domain}"), USERS[sender][1], USERS[rcpt][1],
                         (sender, USERS[sender][0]), rcpt)

    async def pop3(self) -> None:
        user = self.rng.choice(list(USERS))
        c = await Conn.open(self.lab.port(f"pop3:{USERS[user][1].split('@')[1]}"))
        try:
            await c.line()
            c.w.write(f"USER {user}\r\nPASS {USERS[user][0]}\r\n".encode())
            await c.line()
            answer = await c.line()
            self._count_login("pop3", answer.startswith(b"+OK"), b"[SYS/TEMP]" in answer)
            if not answer.startswith(b"+OK"):
                return  # another session holds the maildrop (RFC 1939): a correct refusal
            c.w.write(b"STAT\r\n")
            count = int((await c.line()).split()[1])
            if count:
                c.w.write(f"RETR {count}\r\n".encode())
                await c.until(lambda line: line == b".\r\n")
            c.w.write(b"QUIT\r\n")
            await c.line()
        finally:
            c.close()

    async def imap(self) -> None:
        user = self.rng.choice(list(USERS))
        c = await Conn.open(self.lab.port(f"imap:{USERS[user][1].split('@')[1]}"))
        try:
            await c.line()
            c.w.write(f"a LOGIN {user} {USERS[user][0]}\r\nb EXAMINE INBOX\r\n".encode())
            answer = await c.until(lambda line: line.startswith(b"a "))
            self._count_login("imap", answer.startswith(b"a OK"), b"[UNAVAILABLE]" in answer)
            exists = 0
            while not (line := await c.line()).startswith(b"b "):
                m = re.match(rb"\* (\d+) EXISTS", line)
                exists = int(m.group(1)) if m else exists
            if exists:
                c.w.write(f"c FETCH {exists} (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n".encode())
                await c.until(lambda line: line.startswith(b"c "))
            c.w.write(b"d LOGOUT\r\n")
            await c.until(lambda line: line.startswith(b"d "))
        finally:
            c.close()


# ---------------------------------------------------------------- hostile traffic

async def hostile(lab: Lab) -> dict[str, int]:
    """What the campaign threw at the lab: refused garbage, made-up logins, idle connections."""
    counts = {}
    c = await Conn.open(lab.port("smtp:example.com"))
    await c.smtp()
    # Lines the server refuses (too long for a command), from a client that never logs in.
    garbage = (b"RCPT TO:<" + b"x" * 880 + b"@example.com>\r\n") * 1000
    replies = asyncio.create_task(c.until(lambda line: False))  # read (and drop) the refusals
    for _ in range(40):
        c.w.write(garbage)
        await c.w.drain()
    c.w.write(b"QUIT\r\n")
    await asyncio.wait([replies], timeout=30)
    replies.cancel()
    c.close()
    counts["refused MB"] = round(40 * len(garbage) / 1e6)
    # Made-up users from 250 addresses (127.0.0.x), 12 each: the login guard forgives an
    # address 10 failures, so this measures memory, not the guard's patience.
    async def made_up_login(n: int) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", lab.port("pop3:example.net"), local_addr=(f"127.0.0.{2 + n % 250}", 0))
        p = Conn(reader, writer)
        try:
            await p.line()
            p.w.write(f"USER nobody{n}-{'x' * 200}\r\nPASS wrong\r\nQUIT\r\n".encode())
            await p.until(lambda line: line.startswith(b"+OK"))
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            p.close()

    for i in range(0, 3000, 50):
        await asyncio.gather(*(made_up_login(i + j) for j in range(50)))
    counts["failed logins"] = 3000
    idle = []
    for _ in range(300):
        try:
            idle.append(await Conn.open(lab.port("imap:example.com")))
        except OSError:
            break
    await asyncio.sleep(1)
    for conn in idle:
        conn.close()
    counts["idle connections"] = len(idle)
    return counts


# ---------------------------------------------------------------- counting what arrived

def message_ids(root: Path) -> dict[str, list[str]]:
    """Message-ID -> the mailboxes holding it, read from the Maildirs on disk."""
    found: dict[str, list[str]] = {}
    for user in USERS:
        for sub in ("new", "cur"):
            folder = root / user / sub
            for name in os.listdir(folder) if folder.is_dir() else []:
                with open(folder / name, "rb") as f:
                    head = f.read(4096)
                m = re.search(rb"^Message-ID: (<[^>\r\n]+>)", head, re.M | re.I)
                if m:
                    found.setdefault(m.group(1).decode(), []).append(user)
    return found


def queued(root: Path) -> int:
    """Relay queue entries on disk (none where a lab keeps its queue in memory only)."""
    ready = root / "queue" / "ready"
    return len(os.listdir(ready)) if ready.is_dir() else 0


def pct(samples: list[float], q: float) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else float("nan")


async def run(args) -> int:
    header(f"bench_load: {args.clients} clients for {args.seconds} s, a stop and a kill -9 midway")
    root = Path(tempfile.mkdtemp(prefix="maillab-load-"))
    rng = random.Random(1)
    lab = Lab(root)
    failures = 0
    try:
        print(f"lab started in {await lab.start():.2f} s; store {root}")
        await asyncio.sleep(1)
        fresh = lab.rss_mib()
        idle = Load(lab, rng)  # the peer: the same sessions, one at a time, in the idle lab
        for kind in ("smtp_local", "smtp_relay", "pop3", "imap"):
            for _ in range(20 if args.quick else 60):
                await idle.session(kind)
        # The baseline: every kind of session has run, so the code a lab loads on first use
        # (IMAP FETCH and SEARCH, the email package: ~4 MiB) is in memory, as in any lab in use.
        await asyncio.sleep(1)
        warm = lab.rss_mib()
        load = Load(lab, rng)
        workers = [asyncio.create_task(load.worker()) for _ in range(args.clients)]
        third = args.seconds / 3
        await asyncio.sleep(third)
        before = len(load.acknowledged)
        took = await lab.stop()
        print(f"t={third:.0f}s  SIGTERM (lab.stop, drain) after {before} acknowledged: stopped in "
              f"{took:.2f} s; queue left on disk: {queued(root)}")
        print(f"        restarted in {await lab.start():.2f} s")
        await asyncio.sleep(third)
        await lab.kill()
        left = queued(root)
        print(f"t={2 * third:.0f}s  SIGKILL in the burst; queue entries on disk: {left}")
        print(f"        restarted in {await lab.start():.2f} s")
        await asyncio.sleep(third)
        load.running = False
        await asyncio.wait(workers, timeout=60)
        await asyncio.sleep(2)
        loaded = lab.rss_mib()
        t = time.perf_counter()
        counts = await hostile(lab)
        print(f"hostile phase took {time.perf_counter() - t:.1f} s", flush=True)
        await asyncio.sleep(3)
        just_after = lab.rss_mib()
        # the lab gives free memory back once it has been quiet for a whole check period
        # (maillab.lab.QUIET_CHECK): measure what it holds then, as a learner's lab would
        from maillab.lab import QUIET_CHECK
        await asyncio.sleep(2 * QUIET_CHECK + 2)
        after = lab.rss_mib()
        took = await lab.stop()
        print(f"t={args.seconds}s  end of load; final stop in {took:.2f} s")
        await lab.start()  # a last start delivers whatever the last stop kept
        deadline = time.time() + 60
        while queued(root) and time.time() < deadline:
            await asyncio.sleep(0.2)
        await lab.stop()

        found = message_ids(root)
        acked = load.acknowledged
        lost = [m for m, box in acked.items() if box not in found.get(m, [])]
        dup = [m for m, boxes in found.items() if len(boxes) > 1]
        unacked_arrived = sum(1 for m in load.unacknowledged if m in found)
        print(f"\nexactly once: {len(acked)} messages got their 250; lost {len(lost)}, "
              f"duplicated {len(dup)}  {'FAIL' if lost or dup else 'ok'}")
        print(f"  without a 250 (interrupted by the stop or the kill): {len(load.unacknowledged)}, "
              f"of which delivered anyway: {unacked_arrived}")
        failures += bool(lost or dup)
        for m in (lost + dup)[:5]:
            print(f"  {'lost' if m in lost else 'duplicated'}: {m} "
                  f"({'relayed' if m in load.relayed else 'local'}, in {found.get(m, [])})")
        print(f"\n{'session':12} {'n':>6} {'p50 ms':>8} {'p99 ms':>8}   idle lab p50/p99 ms (peer)")
        for kind in ("smtp_local", "smtp_relay", "pop3", "imap"):
            s, p = load.latency.get(kind, []), idle.latency.get(kind, [])
            print(f"{kind:12} {len(s):6} {pct(s, .5) * 1000:8.1f} {pct(s, .99) * 1000:8.1f}   "
                  f"{pct(p, .5) * 1000:.1f}/{pct(p, .99) * 1000:.1f}  "
                  f"(p50 x{pct(s, .5) / pct(p, .5):.1f})")
        busy = sum(refused for _ok, refused in load.logins.values())
        print("\nlogins under load (accepted / refused unchecked as busy): " + ", ".join(
            f"{service} {ok}/{refused}" for service, (ok, refused) in load.logins.items()) +
              f"  {'FAIL' if busy else 'ok'}")
        failures += bool(busy)
        if load.errors:
            print("errors (mostly sessions cut by the stop and the kill): " +
                  ", ".join(f"{k} {v}" for k, v in sorted(load.errors.items())))
        ratio = after / warm
        print(f"\nRSS: fresh {fresh:.0f} MiB, warm {warm:.0f} MiB (after the idle round), after the "
              f"load {loaded:.0f} MiB, after the hostile phase "
              f"({', '.join(f'{k} {v}' for k, v in counts.items())}) {just_after:.0f} MiB, "
              f"quiet {2 * QUIET_CHECK + 2:.0f} s later {after:.0f} MiB: "
              f"x{ratio:.2f} of warm (goal <= 1.5)  {at_most(ratio, 1.5)}; x{after / fresh:.2f} of fresh")
        failures += ratio > 1.5
    finally:
        if lab.proc is not None and lab.proc.poll() is None:
            lab.proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="12 s, 50 clients (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.clients = 12, 50
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
