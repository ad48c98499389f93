"""What a private lab's check costs per connection: netlink sock_diag versus /proc/net/tcp.

Run: python bench/bench_privacy.py [--rounds 5] [--busy 2000]

Every connection a private lab accepts asks the kernel who owns the other end
(maillab.privacy). netlink asks for that one socket; /proc/net/tcp (the fallback) lists every
TCP socket of the machine, so its cost grows with a busy host. Both are measured in the same
run, in interleaved rounds, on a quiet table and with ``--busy`` extra loopback connections
open, beside the cost of the connection itself (connect + accept + close). The check must stay
well under the connection's own cost: a ratio over 1 is printed with FAIL.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from maillab.privacy import PeerCheck  # noqa: E402

CALLS = 200  # per round and contender


def connection_cost(listener: socket.socket) -> float:
    """Seconds per loopback connection: connect, accept, close both ends."""
    t = time.perf_counter()
    for _ in range(CALLS):
        client = socket.create_connection(listener.getsockname())
        conn, _addr = listener.accept()
        conn.close()
        client.close()
    return (time.perf_counter() - t) / CALLS


def check_cost(method: str, conn: socket.socket) -> float:
    check = PeerCheck(method)
    t = time.perf_counter()
    for _ in range(CALLS):
        check.uid(conn)
    return (time.perf_counter() - t) / CALLS


def open_many(listener: socket.socket, n: int) -> list[socket.socket]:
    """n idle loopback connections (2n rows in the kernel's TCP table)."""
    kept = []
    for _ in range(n):
        kept.append(socket.create_connection(listener.getsockname()))
        kept.append(listener.accept()[0])
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--busy", type=int, default=2000, help="extra connections for the busy table")
    args = parser.parse_args(argv)
    print(f"== privacy check per connection ({os.cpu_count()} cores, load %.2f %.2f %.2f)" % os.getloadavg())
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        client = socket.create_connection(listener.getsockname())
        conn, _addr = listener.accept()
        for label, extra in (("quiet table", 0), (f"busy table (+{args.busy} connections)", args.busy)):
            kept = open_many(listener, extra)
            rows = sum(len(Path(t).read_text().splitlines()) - 1 for t in ("/proc/net/tcp", "/proc/net/tcp6"))
            samples = {"connection itself": [], "netlink": [], "proc": []}
            for r in range(args.rounds):
                order = list(samples) if r % 2 == 0 else list(samples)[::-1]
                for name in order:
                    samples[name].append(connection_cost(listener) if name == "connection itself"
                                         else check_cost(name, conn))
            base = statistics.median(samples["connection itself"])
            print(f"\n{label}: {rows} rows in /proc/net/tcp{{,6}}")
            for name, values in samples.items():
                mid = statistics.median(values)
                ratio = mid / base
                flag = "  FAIL" if name != "connection itself" and ratio > 1 else ""
                print(f"  {name:18} {mid * 1e6:8.1f} us [{min(values) * 1e6:.1f}-{max(values) * 1e6:.1f}]"
                      f"  {ratio:5.2f}x the connection{flag}")
            for s in kept:
                s.close()
        conn.close()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
