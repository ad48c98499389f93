"""The foundation beside its peers, measured in the same run: import, cold start, SMTP, POP3.

Run (as root, for Dovecot): python bench/bench_core.py [--quick] [--store DIR]

* ``import maillab`` beside ``import aiosmtpd.smtp``, each in a fresh interpreter
  (goal: at most 1.2x);
* cold start: a new ``python -m maillab serve`` process until every one of its mail services
  answers (greeting read; TLS ports after the handshake), beside a new Dovecot process until
  IMAP, POP3, IMAPS and POP3S answer (goal: at most 2x); then until the webmail's first page
  answers too (no peer);
* SMTP: 1 KB messages over one connection with smtplib, maillab (parse, Received header,
  Maildir delivery) beside a bare aiosmtpd with a counting handler, both on a loop thread of
  this process (goals: at least 0.6x and 1,000 msg/s);
* POP3: login and RETR of 500 messages in one session, maillab beside Dovecot's POP3.

Rounds alternate the two systems; figures are medians [min-max], each line ending with the load
average as it was printed (8 agents may share the 2 cores: compare ratios of one run, not figures
of two); FAIL marks a figure on the wrong side of its goal. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import poplib
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import maillab  # noqa: E402
from aiosmtpd.smtp import SMTP  # noqa: E402
from common import (at_least, at_most, header, interleaved, load, med, python_env, spread,  # noqa: E402
                    timed)
from peers import (MaillabServe, dovecot_all_services, dovecot_import, serve_in_thread,  # noqa: E402
                   wait_answering)

from maillab.imap.testing import Dovecot, dovecot_path  # noqa: E402

# 1 KB: a short e-mail as a client sends it.
MESSAGE = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: bench\r\n\r\n"
           + b"A line of a small message body, as in a short e-mail.\r\n" * 18)

IMPORT_GOAL, COLD_START_GOAL = 1.2, 2.0  # at most, times the peer
SMTP_RATIO_FLOOR, SMTP_RATE_FLOOR = 0.6, 1000  # at least


def row(label: str, ours: list[float], theirs: list[float], unit: str, scale: float,
        verdict: str, names=("maillab", "peer")) -> None:
    """One figure beside its peer's, with the verdict and the load average as it was measured
    (on a shared machine a ratio means little without it)."""
    print(f"{label:34} {names[0]} {spread(ours, scale):>22} {unit}   {names[1]} "
          f"{spread(theirs, scale):>22} {unit}   {verdict}   [{load()}]", flush=True)


# ----------------------------------------------------------------------------- import

_IMPORT = ("import time; t, c = time.perf_counter(), time.process_time(); import {0}; "
           "print(time.perf_counter() - t, time.process_time() - c)")


def import_seconds(module: str, cpu: list[float]) -> float:
    """Seconds ``import module`` takes in a fresh interpreter (the interpreter's own start
    is left out: it is the same for both); appends to ``cpu`` the CPU seconds it took."""
    out = subprocess.run([sys.executable, "-c", _IMPORT.format(module)], capture_output=True,
                         text=True, env=python_env(), check=True)
    wall, used = map(float, out.stdout.split())
    cpu.append(used)
    return wall


def bench_import(rounds: int) -> None:
    cpu = {"maillab": [], "aiosmtpd": []}
    for module in ("maillab", "aiosmtpd.smtp"):
        import_seconds(module, [])  # writes the bytecode caches once
    s = interleaved({"maillab": lambda: import_seconds("maillab", cpu["maillab"]),
                     "aiosmtpd": lambda: import_seconds("aiosmtpd.smtp", cpu["aiosmtpd"])}, rounds)
    ratio = med(s["maillab"]) / med(s["aiosmtpd"])
    row("import (fresh interpreter)", s["maillab"], s["aiosmtpd"], "ms", 1000,
        f"ratio {ratio:.2f}x (goal <= {IMPORT_GOAL}x) {at_most(ratio, IMPORT_GOAL)}",
        names=("maillab", "aiosmtpd.smtp"))
    ratio = med(cpu["maillab"]) / med(cpu["aiosmtpd"])
    row("  CPU time of the import", cpu["maillab"], cpu["aiosmtpd"], "ms", 1000,
        f"ratio {ratio:.2f}x (goal <= {IMPORT_GOAL}x) {at_most(ratio, IMPORT_GOAL)}",
        names=("maillab", "aiosmtpd.smtp"))


# ----------------------------------------------------------------------------- cold start

def cpu_of_tree(pid: int) -> float:
    """CPU seconds (user and system) a process and its descendants have used so far, the
    children that ended and were waited for included (Dovecot starts several processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            parents.setdefault(int(fields[1]), []).append(int(entry))
    todo, ticks = [pid], 0
    while todo:
        p = todo.pop()
        todo.extend(parents.get(p, []))
        if p in stats:  # utime, stime, cutime, cstime: fields 14-17 of /proc/PID/stat
            ticks += sum(int(x) for x in stats[p][11:15])
    return ticks / tick


def maillab_cold_start(with_webmail: list[float], cpu: list[float]) -> float:
    """Seconds from a new ``serve`` process to every mail service answering (what Dovecot's
    start is compared with); appends to ``cpu`` the CPU seconds the process used until then,
    and to ``with_webmail`` the time until the webmail's first page answers too (no peer:
    Dovecot has no webmail)."""
    lab = MaillabServe()
    try:
        endpoints = lab.endpoints()
        wait_answering(lab.host, [e for e in endpoints if e[1] != "http"])
        mail = time.perf_counter() - lab.started
        cpu.append(cpu_of_tree(lab.pid))
        wait_answering(lab.host, endpoints)
        with_webmail.append(time.perf_counter() - lab.started)
        return mail
    finally:
        lab.close()


def dovecot_cold_start(conf: Path, ports: dict[str, int], cpu: list[float]) -> float:
    t = time.perf_counter()
    proc = subprocess.Popen([dovecot_path(), "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_answering("127.0.0.1", [(ports["imap"], "greeting"), (ports["pop3"], "greeting"),
                                     (ports["imaps"], "tls-greeting"), (ports["pop3s"], "tls-greeting")])
        took = time.perf_counter() - t
        cpu.append(cpu_of_tree(proc.pid))
        return took
    finally:
        proc.terminate()
        proc.wait(30)


def bench_cold_start(rounds: int, dv: Dovecot, ports: dict[str, int]) -> None:
    with_webmail: list[float] = []
    cpu: dict[str, list[float]] = {"maillab": [], "dovecot": []}
    contenders = {"maillab": lambda: maillab_cold_start(with_webmail, cpu["maillab"]),
                  "dovecot": lambda: dovecot_cold_start(dv.dir / "dovecot.conf", ports,
                                                        cpu["dovecot"])}
    for start in contenders.values():
        start()  # once untimed: bytecode caches written, programs in the page cache
    with_webmail.clear()
    cpu["maillab"].clear()
    cpu["dovecot"].clear()
    s = interleaved(contenders, rounds)
    ratio = med(s["maillab"]) / med(s["dovecot"])
    lab = MaillabServe()
    mail_services = len([e for e in lab.endpoints() if e[1] != "http"])
    lab.close()
    row(f"cold start ({mail_services} mail services / 4)", s["maillab"], s["dovecot"], "ms", 1000,
        f"ratio {ratio:.2f}x (goal <= {COLD_START_GOAL}x) {at_most(ratio, COLD_START_GOAL)}",
        names=("maillab", "Dovecot"))
    row("  CPU time until then (all processes)", cpu["maillab"], cpu["dovecot"], "ms", 1000,
        f"ratio {med(cpu['maillab']) / med(cpu['dovecot']):.2f}x", names=("maillab", "Dovecot"))
    print(f"  and the webmail's first page too: {spread(with_webmail, 1000)} ms (no peer; "
          "its application loads when a browser first connects)")
    starts = []
    for _ in range(rounds):
        lab = maillab.MailLab(ports="any")
        starts.append(timed(lab.start)())
        lab.stop()
    print(f"  of which MailLab().start() in a running interpreter: {spread(starts, 1000)} ms")


# ----------------------------------------------------------------------------- SMTP

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


def smtp_rate(port: int, n: int, rcpt: str, cpu: list[float]) -> float:
    """Messages per second over one connection; appends to ``cpu`` the CPU seconds this
    process (client and server threads) spent per message (the client's share is the same
    for both servers, and CPU time is less disturbed by other processes than the clock)."""
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.ehlo("bench.example")
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            s.sendmail("stranger@elsewhere.example", [rcpt], MESSAGE)
        cpu.append((time.process_time() - c) / n)
        return n / (time.perf_counter() - t)


def bench_smtp(rounds: int, n: int, store_parent: str | None) -> None:
    port, handler, stop_bare = bare_aiosmtpd()
    with tempfile.TemporaryDirectory(dir=store_parent) as root:
        lab = maillab.MailLab(ports="any", root=root).start()
        try:
            cpu = {"maillab": [], "aiosmtpd": []}
            s = interleaved({"maillab": lambda: smtp_rate(lab.smtp_port, n, "bob@example.com",
                                                          cpu["maillab"]),
                             "aiosmtpd": lambda: smtp_rate(port, n, "bob@example.com",
                                                           cpu["aiosmtpd"])}, rounds)
            delivered = len(lab.mailbox("bob"))
        finally:
            stop_bare()
            lab.stop()
    ratio = med(s["maillab"]) / med(s["aiosmtpd"])
    verdicts = (f"ratio {ratio:.2f} (floor {SMTP_RATIO_FLOOR}) {at_least(ratio, SMTP_RATIO_FLOOR)}; "
                f"{med(s['maillab']):.0f} msg/s (floor {SMTP_RATE_FLOOR}) "
                f"{at_least(med(s['maillab']), SMTP_RATE_FLOOR)}")
    row(f"SMTP 1 KB x {n}, one connection", s["maillab"], s["aiosmtpd"], "msg/s", 1, verdicts,
        names=("maillab", "bare aiosmtpd"))
    row("  CPU per message (this process)", cpu["maillab"], cpu["aiosmtpd"], "us", 1e6,
        f"ratio {med(cpu['maillab']) / med(cpu['aiosmtpd']):.2f}x", names=("maillab", "bare aiosmtpd"))
    print(f"  stored in {store_parent or tempfile.gettempdir()}; delivered {delivered} (maillab), "
          f"counted {handler.count} (aiosmtpd), {rounds} x {n} each")


# ----------------------------------------------------------------------------- POP3

def pop3_session(port: int, user: str, password: str) -> None:
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    p.user(user)
    p.pass_(password)
    count, _size = p.stat()
    for i in range(1, count + 1):
        p.retr(i)
    p.quit()


def bench_pop3(rounds: int, n: int, dv: Dovecot, ports: dict[str, int]) -> None:
    lab = maillab.MailLab(ports="any").start()
    proc = subprocess.Popen([dovecot_path(), "-F", "-c", str(dv.dir / "dovecot.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        inbox = lab.store.account("bob").folder()
        for _ in range(n):
            inbox.deliver(MESSAGE)
        wait_answering("127.0.0.1", [(ports["pop3"], "greeting")])
        s = interleaved({"maillab": timed(lambda: pop3_session(lab.pop3_port, "bob", "builder")),
                         "dovecot": timed(lambda: pop3_session(ports["pop3"], "alice", dv.passwords["alice"]))},
                        rounds)
    finally:
        lab.stop()
        proc.terminate()
        proc.wait(30)
    row(f"POP3 login + RETR x {n}", s["maillab"], s["dovecot"], "ms", 1000,
        f"ratio {med(s['maillab']) / med(s['dovecot']):.2f}x (no goal)", names=("maillab", "Dovecot"))


def prepared_dovecot(n_pop: int) -> tuple[Dovecot, dict[str, int]]:
    """A private Dovecot with ``n_pop`` messages in alice's INBOX, stopped, its config rewritten
    for IMAP, POP3, IMAPS and POP3S with a certificate (as a provider runs it)."""
    import trustme
    dv = Dovecot()
    dovecot_import(dv, "INBOX", [MESSAGE] * n_pop)
    dv.proc.terminate()
    dv.proc.wait(30)
    cert = trustme.CA().issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(dv.dir / "cert.pem"))
    cert.private_key_pem.write_to_path(str(dv.dir / "key.pem"))
    return dv, dovecot_all_services(dv, str(dv.dir / "cert.pem"), str(dv.dir / "key.pem"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test)")
    ap.add_argument("--store", help="a folder on the disk to measure SMTP delivery on "
                                    "(default: the temporary folder)")
    args = ap.parse_args()
    rounds, start_rounds, import_rounds, n_smtp, n_pop = (
        (3, 3, 5, 300, 100) if args.quick else (7, 11, 21, 2000, 500))
    have_dovecot = dovecot_path() is not None and os.geteuid() == 0

    header(f"maillab {maillab.__version__}: import, cold start, SMTP, POP3 beside their peers")
    bench_import(import_rounds)
    bench_smtp(rounds, n_smtp, args.store)
    if not have_dovecot:
        print("cold start and POP3: FAIL, no peer (Dovecot needs the dovecot binary and root)")
        return
    dv, ports = prepared_dovecot(n_pop)
    try:
        bench_cold_start(start_rounds, dv, ports)
        bench_pop3(rounds, n_pop, dv, ports)
    finally:
        dv.close()
    header("done")


if __name__ == "__main__":
    main()
