"""Session cells: the time of a typical %%smtp, %%pop3 and %%imap cell, beside the stdlib client.

Run: python bench/bench_sessions.py [--quick]
Each round runs the same session against the same lab twice, in turns: once as a session cell
(maillab.sessions.run_session, with the HTML and text the notebook shows) and once with
smtplib/poplib/imaplib (the peer: the least a client can cost here). Figures are medians
[min-max] in milliseconds; FAIL marks a cell slower than its floor: 4 times its peer, or
250 ms (a learner waits for the output). The first cell of a kernel also imports the reply
explanations (maillab.widgets, ipywidgets): measured once, in a fresh process.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import poplib
import smtplib
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

import maillab  # noqa: E402
from maillab.sessions import run_session  # noqa: E402

SMTP_CELL = """EHLO laptop.example.com
MAIL FROM:<bob@example.com>
RCPT TO:<alice@example.com>
DATA
Subject: benchmark

Hello Alice!
.
QUIT"""
POP3_CELL = "USER alice\nPASS wonderland\nLIST\nRETR 1\nQUIT"
IMAP_CELL = "a1 LOGIN alice wonderland\na2 SELECT INBOX\na3 FETCH 1 BODY.PEEK[]\na4 LOGOUT"
MESSAGE = "Subject: benchmark\r\n\r\nHello Alice!\r\n"
RATIO_FLOOR, MS_FLOOR = 4.0, 250.0


def cell(protocol: str, text: str, lab) -> None:
    result = run_session(protocol, "example.com", text, lab=lab)
    assert result.ok, result.text
    result._repr_html_(), result.text  # what the notebook shows is part of the cost


def stdlib_smtp(lab) -> None:
    with smtplib.SMTP(lab.host, lab.smtp_port, local_hostname="laptop.example.com") as s:
        s.sendmail("bob@example.com", ["alice@example.com"], MESSAGE)


def stdlib_pop3(lab) -> None:
    p = poplib.POP3(lab.host, lab.pop3_port)
    p.user("alice")
    p.pass_("wonderland")
    p.list()
    p.retr(1)
    p.quit()


def stdlib_imap(lab) -> None:
    m = imaplib.IMAP4(lab.host, lab.imap_port)
    m.login("alice", "wonderland")
    m.select("INBOX")
    m.fetch("1", "(BODY.PEEK[])")
    m.logout()


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t) * 1000


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f}-{max(values):.1f}]"


def first_cell_ms() -> tuple[float, float]:
    """The first and the second session cell of a fresh process (the first imports more)."""
    program = (
        "import time, maillab\nfrom maillab.sessions import run_session\n"
        "lab = maillab.MailLab(ports='any').start()\nout = []\n"
        "for _ in range(2):\n    t = time.perf_counter()\n"
        "    r = run_session('smtp', None, 'EHLO me\\nQUIT', lab=lab)\n"
        "    r._repr_html_()\n    out.append((time.perf_counter() - t) * 1000)\n"
        "lab.stop()\nprint(out[0], out[1])")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    rounds = 5 if ap.parse_args().quick else 31
    print(f"session cells, {rounds} rounds; load average {os.getloadavg()[0]:.2f}")
    lab = maillab.MailLab(ports="any").start()
    try:
        stdlib_smtp(lab)  # one message for POP3 and IMAP to fetch, and a warm lab
        cell("smtp", SMTP_CELL, lab)
        cases = [("%%smtp: EHLO, MAIL, RCPT, DATA, QUIT", ("smtp", SMTP_CELL), stdlib_smtp),
                 ("%%pop3: USER, PASS, LIST, RETR, QUIT", ("pop3", POP3_CELL), stdlib_pop3),
                 ("%%imap: LOGIN, SELECT, FETCH, LOGOUT", ("imap", IMAP_CELL), stdlib_imap)]
        times = {label: ([], []) for label, _c, _p in cases}
        for _ in range(rounds):
            for label, (protocol, text), peer in cases:
                ours, theirs = times[label]
                ours.append(timed(cell, protocol, text, lab))
                theirs.append(timed(peer, lab))
        print(f"{'':40} {'cell ms':>22} {'stdlib ms':>22}  ratio")
        for label, (ours, theirs) in times.items():
            ratio = statistics.median(ours) / statistics.median(theirs)
            fail = ratio > RATIO_FLOOR or statistics.median(ours) > MS_FLOOR
            print(f"{label:40} {spread(ours):>22} {spread(theirs):>22}  {ratio:4.2f}"
                  + ("  FAIL" if fail else ""))
    finally:
        lab.stop()
    first, second = first_cell_ms()
    print(f"first cell of a fresh kernel (EHLO, QUIT): {first:.1f} ms; the next one: {second:.1f} ms"
          + ("  FAIL" if first > 1000 else ""))
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
