"""TLS benchmarks: start-up with every TLS listener, handshakes per second per protocol.

Run: python bench/bench_tls.py [--quick]
The peer for handshakes is a bare asyncio TLS echo server with the same certificate, measured
in the same run, so the ratio shows what our servers add on top of the handshake itself.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import maillab  # noqa: E402
from peers import serve_in_thread  # noqa: E402


def bench_start(rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        lab = maillab.MailLab(ports="any").start()
        times.append(time.perf_counter() - t)
        lab.stop()
    return times


def handshakes(port: int, context, n: int, first_line: bool) -> float:
    """Connect, finish the TLS handshake, read the greeting, close: per second."""
    t = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                if first_line:
                    s.recv(200)
    return n / (time.perf_counter() - t)


class Greeter(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(b"+OK hello\r\n")


def bare_tls_server(context):
    """A bare asyncio TLS server that greets and waits: the same handshake, nothing else."""
    return serve_in_thread(lambda loop: Greeter, ssl=context)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, n = (3, 30) if args.quick else (21, 200)
    times = bench_start(rounds)
    lab = maillab.MailLab(ports="any").start()
    print(f"start() with {len(lab.services)} services (7 per domain incl. SMTPS, submission, POP3S, "
          f"IMAPS): median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
          f"over {rounds} starts (floor 250 ms)")
    try:
        ctx = lab.client_context()
        bare_port, stop_bare = bare_tls_server(lab.ca.server_context(lab.hostname()))
        try:
            base = statistics.median(handshakes(bare_port, ctx, n, True) for _ in range(3))
            print(f"bare asyncio TLS server: {base:.0f} handshakes/s")
            for service in ("smtps", "pop3s", "imaps"):
                rate = statistics.median(handshakes(lab.port(service), ctx, n, True) for _ in range(3))
                print(f"{service}: {rate:.0f} handshakes/s (greeting read), ratio to bare {rate / base:.2f}")
        finally:
            stop_bare()
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
