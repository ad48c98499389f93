"""Benchmarks for the foundation: start-up, SMTP throughput beside bare aiosmtpd, POP3 RETR.

Run: python bench/bench_core.py [--quick]
Every figure is measured in this run, side by side with its peer, because these machines are
noisy. Nothing here asserts: it prints figures and ratios for people to read.
"""

from __future__ import annotations

import argparse
import asyncio
import poplib
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import maillab  # noqa: E402
from peers import serve_in_thread  # noqa: E402
from aiosmtpd.smtp import SMTP  # noqa: E402

MESSAGE = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: bench\r\n\r\n"
           + b"A line of a small message body, as in a short e-mail.\r\n" * 20)


def bench_start(rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        lab = maillab.MailLab(ports="any").start()
        times.append(time.perf_counter() - t)
        # ready means: a client gets the greeting on both ports
        with smtplib.SMTP(lab.host, lab.smtp_port) as s:
            s.noop()
        poplib.POP3(lab.host, lab.pop3_port).quit()
        lab.stop()
    return times


class CountingHandler:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


def bare_aiosmtpd():
    """A bare aiosmtpd server with a counting handler, on its own loop thread."""
    handler = CountingHandler()
    port, stop = serve_in_thread(lambda loop: lambda: SMTP(handler, hostname="bench", loop=loop))
    return port, handler, stop


def smtp_rate(port: int, n: int, rcpt: str) -> float:
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.ehlo("bench.example")
        t = time.perf_counter()
        for _ in range(n):
            s.sendmail("stranger@elsewhere.example", [rcpt], MESSAGE)
        return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke test)")
    args = ap.parse_args()
    rounds, n_smtp, n_pop = (3, 200, 100) if args.quick else (21, 2000, 500)

    print(f"maillab {maillab.__version__} benchmarks, Python {sys.version.split()[0]}")

    times = bench_start(rounds)
    print(f"start():  median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms over {rounds} starts (SMTP x2 + POP3 + IMAP ready; floor 150 ms)")

    # SMTP: maillab (parse, Received header, atomic Maildir delivery) vs bare aiosmtpd counting.
    # Delivery creates files, so the disk matters: measure the default temporary folder and a
    # folder on the disk that holds the repository (on some machines /tmp is much slower).
    places = {"default temp dir " + tempfile.gettempdir(): None,
              "repository disk": Path(__file__).resolve().parent / ".bench-store"}
    for label, parent in places.items():
        port, handler, stop_bare = bare_aiosmtpd()
        if parent is not None:
            parent.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent) as root:
            lab = maillab.MailLab(ports="any", root=root).start()
            try:
                ours, bare = [], []
                for _ in range(3):  # interleaved, so that both see the same machine
                    bare.append(smtp_rate(port, n_smtp, "bob@example.com"))
                    ours.append(smtp_rate(lab.smtp_port, n_smtp, "bob@example.com"))
                o, b = statistics.median(ours), statistics.median(bare)
                print(f"SMTP over one connection, store in {label}: maillab {o:.0f} msg/s, "
                      f"bare aiosmtpd {b:.0f} msg/s, ratio {o / b:.2f} (floor 0.4); "
                      f"{handler.count} + {len(lab.mailbox('bob'))} messages")
            finally:
                stop_bare()
                lab.stop()
        if parent is not None:
            shutil.rmtree(parent, ignore_errors=True)

    # POP3: RETR of n_pop messages in one session.
    lab = maillab.MailLab(ports="any").start()
    try:
        inbox = lab.store.account("bob").folder()
        for _ in range(n_pop):
            inbox.deliver(MESSAGE)
        results = []
        for _ in range(3):
            t = time.perf_counter()
            p = poplib.POP3(lab.host, lab.pop3_port)
            p.user("bob")
            p.pass_("builder")
            count, _size = p.stat()
            for i in range(1, count + 1):
                p.retr(i)
            p.quit()
            results.append(time.perf_counter() - t)
        print(f"POP3: login + RETR of {n_pop} messages in one session: median "
              f"{statistics.median(results) * 1000:.0f} ms ({n_pop / statistics.median(results):.0f} msg/s)")
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
