"""IMAP benchmarks: maillab beside a private Dovecot, measured in the same run.

Run (as root, for Dovecot): python bench/bench_imap.py [--quick]

* ``FETCH 1:* (RFC822)`` of 1,000 messages (floor: maillab within 4x of Dovecot);
* 500 APPENDs from plain imaplib (floor: within 2x of Dovecot);
* SELECT and SEARCH on folders of 2,500, 5,000 and 10,000 messages (the cost must grow
  linearly: the 10,000 figure about 4x the 2,500 one, not 16x).

Each figure is the best of several rounds. The client side is the same for both servers.
maillab's server runs in a process of its own here, as Dovecot does: in the same process the
client's Python would compete with the server for the GIL (in a lab, the kernel's code does).
Nothing here asserts; floors are printed as "ok"/"BELOW FLOOR" for people to read.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from maillab.imap.testing import ACCOUNTS, DOMAIN, Dovecot, RawClient, dovecot_path  # noqa: E402
from maillab.store import Store, to_crlf  # noqa: E402

SRC = str(Path(__file__).resolve().parent.parent / "src")


class MaillabProcess:
    """maillab's IMAP server (ImapTestServer) on an existing store folder, in a child process."""

    def __init__(self, root: str):
        import subprocess
        code = ("import sys; sys.path.insert(0, %r)\n"
                "from maillab.imap.testing import ImapTestServer\n"
                "s = ImapTestServer(root=%r)\nprint(s.port, flush=True)\nsys.stdin.read()\ns.close()\n"
                % (SRC, root))
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())
        self.host = "127.0.0.1"
        self.passwords = dict(ACCOUNTS)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def message(i: int) -> bytes:
    who = ["bob", "carol", "dave", "erin"][i % 4]
    return to_crlf(
        f"From: {who.title()} <{who}@example.com>\nTo: alice@example.com\n"
        f"Subject: message number {i}\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
        f"Message-ID: <{i}@example.com>\n\n".encode()
        + b"A line of a small message body, as in a short e-mail.\n" * 20)


