"""maillab.start(): ports, re-running, stopping cleanly, two labs at once, serve, persistence."""

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import maillab
from conftest import require_tool

SRC = str(Path(__file__).resolve().parent.parent / "src")
# The maillab these tests import (the one child processes must import too).
MAILLAB_SRC = str(Path(maillab.__file__).resolve().parent.parent)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_start_returns_lab_with_ports_accounts_and_display():
    lab = maillab.start(ports="any")
    try:
        assert lab.running
        assert {a.login for a in lab.accounts} == {"alice", "bob", "john", "maria"}
        alice = lab.account("alice@example.com")
        assert (alice.login, alice.password, alice.domain) == ("alice", "wonderland", "example.com")
        assert lab.domains == ["example.com", "example.net"]
        ports = [lab.smtp_port, lab.pop3_port, lab.port("smtp", "example.net")]
        assert len(set(ports)) == 3 and all(listening(p) for p in ports)
        html = lab._repr_html_()
        for text in (str(lab.smtp_port), "25", str(lab.pop3_port), "110", "wonderland", "mail.example.net"):
            assert text in html
        assert "stands for 25" in repr(lab)
    finally:
        lab.stop()


def test_rerunning_start_replaces_the_previous_lab():
    first = maillab.start(ports="any")
    old_port, old_root = first.smtp_port, first.store.root
    second = maillab.start(ports="any")
    try:
        assert not first.running and second.running
        if old_port in [s.port for s in second.services]:
            # The new lab got the old number: whoever answers there must be the new lab.
            t0 = time.time()
            with socket.create_connection(("127.0.0.1", old_port), timeout=5) as c:
                assert c.recv(200).endswith(b"\r\n")
            assert len(second.transcript(since=t0).connections()) == 1
            assert len(first.transcript(since=t0)) == 0
        else:
            assert not listening(old_port)
        assert not old_root.exists()  # the temporary store went with the old lab
        with smtplib.SMTP("127.0.0.1", second.smtp_port) as s:
            assert s.noop()[0] == 250
    finally:
        second.stop()


def test_stop_closes_ports_connections_and_thread():
    before = set(threading.enumerate())
    lab = maillab.start(ports="any")
    ports = [s.port for s in lab.services]
    idle = socket.create_connection(("127.0.0.1", lab.smtp_port))  # a client that never leaves
    idle.recv(100)
    lab.stop()
    idle.settimeout(3)
    assert idle.recv(100) == b""  # the server closed it
    idle.close()
    assert not any(listening(p) for p in ports)
    assert set(threading.enumerate()) <= before
    lab.stop()  # stopping twice is harmless


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wanted_port_when_free_otherwise_any():
    wanted = free_port()
    with maillab.MailLab(ports={"smtp": wanted}) as lab:
        assert lab.smtp_port == wanted
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        busy = taken.getsockname()[1]
        with maillab.MailLab(ports={"smtp": busy}) as lab:
            assert lab.smtp_port != busy  # never a failure because a port is taken
            assert listening(lab.smtp_port)
    finally:
        taken.close()


def test_mnemonic_ports_are_the_default_plan():
    lab = maillab.MailLab()
    assert [lab._wanted_port(p, 0) for p in ("smtp", "pop3", "imap", "submission", "smtps",
                                              "pop3s", "imaps")] == [2525, 1110, 1143, 2587, 2465,
                                                                     1995, 1993]
    assert lab._wanted_port("smtp", 1) == 2526  # the second domain's server


def test_persistent_store_survives_restart(tmp_path):
    root = tmp_path / "mail"
    with maillab.MailLab(ports="any", root=root) as lab:
        with smtplib.SMTP("127.0.0.1", lab.smtp_port) as s:
            s.sendmail("x@elsewhere.example", ["bob@example.com"], b"Subject: kept\r\n\r\nx\r\n")
        uid = lab.mailbox("bob")[0].uid
    assert root.exists()
    with maillab.MailLab(ports="any", root=root) as lab:
        assert [m.subject for m in lab.mailbox("bob")] == ["kept"]
        with smtplib.SMTP("127.0.0.1", lab.smtp_port) as s:
            s.login("bob", "builder")
            s.sendmail("bob@example.com", ["bob@example.com"], b"Subject: second\r\n\r\nx\r\n")
        assert lab.mailbox("bob")[-1].uid == uid + 1


