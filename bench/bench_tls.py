"""TLS handshakes per second on the lab's implicit-TLS ports, beside a bare TLS server.

Run: python bench/bench_tls.py [--quick]

The peer is a bare asyncio TLS server with the same certificate that sends a one-line greeting:
the same handshake and nothing else. Each round measures it and the lab's SMTPS, POP3S and
IMAPS (connect, handshake, read the greeting, close; the order reverses every round), so the
ratio shows what the servers add on top of TLS itself. Medians [min-max]; FAIL under the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import maillab  # noqa: E402
from common import at_least, header, interleaved, med, spread  # noqa: E402
from peers import serve_in_thread  # noqa: E402

FLOOR = 0.8  # each service at least this share of the bare server's handshakes per second


def handshakes(port: int, context, n: int, cpu: list[float]) -> float:
    """Connect, finish the TLS handshake, read the greeting, close: per second. Appends to
    ``cpu`` the CPU seconds this process (client and server) spent per connection: less
    disturbed by other processes than the wall clock, and the client's share is the same."""
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                s.recv(200)
    cpu.append((time.process_time() - c) / n)
    return n / (time.perf_counter() - t)


class Greeter(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(b"+OK hello\r\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test)")
    args = ap.parse_args()
    rounds, n = (3, 30) if args.quick else (9, 200)

    lab = maillab.MailLab(ports="any").start()
    try:
        ctx = lab.client_context()
        bare_port, stop_bare = serve_in_thread(lambda loop: Greeter,
                                               ssl=lab.ca.server_context(lab.hostname()))
        try:
            header(f"TLS handshakes per second, {rounds} rounds of {n} connections each")
            ports = {"bare TLS server": bare_port,
                     **{service: lab.port(service) for service in ("smtps", "pop3s", "imaps")}}
            cpu: dict[str, list[float]] = {name: [] for name in ports}
            rates = interleaved({name: (lambda p=port, c=cpu[name]: handshakes(p, ctx, n, c))
                                 for name, port in ports.items()}, rounds)
        finally:
            stop_bare()
    finally:
        lab.stop()
    base = med(rates["bare TLS server"])
    for name, samples in rates.items():
        verdict = "" if name == "bare TLS server" else (
            f"ratio {med(samples) / base:.2f} (floor {FLOOR}) {at_least(med(samples) / base, FLOOR)}")
        print(f"{name:16} {spread(samples, 1, '{:.0f}'):>18} handshakes/s, "
              f"CPU {spread(cpu[name], 1e6, '{:.0f}'):>16} us/connection   {verdict}")
    header("done")


if __name__ == "__main__":
    main()