def median_time(fn, rounds: int) -> float:
    """The best of ``rounds`` runs: on a shared, loaded machine the minimum is the figure least
    disturbed by other processes (medians here swung by 3x between runs)."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# ----------------------------------------------------------------------------- filling folders

def fill_maillab(store: Store, folder: str, n: int) -> None:
    acct = store.account("alice")
    if not acct.has_folder(folder):
        acct.create_folder(folder)
    f = acct.folder(folder)
    for i in range(n):
        f.deliver(message(i))


def fill_dovecot(dv: Dovecot, folder: str, n: int) -> None:
    """Write the files straight into the Maildir (as Dovecot's own delivery would), owned by nobody."""
    M = dv.login()
    if folder != "INBOX":
        M.create(folder)
    M.logout()
    base = dv.dir / "mail" / "alice"
    path = base if folder == "INBOX" else base / ("." + folder)
    new = path / "new"
    for i in range(n):
        p = new / f"{1700000000 + i}.M{i}P1.bench"
        p.write_bytes(message(i).replace(b"\r\n", b"\n"))
        shutil.chown(p, "nobody", "nogroup")


# ----------------------------------------------------------------------------- measurements

def fetch_all(server, folder: str, rounds: int) -> float:
    c = RawClient(server.host, server.port)
    c.command(f"LOGIN alice {server.passwords['alice']}")
    c.command(f"SELECT {folder}")
    c.command("FETCH 1:* (RFC822)")  # warm up (and set \Seen once)
    t = median_time(lambda: c.command("FETCH 1:* (RFC822)"), rounds)
    c.close()
    return t


def fetch_all_fresh(server, folder: str, rounds: int) -> float:
    """The same FETCH as the first command on a new connection each time. (maillab's transcript
    keeps at most 20,000 lines per connection and side: later FETCHes on one connection record
    nothing, so fetch_all alone would leave the transcript's cost out.)"""
    times = []
    for _ in range(rounds):
        c = RawClient(server.host, server.port)
        c.command(f"LOGIN alice {server.passwords['alice']}")
        c.command(f"SELECT {folder}")
        t = time.perf_counter()
        c.command("FETCH 1:* (RFC822)")
        times.append(time.perf_counter() - t)
        c.close()
    return min(times)


def appends(server, n: int) -> float:
    M = imaplib.IMAP4(server.host, server.port)
    M.login("alice", server.passwords["alice"])
    M.create("Appended")
    msg = message(1)
    t = time.perf_counter()
    for _ in range(n):
        M.append("Appended", None, None, msg)
    elapsed = time.perf_counter() - t
    M.logout()
    return elapsed


def select_search(server, folder: str, rounds: int) -> dict[str, float]:
    c = RawClient(server.host, server.port)
    c.command(f"LOGIN alice {server.passwords['alice']}")
    out = {}
    t = time.perf_counter()
    c.command(f"EXAMINE {folder}")
    out["first SELECT"] = time.perf_counter() - t
    out["SELECT"] = median_time(lambda: c.command(f"EXAMINE {folder}"), rounds * 3)
    out["SEARCH UNSEEN"] = median_time(lambda: c.command("SEARCH UNSEEN"), rounds * 3)
    out["SEARCH FROM"] = median_time(lambda: c.command("SEARCH FROM carol"), rounds)
    out["SEARCH BODY"] = median_time(lambda: c.command('SEARCH BODY "short e-mail"'), max(1, rounds // 2))
    c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    args = ap.parse_args()
    n_fetch, n_append, rounds = (200, 100, 3) if args.quick else (1000, 500, 5)
    sizes = (500, 1000, 2000) if args.quick else (2500, 5000, 10000)

    have_dovecot = dovecot_path() is not None and os.geteuid() == 0
    if not have_dovecot:
        print("Dovecot not available (needs the dovecot binary and root): maillab figures only.\n")
    import tempfile
    tmp = tempfile.TemporaryDirectory(prefix="maillab-bench-")
    print(f"Filling folders (FETCH: {n_fetch}, SELECT/SEARCH: {', '.join(map(str, sizes))}) ...",
          flush=True)
    store = Store(tmp.name, hash_n=2**10)
    store.add_account("alice", ACCOUNTS["alice"], DOMAIN)
    fill_maillab(store, "Fetch", n_fetch)
    for n in sizes:
        fill_maillab(store, f"Size{n}", n)
    store.close()
    servers = {"maillab": MaillabProcess(tmp.name)}  # its first SELECT reads the folder from disk
    if have_dovecot:
        servers["dovecot"] = Dovecot()
    try:
        if have_dovecot:
            fill_dovecot(servers["dovecot"], "Fetch", n_fetch)
            for n in sizes:
                fill_dovecot(servers["dovecot"], f"Size{n}", n)

        rows = []
        fetch = {name: fetch_all(srv, "Fetch", rounds) for name, srv in servers.items()}
        rows.append((f"FETCH 1:* (RFC822), {n_fetch} messages", fetch, 4))
        fresh = {name: fetch_all_fresh(srv, "Fetch", rounds) for name, srv in servers.items()}
        rows.append(("  the same, first command of a connection", fresh, 4))
        app = {name: appends(srv, n_append) for name, srv in servers.items()}
        rows.append((f"{n_append} APPENDs from imaplib", app, 2))

        print()
        print(f"{'':44} {'maillab':>10} {'dovecot':>10} {'ratio':>7}  floor")
        for label, figures, floor in rows:
            m, d = figures["maillab"], figures.get("dovecot")
            ratio = m / d if d else float("nan")
            verdict = "" if d is None else ("ok" if ratio <= floor else "BELOW FLOOR")
            dtext = f"{d * 1000:8.1f}ms" if d is not None else f"{'-':>10}"
            print(f"{label:44} {m * 1000:8.1f}ms {dtext} {ratio:6.2f}x  <= {floor}x {verdict}")

        print()
        print("SELECT and SEARCH by folder size (best ms; growth = largest / smallest, linear = "
              f"{sizes[-1] / sizes[0]:.0f}x)")
        results = {name: {n: select_search(srv, f"Size{n}", rounds) for n in sizes}
                   for name, srv in servers.items()}
        ops = list(next(iter(results["maillab"].values())).keys())
        header = f"{'':16}" + "".join(f"{name[:7]} {n:>6}  " for name in results for n in sizes)
        print(header + "  growth " + " ".join(f"{name[:7]:>8}" for name in results))
        for op in ops:
            line = f"{op:16}"
            for name in results:
                for n in sizes:
                    line += f"{results[name][n][op] * 1000:13.1f}  "
            growth = [results[name][sizes[-1]][op] / results[name][sizes[0]][op] for name in results]
            line += "        " + " ".join(f"{g:7.1f}x" for g in growth)
            # linear: at most 1.5 times the size ratio (timer noise and caches aside)
            line += "  linear" if growth[0] <= 1.5 * sizes[-1] / sizes[0] else "  NOT LINEAR?"
            print(line)
        if "dovecot" in results:
            print()
            print(f"{'ratio maillab/dovecot at ' + str(sizes[-1]):30}" + "  ".join(
                f"{op}: {results['maillab'][sizes[-1]][op] / results['dovecot'][sizes[-1]][op]:.1f}x"
                for op in ops))
        core_growth(tmp.name, sizes)
    finally:
        for srv in servers.values():
            srv.close()
        tmp.cleanup()


def core_growth(root: str, sizes) -> None:
    """The same SELECT and SEARCH on the sans-IO core in this process: no sockets, no client,
    no other process. Over the network the small figures swing with the machine's load (and
    the server process's garbage collector); here the cost per message can be read directly."""
    from maillab.imap.core import ImapSession
    from maillab.net import ServerContext
    from maillab.transcript import Recorder

    store = Store(root, hash_n=2**10)
    ctx = ServerContext(store, Recorder(), "mail.example.com", DOMAIN)
    ops = {"SELECT": b"c EXAMINE {f}\r\n", "SEARCH UNSEEN": b"c SEARCH UNSEEN\r\n",
           "SEARCH FROM": b"c SEARCH FROM carol\r\n"}
    per = {op: {} for op in ops}
    for n in sizes:
        session = ImapSession(ctx)
        session.greeting()
        folder = f"Size{n}".encode()
        session.receive_data(b"a LOGIN alice " + ACCOUNTS["alice"].encode() + b"\r\n"
                             b"b EXAMINE " + folder + b"\r\n")
        session.data_to_send()
        for op, cmd in ops.items():
            cmd = cmd.replace(b"{f}", folder)
            best = float("inf")
            for _ in range(7):
                t = time.perf_counter()
                session.receive_data(cmd)
                session.data_to_send()
                best = min(best, time.perf_counter() - t)
            per[op][n] = best / n
    print()
    print("The IMAP core in-process: microseconds per message (linear = the same at every size)")
    print(f"{'':16}" + "".join(f"{n:>10}" for n in sizes) + "   growth of total cost")
    for op, figures in per.items():
        growth = figures[sizes[-1]] * sizes[-1] / (figures[sizes[0]] * sizes[0])
        print(f"{op:16}" + "".join(f"{figures[n] * 1e6:10.2f}" for n in sizes) +
              f"   {growth:.1f}x for {sizes[-1] / sizes[0]:.0f}x the messages")
    store.close()


if __name__ == "__main__":
    main()
