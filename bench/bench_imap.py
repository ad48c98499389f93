"""IMAP on big folders: maillab beside a private Dovecot 2.3, measured in the same run.

Run (as root, for Dovecot): python bench/bench_imap.py [--sizes 1000,10000,40000] [--rounds 5]

For every folder size, each server gets the same folder the way its users would fill it:

* maillab: ``python -m maillab serve --root DIR`` on a store whose messages were delivered with
  ``Folder.deliver`` (what SMTP delivery and APPEND call);
* Dovecot: the same messages delivered with ``doveadm import`` (Dovecot writes its Maildir and
  its index), then SELECTed read-write once, so its index and cache exist as they would for a
  user who reads that folder.

Then one client connection per server (a raw socket, so the client's own parsing costs next to
nothing) runs each command of issue 15's table once to warm up (both servers keep caches) and
then ``--rounds`` times, alternating the servers round by round (the first runs, which fill
maillab's folder index and Dovecot's cache, are printed on their own). Printed: median [min-max] in
ms, the ratio of the medians (maillab / Dovecot), the goal beside it and FAIL when over it, the
cost per message from size to size, and the memory of maillab's process beside the sum of
Dovecot's processes. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import at_most, header, interleaved, load, med, spread, timed  # noqa: E402
from peers import MaillabServe, dovecot_import, memory, restart_dovecot  # noqa: E402

from maillab.imap.testing import Dovecot, dovecot_path  # noqa: E402
from maillab.store import Store, to_crlf  # noqa: E402

# (label, command, goal: maillab's time at most this many times Dovecot's; None: no goal)
FIRST_SELECT = "SELECT, first after a restart"
OPERATIONS = [
    ("SELECT", "SELECT {folder}", 3),
    ("FETCH 1:* (FLAGS), raw socket", "FETCH 1:* (FLAGS)", 2),
    ("FETCH 1:* BODYSTRUCTURE", "FETCH 1:* BODYSTRUCTURE", 2),
    ("FETCH 1:* ENVELOPE", "FETCH 1:* ENVELOPE", 2),
    ("UID SEARCH FROM x", "UID SEARCH FROM carol", 2),
    ("SEARCH SUBJECT x", 'SEARCH SUBJECT "number 7"', 2),
    ("SEARCH TEXT x", 'SEARCH TEXT "quarterly"', 1.5),
    # Last: the first RFC822 FETCH sets \Seen on every message (on both servers).
    ("FETCH 1:* RFC822", "FETCH 1:* RFC822", None),
]
ROWS = OPERATIONS[:1] + [(FIRST_SELECT, None, 3)] + OPERATIONS[1:]
GROWTH_GOAL = 1.5  # per-message cost at the next size at most this many times the last one
PASSWORD = "wonderland"  # alice's password in maillab's ready-made accounts


def message(i: int) -> bytes:
    """The i-th message of a bench folder: plain text mostly, every 5th multipart/alternative,
    every 17th with an attachment; every 10th mentions a quarterly report (SEARCH TEXT)."""
    who = ["bob", "carol", "dave", "erin"][i % 4]
    head = (f"From: {who.title()} <{who}@example.com>\nTo: Alice <alice@example.com>\n"
            f"Subject: message number {i}\nDate: Mon, 1 Jan 2024 10:{i % 60:02d}:00 +0000\n"
            f"Message-ID: <{i}@bench.example.com>\nMIME-Version: 1.0\n")
    text = ("A line of a small message body, as in a short e-mail.\n" * 12
            + ("See the quarterly report.\n" if i % 10 == 0 else "Nothing else.\n"))
    if i % 17 == 0:
        body = ("Content-Type: multipart/mixed; boundary=mix\n\n--mix\n"
                f"Content-Type: text/plain; charset=us-ascii\n\n{text}--mix\n"
                "Content-Type: application/pdf; name=report.pdf\nContent-Transfer-Encoding: base64\n"
                "Content-Disposition: attachment; filename=report.pdf\n\n"
                + "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl\n" * 8
                + "--mix--\n")
    elif i % 5 == 0:
        body = ("Content-Type: multipart/alternative; boundary=alt\n\n--alt\n"
                f"Content-Type: text/plain; charset=us-ascii\n\n{text}--alt\n"
                f"Content-Type: text/html; charset=us-ascii\n\n<p>{text}</p>\n--alt--\n")
    else:
        body = f"Content-Type: text/plain; charset=us-ascii\n\n{text}"
    return to_crlf((head + body).encode())


class Client:
    """A raw IMAP client that reads a whole response in big chunks and parses nothing but the
    final tagged line (a line-by-line reader costs more than Dovecot's answer at 40,000)."""

    def __init__(self, port: int, user: str, password: str, folder: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.sock.recv(4096)  # the greeting
        self.n = 0
        self.command(f"LOGIN {user} {password}")
        self.command(f"SELECT {folder}")

    def command(self, text: str) -> bytes:
        self.n += 1
        tag = b"b%d " % self.n
        self.sock.sendall(tag + text.encode() + b"\r\n")
        chunks, tail = [], b""
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            chunks.append(chunk)
            tail = (tail + chunk)[-4096:]
            if tail.endswith(b"\r\n"):
                i = tail.rfind(b"\r\n", 0, len(tail) - 2)
                last = tail[i + 2:] if i >= 0 else tail
                if last.startswith(tag):
                    if not last.startswith(tag + b"OK"):
                        raise RuntimeError(f"{text!r}: {last!r}")
                    return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


def answer_shape(label: str, response: bytes) -> object:
    """What must be equal between the two servers' answers: SEARCH results, FETCH counts."""
    if "SEARCH" in label:
        m = re.search(rb"^\* SEARCH([ \d]*)\r\n", response, re.M)
        return sorted(int(x) for x in m.group(1).split()) if m else None
    if label.startswith("FETCH"):
        return len(re.findall(rb"^\* \d+ FETCH ", response, re.M))
    return None


def fill_maillab(root: Path, folder: str, n: int) -> None:
    store = Store(root, hash_n=2**10)
    acct = store.add_account("alice", PASSWORD, "example.com", ["alice@example.com"])
    acct.create_folder(folder)
    box = acct.folder(folder)
    for i in range(n):
        box.deliver(message(i))
    store.close()


def measure_size(n: int, rounds: int) -> dict:
    """Both servers with one folder of ``n`` messages: every operation's samples and memory."""
    folder = f"Bench{n}"
    result = {"ops": {}, "first": {}, "memory": {}, "load": []}
    with tempfile.TemporaryDirectory(prefix="maillab-bench-imap-") as root:
        t = time.perf_counter()
        fill_maillab(Path(root), folder, n)
        fill_m = time.perf_counter() - t
        dv = Dovecot()
        lab = None
        try:
            t = time.perf_counter()
            stored = dovecot_import(dv, folder, (message(i) for i in range(n)))
            fill_d = time.perf_counter() - t
            if stored != n:
                raise RuntimeError(f"Dovecot holds {stored} messages, not {n}")
            lab = MaillabServe(root)
            clients = {"maillab": Client(lab.port("imap"), "alice", PASSWORD, folder),
                       "dovecot": Client(dv.port, "alice", dv.passwords["alice"], folder)}
            pids = {"maillab": lab.pid, "dovecot": dv.proc.pid}
            print(f"  {n} messages: filled maillab in {fill_m:.1f} s, Dovecot in {fill_d:.1f} s "
                  f"(doveadm import); {load()}", flush=True)
            result["memory"]["after SELECT"] = {k: memory(p) for k, p in pids.items()}
            for label, command, _goal in OPERATIONS:
                command = command.format(folder=folder)
                answers, result["first"][label] = {}, {}
                for who, client in clients.items():  # the first run fills caches (both servers)
                    t = time.perf_counter()
                    answers[who] = client.command(command)
                    result["first"][label][who] = time.perf_counter() - t
                shapes = {k: answer_shape(label, a) for k, a in answers.items()}
                if shapes["maillab"] != shapes["dovecot"]:
                    print(f"  WARNING {label}: the answers differ ({str(shapes)[:200]})")
                result["ops"][label] = interleaved(
                    {k: timed(lambda c=c: c.command(command)) for k, c in clients.items()}, rounds)
                result["load"].append(os.getloadavg()[0])
            result["memory"]["after every command"] = {k: memory(p) for k, p in pids.items()}
            for c in clients.values():
                c.close()
            # The first SELECT after a restart: maillab must read the folder again, Dovecot
            # reads its index files. (A separate row: the warm SELECT above is on a server that
            # has the folder in memory.)
            restarts = {"maillab": lab.restart, "dovecot": lambda: restart_dovecot(dv)}

            def first_select(who: str) -> float:
                restarts[who]()
                port = lab.port("imap") if who == "maillab" else dv.port
                password = PASSWORD if who == "maillab" else dv.passwords["alice"]
                client = Client(port, "alice", password, "INBOX")
                try:
                    return timed(lambda: client.command(f"SELECT {folder}"))()
                finally:
                    client.close()
            result["ops"][FIRST_SELECT] = interleaved(
                {who: (lambda w=who: first_select(w)) for who in restarts}, max(5, rounds))
        finally:
            if lab is not None:
                lab.close()
            dv.close()
    return result


def short(n: int) -> str:
    """40000 -> '40k', 200 -> '200'."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def report(sizes: list[int], results: dict[int, dict]) -> None:
    header("IMAP, maillab / Dovecot: median [min-max] ms; ratio of medians; goal (at most)")
    print(f"{'':32}{'size':>7} {'maillab ms':>24} {'Dovecot ms':>24} {'ratio':>7}  goal")
    for label, _command, goal in ROWS:
        for n in sizes:
            ours, theirs = results[n]["ops"][label]["maillab"], results[n]["ops"][label]["dovecot"]
            ratio = med(ours) / med(theirs)
            goal_text = f"<= {goal}x {at_most(ratio, goal)}" if goal else "(no goal)"
            print(f"{label:32}{n:>7} {spread(ours, 1000):>24} {spread(theirs, 1000):>24} "
                  f"{ratio:6.1f}x  {goal_text}")
    print("\nThe first run of each command after delivery (each server fills its caches; no goal)")
    for label, _command, _goal in OPERATIONS:
        for n in sizes:
            first = results[n]["first"][label]
            print(f"{label:32}{n:>7} {first['maillab'] * 1000:>24.1f} {first['dovecot'] * 1000:>24.1f} "
                  f"{first['maillab'] / first['dovecot']:6.1f}x")
    for n in sizes:
        print(f"  load averages (1 min) while measuring {n}: "
              f"{min(results[n]['load']):.2f}-{max(results[n]['load']):.2f}")

    if len(sizes) > 1:
        print(f"\nCost per message (median / size, microseconds) and its growth from size to size "
              f"(flat = 1.0; goal for maillab: at most {GROWTH_GOAL})")
        for label, _command, _goal in ROWS:
            for who in ("maillab", "dovecot"):
                per = [med(results[n]["ops"][label][who]) / n * 1e6 for n in sizes]
                steps = []
                for a, b, x, y in zip(sizes, sizes[1:], per, per[1:]):
                    verdict = at_most(y / x, GROWTH_GOAL) if who == "maillab" else ""
                    steps.append(f"{short(a)}->{short(b)} {y / x:4.1f}x {verdict:4}")
                print(f"{label:32}{who:8}" + "".join(f"{p:9.2f}" for p in per) + "   " + "  ".join(steps))

    print("\nMemory with the folder stored (maillab: the serve process; Dovecot: all its processes)")
    for n in sizes:
        for moment, figures in results[n]["memory"].items():
            (m_rss, m_pss, _), (d_rss, d_pss, d_count) = figures["maillab"], figures["dovecot"]
            print(f"  {n:>6} messages, {moment:20} maillab RSS {m_rss / 2**20:6.1f} MB, "
                  f"Dovecot RSS {d_rss / 2**20:6.1f} MB in {d_count} processes (PSS {d_pss / 2**20:5.1f} MB): "
                  f"ratio {m_rss / d_rss:.1f}x RSS, {m_pss / d_pss:.1f}x PSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,40000",
                    help="folder sizes, comma-separated (default 1000,10000,40000)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per command and size")
    ap.add_argument("--quick", action="store_true", help="sizes 200,1000 and 3 rounds (a smoke test)")
    args = ap.parse_args()
    sizes = [200, 1000] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    rounds = 3 if args.quick else args.rounds
    if dovecot_path() is None or os.geteuid() != 0:
        sys.exit("bench_imap needs Dovecot (apt-get install dovecot-imapd) and root: "
                 "there is nothing to compare with otherwise")
    header(f"IMAP on folders of {', '.join(map(str, sizes))} messages, {rounds} rounds")
    results = {n: measure_size(n, rounds) for n in sizes}
    report(sizes, results)


if __name__ == "__main__":
    main()