SCRIPT = textwrap.dedent("""
    import json, smtplib, sys, time
    sys.path.insert(0, {src!r})
    import maillab
    lab = maillab.start()
    with smtplib.SMTP("127.0.0.1", lab.smtp_port) as s:
        s.sendmail("x@elsewhere.example", ["bob@example.com"], b"Subject: hi\\r\\n\\r\\nx\\r\\n")
    print(json.dumps({{"smtp": lab.smtp_port, "pop3": lab.pop3_port,
                       "n": len(lab.mailbox("bob"))}}), flush=True)
    sys.stdin.readline()
    lab.stop()
""")


def test_two_labs_in_two_processes_at_once():
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT.format(src=SRC)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        results = [json.loads(p.stdout.readline()) for p in procs]
        assert results[0]["smtp"] != results[1]["smtp"]
        assert results[0]["pop3"] != results[1]["pop3"]
        assert all(r["n"] == 1 for r in results)  # each lab has its own store
    finally:
        for p in procs:
            p.communicate("\n", timeout=20)
        assert [p.returncode for p in procs] == [0, 0]


def test_python_m_maillab_serve_and_ctrl_c(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([sys.executable, "-m", "maillab", "serve", "--ports", "any"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out = []
        while "ready" not in (line := proc.stdout.readline()):
            assert line, proc.stderr.read()
            out.append(line)
        text = "".join(out)
        assert "alice@example.com / wonderland" in text
        def port_of(protocol, host):
            line = next(l for l in out if l.strip().startswith(protocol) and host in l)
            return int(line.split("port")[1].split()[0])

        port = port_of("SMTP", "mail.example.com")
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.login("alice", "wonderland")
            s.sendmail("alice@example.com", ["john@example.net"], b"Subject: via serve\r\n\r\nx\r\n")
        # real clients against the served lab: swaks sends, curl reads over POP3 at john's provider
        swaks, curl = require_tool("swaks"), require_tool("curl")
        sent = subprocess.run([swaks, "-s", "127.0.0.1", "-p", str(port), "-f", "alice@example.com",
                               "-t", "john@example.net", "--auth", "PLAIN", "-au", "alice",
                               "-ap", "wonderland", "--header", "Subject: swaks via serve",
                               "--silent", "2"], capture_output=True, timeout=30)
        assert sent.returncode == 0, sent.stderr
        pop3 = port_of("POP3", "mail.example.net")
        deadline = time.time() + 10
        while True:  # relaying is asynchronous: poll john's mailbox like a mail client would
            listing = subprocess.run([curl, "-sS", "-m", "10", f"pop3://127.0.0.1:{pop3}/",
                                      "-u", "john:postman"], capture_output=True, text=True)
            if len(listing.stdout.splitlines()) >= 2 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert len(listing.stdout.splitlines()) == 2, listing
        second = subprocess.run([curl, "-sS", "-m", "10", f"pop3://127.0.0.1:{pop3}/2",
                                 "-u", "john:postman"], capture_output=True, text=True)
        assert "Subject: swaks via serve" in second.stdout
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert "stopped" in proc.stdout.read()
        assert not listening(port)
    finally:
        proc.kill()


# ---------------------------------------------------------------- resources (#10)

CHILD_LAB = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, {src!r})
    resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
    import maillab
    lab = maillab.MailLab(ports="any").start()
    print(json.dumps({{"smtp": lab.smtp_port, "pop3": lab.pop3_port, "imap": lab.imap_port,
                       "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                       "limit": lab.options.get("max_connections")}}), flush=True)
    sys.stdin.readline()
    lab.stop()
    print(str(lab.log()).count("Traceback"), flush=True)
""")


def child_lab(soft: int, hard: int) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD_LAB.format(src=MAILLAB_SRC, soft=soft, hard=hard)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, json.loads(line)


def test_a_lab_raises_its_open_file_limit_where_allowed():
    proc, info = child_lab(512, 4096)
    try:
        assert info["nofile"] == 4096
    finally:
        proc.communicate("\n", timeout=30)


def test_idle_connections_cannot_exhaust_the_open_files():
    # 256 files and no way to raise the limit: about 1,000 idle clients once stopped every
    # service of a lab with 1,024.
    proc, info = child_lab(256, 256)
    idle = []
    try:
        for _ in range(300):
            c = socket.create_connection(("127.0.0.1", info["smtp"]), timeout=5)
            idle.append(c)
        for port, first in ((info["pop3"], b"+OK"), (info["imap"], b"* OK")):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as other:
                assert other.recv(200).startswith(first)  # the other services still answer
        greetings = [c.recv(200) for c in idle]
        assert sum(g.startswith(b"220 ") for g in greetings) == info["limit"] < 256 // 2
        assert all(g.startswith(b"421 4.7.0") for g in greetings if not g.startswith(b"220 "))
    finally:
        for c in idle:
            c.close()
        out, err = proc.communicate("\n", timeout=30)
    assert out.strip() == "0" and "Traceback" not in err  # no errors, in the log or on stderr


SERVER_ERRORS = textwrap.dedent("""
    import asyncio, logging, smtplib, sys
    sys.path.insert(0, {src!r})
    import maillab
    lab = maillab.MailLab(ports="any").start()
    async def failing():
        raise RuntimeError("a task of the lab's loop failed")
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), lab._loop).result()
    lab._loop.call_soon_threadsafe(lambda: lab._loop.create_task(failing()))
    with smtplib.SMTP("127.0.0.1", lab.smtp_port) as s:
        for i in range(7):
            s.docmd("Subject:", "header %d typed before DATA" % i)
    logging.getLogger("maillab.smtp").warning("from the notebook's own thread")
    import time; time.sleep(0.3)
    import gc; gc.collect()
    lab.stop()
    print(repr(str(lab.log())), flush=True)
""")


def test_server_thread_logs_go_to_the_lab_log_not_to_the_cell():
    done = subprocess.run([sys.executable, "-c", SERVER_ERRORS.format(src=MAILLAB_SRC)],
                          capture_output=True, text=True, timeout=60)
    log = eval(done.stdout.strip().splitlines()[-1])
    assert "a task of the lab's loop failed" in log  # asyncio's report, kept by the lab
    # A kernel shows the process's stderr in the running cell: only the notebook's own record.
    assert done.stderr.strip() == "from the notebook's own thread", done.stderr


def test_a_lab_gives_memory_back_once_it_goes_quiet_after_traffic(monkeypatch):
    """After a burst of sessions glibc keeps the freed memory (RSS stays at the peak): the lab
    hands it back once its servers have been quiet for a whole check period, and only after
    traffic (an idle lab does nothing)."""
    from maillab import lab as lab_module

    calls = []
    monkeypatch.setattr(lab_module, "QUIET_CHECK", 0.1)
    monkeypatch.setattr(lab_module, "release_free_memory", lambda: calls.append(time.time()))
    lab = maillab.start(ports="any")
    try:
        time.sleep(0.6)
        assert calls == []  # idle since its start
        with smtplib.SMTP("127.0.0.1", lab.smtp_port, timeout=10) as client:
            client.noop()
        deadline = time.time() + 10
        while not calls and time.time() < deadline:
            time.sleep(0.05)
        assert len(calls) == 1
        time.sleep(0.6)
        assert len(calls) == 1  # quiet ever since: nothing more to give back
    finally:
        lab.stop()
