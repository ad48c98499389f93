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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import maillab  # noqa: E402


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


def bare_tls_server(context):
    """A bare asyncio TLS server that greets and waits: the same handshake, nothing else."""
    loop = asyncio.new_event_loop()
    box, ready = {}, threading.Event()

    class Greeter(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(b"+OK hello\r\n")

    def run():
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(loop.create_server(Greeter, "127.0.0.1", 0, ssl=context))
        box["server"], box["port"] = server, server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()

    def stop():
        box["server"].close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    return box["port"], stop


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
