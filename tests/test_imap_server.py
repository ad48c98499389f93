"""The IMAP server over real sockets, driven by Python's imaplib and by curl."""

from __future__ import annotations

import imaplib
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import require_tool
from maillab.imap.testing import (ALTERNATIVE, ATTACHMENT, FORWARD, PLAIN, SAMPLES, FixedDelayGuard,
                                  ImapTestServer, SlowLogins)
from maillab.store import to_crlf


@pytest.fixture
def srv():
    with ImapTestServer() as s:
        yield s


@pytest.fixture
def filled(srv):
    for sample in SAMPLES:
        srv.deliver(sample)
    return srv


def ok(result):
    typ, data = result
    assert typ == "OK", data
    return data


# ----------------------------------------------------------------------------- imaplib, command by command

def test_imaplib_login_capability_noop_logout(srv):
    M = srv.connect()
    assert "IDLE" in M.capabilities and "AUTH=PLAIN" in M.capabilities
    ok(M.login("alice", "alice-pw"))
    ok(M.noop())
    typ, data = M.xatom("ID", '("name" "imaplib")')
    assert typ == "OK" and M.untagged_responses.pop("ID")[0].startswith(b'("name" "maillab"')
    ok(M.select())
    ok(M.check())
    assert M.logout()[0] == "BYE"


def test_imaplib_authenticate_plain(srv):
    M = srv.connect()
    ok(M.authenticate("PLAIN", lambda _challenge: b"\0alice\0alice-pw"))
    ok(M.select())
    M.logout()


def test_imaplib_wrong_password(srv):
    M = srv.connect()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        M.login("alice", "nope")
    ok(M.login("alice@example.com", "alice-pw"))  # the address works as login name
    M.logout()


def test_imaplib_folders(srv):
    M = srv.login()
    ok(M.create("Projects"))
    ok(M.create("Projects.Alpha"))
    listing = ok(M.list())
    assert b'(\\HasChildren) "." Projects' in listing
    assert b'(\\HasNoChildren \\Trash) "." Trash' in listing
    assert ok(M.list("Projects.", "%")) == [b'(\\HasNoChildren) "." Projects.Alpha']
    ok(M.rename("Projects", "Done"))
    assert srv.store.account("alice").folder_names() == ["INBOX", "Done", "Done.Alpha", "Drafts", "Junk",
                                                        "Sent", "Trash"]
    ok(M.subscribe("Done.Alpha"))
    assert b'() "." Done.Alpha' in ok(M.lsub())
    ok(M.unsubscribe("Done.Alpha"))
    ok(M.delete("Done.Alpha"))
    assert M.delete("Done.Alpha")[0] == "NO"
    assert ok(M.namespace()) == [b'(("" ".")) NIL NIL']
    M.logout()


def test_imaplib_select_status_append(srv):
    M = srv.login()
    msg = to_crlf(PLAIN)
    data = ok(M.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(1704100000), msg))
    assert re.match(rb"\[APPENDUID \d+ 1\]", data[0])
    assert ok(M.status("INBOX", "(MESSAGES RECENT UNSEEN UIDNEXT)")) == \
        [b"INBOX (MESSAGES 1 RECENT 1 UNSEEN 1 UIDNEXT 2)"]
    assert ok(M.select("INBOX")) == [b"1"]
    assert M.untagged_responses.get("UIDVALIDITY")
    date = ok(M.fetch("1", "(INTERNALDATE FLAGS)"))[0]
    assert imaplib.Internaldate2tuple(date) == time.localtime(1704100000)
    assert b"\\Flagged" in date
    ok(M.close())
    assert ok(M.select("INBOX", readonly=True)) == [b"1"]
    M.logout()


def test_imaplib_fetch_items(filled):
    M = filled.login()
    ok(M.select())
    data = ok(M.fetch("1:*", "(UID RFC822.SIZE FLAGS ENVELOPE BODYSTRUCTURE)"))
    assert len(data) == 5
    data = ok(M.fetch("3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[2.MIME] BODY.PEEK[1.1]<0.6>)"))
    parts = {re.search(rb"(BODY\[[^\]]*\](<\d+>)?) \{", d[0]).group(1): d[1]
             for d in data if isinstance(d, tuple)}
    assert parts[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: The report (with attachment)\r\n\r\n"
    assert parts[b"BODY[2.MIME]"].startswith(b"Content-Type: application/pdf")
    assert parts[b"BODY[1.1]<0>"] == b"Please"
    typ, data = M.fetch("1", "(RFC822)")
    assert data[0][1] == to_crlf(PLAIN)
    assert b"\\Seen" in ok(M.fetch("1", "FLAGS"))[0]
    data = ok(M.uid("FETCH", "2", "(BODY.PEEK[TEXT])"))
    assert data[0][0].startswith(b"2 (UID 2 BODY[TEXT]")
    assert b"--alt-boundary-42" in data[0][1]
    M.logout()


def test_imaplib_search(filled):
    M = filled.login()
    ok(M.select())
    assert ok(M.search(None, "FROM", "bob")) == [b"1"]
    assert ok(M.search(None, "OR", "SUBJECT", "report", "TO", "undisclosed")) == [b"3 5"]
    assert ok(M.search("UTF-8", "BODY", '"Grüße"'.encode())) == [b"2"]
    assert ok(M.uid("SEARCH", "UNSEEN", "LARGER", "700")) == [b"2 3 4"]
    assert ok(M.search(None, "SINCE", "1-Jan-2020", "SENTBEFORE", "2-Jan-2024")) == [b"1"]
    M.logout()


def test_imaplib_store_copy_move_expunge(filled):
    M = filled.login()
    ok(M.select())
    assert ok(M.store("1:2", "+FLAGS", "(\\Flagged $Label1)")) == [
        b"1 (FLAGS (\\Flagged $Label1 \\Recent))", b"2 (FLAGS (\\Flagged $Label1 \\Recent))"]
    ok(M.store("2", "-FLAGS.SILENT", "(\\Flagged)"))
    data = ok(M.copy("1:2", "Trash"))
    assert re.match(rb"\[COPYUID \d+ 1:2 1:2\]", data[0])
    typ, data = M._simple_command("MOVE", "3", "Junk")
    assert typ == "OK"
    assert M.untagged_responses.pop("EXPUNGE") == [b"3"]
    ok(M.store("1", "+FLAGS", "\\Deleted"))
    assert ok(M.expunge()) == [b"1"]
    ok(M.uid("STORE", "2", "+FLAGS", "(\\Deleted)"))
    typ, data = M.uid("EXPUNGE", "2")
    assert typ == "OK"
    assert [m.uid for m in filled.folder().messages()] == [4, 5]
    assert [m.uid for m in filled.folder(name="Junk").messages()] == [1]
    assert filled.folder(name="Trash").flags_of(1) == {"\\Flagged", "$Label1"}
    typ, _data = M._simple_command("UNSELECT")
    assert typ == "OK"
    M.logout()


# ----------------------------------------------------------------------------- several sessions

def _readline(M) -> bytes:
    return M.readline()


def test_delivery_and_expunge_announced_to_other_sessions(filled):
    a = filled.login()
    b = filled.login()
    ok(a.select())
    ok(b.select())
    filled.deliver(ALTERNATIVE)  # as SMTP does, in the servers' thread
    ok(b.store("1", "+FLAGS", "(\\Deleted)"))
    ok(b.expunge())
    a.untagged_responses.clear()
    typ, _ = a.noop()
    # "* 1 EXPUNGE" then "* 5 EXISTS": 5 - 1 + 1 new message
    assert a.untagged_responses.pop("EXPUNGE") == [b"1"]
    assert a.untagged_responses.pop("EXISTS") == [b"5"]
    # the store changed by POP3 (another thread): gone for IMAP too, and UIDs never repeat
    folder = filled.folder()
    first = folder.messages()[0].uid
    threading.Thread(target=folder.expunge, args=([first],)).start()
    time.sleep(0.2)
    a.noop()
    assert a.untagged_responses.get("EXPUNGE") == [b"1"]
    info = filled.deliver(PLAIN)
    assert info.uid == 7
    a.logout()
    b.logout()


def test_idle_sees_delivery_at_once(filled):
    M = filled.login()
    ok(M.select())
    M.send(b"i1 IDLE\r\n")
    assert M.readline().startswith(b"+ ")
    t0 = time.monotonic()
    threading.Timer(0.1, filled.deliver, args=(FORWARD,)).start()
    M.sock.settimeout(5)
    assert M.readline() == b"* 6 EXISTS\r\n"
    assert M.readline() == b"* 6 RECENT\r\n"
    assert time.monotonic() - t0 < 2
    # another session expunges: reported during IDLE too
    other = filled.login()
    ok(other.select())
    ok(other.store("2", "+FLAGS.SILENT", "(\\Deleted)"))
    ok(other.expunge())
    assert M.readline() == b"* 2 FETCH (FLAGS (\\Deleted \\Recent))\r\n"
    assert M.readline() == b"* 2 EXPUNGE\r\n"
    ok(other.store("1", "+FLAGS", "(\\Flagged)"))
    assert M.readline() == b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
    M.send(b"DONE\r\n")
    assert M.readline() == b"i1 OK IDLE terminated\r\n"
    other.logout()
    M.logout()


# ----------------------------------------------------------------------------- learners by hand, transcripts, TCP

def _raw(srv):
    s = socket.create_connection((srv.host, srv.port), timeout=5)
    f = s.makefile("rb")
    greeting = f.readline()
    return s, f, greeting


def _logged_in(srv):
    """A raw connection, logged in as alice: (socket, its reader)."""
    s, f, _greeting = _raw(srv)
    s.sendall(b"a1 LOGIN alice alice-pw\r\n")
    assert f.readline().startswith(b"a1 OK")
    return s, f


def test_by_hand_mistakes_keep_the_session(srv):
    s, f, greeting = _raw(srv)
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1")
    s.sendall(b"LOGIN alice alice-pw\r\n")
    assert f.readline() == b"* BAD every command starts with a tag, for example: a1 LOGIN alice password\r\n"
    s.sendall(b"a1 LOGN alice alice-pw\r\n")
    assert f.readline().startswith(b"a1 BAD unknown command LOGN")
    s.sendall(b"a2 login alice alice-pw\n")  # lower case and a bare LF are fine
    assert f.readline().startswith(b"a2 OK")
    s.sendall(b"a3 fetch 1 flags\r\n")
    assert f.readline().startswith(b"a3 BAD FETCH: select a folder first")
    s.sendall(b"a4 logout\r\n")
    assert f.readline().startswith(b"* BYE")
    assert f.readline() == b"a4 OK LOGOUT completed\r\n"
    assert f.readline() == b""  # closed
    s.close()


def test_transcript_records_every_byte_and_the_user(srv):
    M = srv.login()
    ok(M.select())
    M.logout()
    time.sleep(0.1)
    t = srv.transcript().filter(service="imap")
    assert t.lines[0].text.startswith("connection from 127.0.0.1:")
    client = t.client_lines()
    assert client[1].endswith('LOGIN alice "alice-pw"')
    server = t.server_lines()
    assert server[0].startswith("* OK [CAPABILITY")
    assert any(l.endswith("OK [READ-WRITE] SELECT completed") for l in server)
    assert t.lines[-1].text == "connection closed"
    assert {line.conn for line in t} == {t.lines[0].conn}  # one connection, every line of it
    logout_tag = client[-1].split()[0]
    assert client[-1] == logout_tag + " LOGOUT"
    assert server[-2:] == ["* BYE Logging out, goodbye", logout_tag + " OK LOGOUT completed"]
    assert not srv.ctx.connections  # closed connections are forgotten


def test_append_does_not_stall_on_delayed_acks(srv):
    """imaplib writes a literal and its CRLF separately: without TCP_NODELAY/QUICKACK ~44 ms each."""
    M = srv.login()
    msg = to_crlf(PLAIN)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        M.append("INBOX", None, None, msg)
        times.append(time.perf_counter() - t0)
    per_append = sorted(times)[len(times) // 2]  # the median: robust to a busy machine
    assert per_append < 0.02, f"{per_append * 1000:.1f} ms per APPEND"
    assert len(srv.folder()) == 50
    M.logout()


def test_refuses_unbounded_lines(srv):
    s, f, _g = _raw(srv)
    s.sendall(b"a1 NOOP " + b"x" * 200_000)
    assert f.readline().startswith(b"* BAD that line is too long")
    s.sendall(b"\r\na2 NOOP\r\n")
    assert f.readline().startswith(b"a2 OK")
    s.close()


# ----------------------------------------------------------------------------- curl

def curl(srv, *args, check=True):
    exe = require_tool("curl")
    p = subprocess.run([exe, "-sS", "-m", "10", "-u", "alice:alice-pw", *args], capture_output=True,
                       timeout=20)
    if check:
        assert p.returncode == 0, (p.returncode, p.stderr)
    return p


def test_curl_list_fetch_search(filled):
    base = f"imap://127.0.0.1:{filled.port}"
    out = curl(filled, base + "/").stdout
    assert b'* LIST (\\HasNoChildren) "." INBOX' in out and b"Trash" in out
    assert curl(filled, base + "/INBOX;UID=3").stdout == to_crlf(ATTACHMENT)
    assert curl(filled, base + "/INBOX;MAILINDEX=1").stdout == to_crlf(PLAIN)
    assert curl(filled, base + "/INBOX;UID=3/;SECTION=1.1").stdout == b"Please find the report attached."
    assert curl(filled, base + "/INBOX?SUBJECT%20lunch").stdout == b"* SEARCH 1 4\r\n"
    assert curl(filled, base + "/INBOX", "-X", "EXAMINE INBOX").returncode == 0
    p = curl(filled, base + "/INBOX;UID=99", check=False)
    assert p.returncode != 0
    p = subprocess.run([require_tool("curl"), "-sS", "-m", "10", "-u", "alice:wrong", base + "/"],
                       capture_output=True, timeout=20)
    assert p.returncode == 67  # login denied


def test_curl_append_store_expunge(srv, tmp_path):
    base = f"imap://127.0.0.1:{srv.port}"
    eml = tmp_path / "msg.eml"
    eml.write_bytes(to_crlf(PLAIN))
    curl(srv, base + "/Drafts", "-T", str(eml))
    assert srv.folder(name="Drafts").read(1) == to_crlf(PLAIN)
    out = curl(srv, base + "/Drafts", "-X", "STORE 1 +FLAGS (\\Deleted)").stdout
    assert out == b"* 1 FETCH (FLAGS (\\Deleted \\Seen \\Recent))\r\n"  # curl APPENDs as \\Seen
    curl(srv, base + "/Drafts", "-X", "EXPUNGE")
    assert len(srv.folder(name="Drafts")) == 0


# ----------------------------------------------------------------------------- TLS

@pytest.fixture
def tls_srv():
    pytest.importorskip("trustme")
    from maillab.tls import LabCA
    with ImapTestServer() as s:
        s.ctx.tls = LabCA([s.ctx.hostname])
        yield s
        s.ctx.tls.close()


def test_starttls_then_login(tls_srv):
    M = tls_srv.connect()
    assert "STARTTLS" in M.capabilities
    ok(M.starttls(ssl_context=tls_srv.ctx.tls.client_context()))
    assert "STARTTLS" not in M.capabilities
    ok(M.login("alice", "alice-pw"))
    ok(M.select())
    M.logout()
    time.sleep(0.1)
    events = [l.text for l in tls_srv.transcript() if l.who == "*"]
    assert any("TLS" in e for e in events)


def test_strict_mode_needs_tls_before_login(tls_srv):
    tls_srv.ctx.strict = True
    M = tls_srv.connect()
    assert "LOGINDISABLED" in M.capabilities and "AUTH=PLAIN" not in M.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        M.login("alice", "alice-pw")
    ok(M.starttls(ssl_context=tls_srv.ctx.tls.client_context()))
    ok(M.login("alice", "alice-pw"))
    M.logout()


def test_imaps(tls_srv):
    from maillab.net import bind_listener
    from maillab.imap.server import start_imap
    sock = bind_listener(None)
    port = sock.getsockname()[1]
    server = tls_srv.call(start_imap(tls_srv.ctx, sock, implicit_tls=True))
    M = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=tls_srv.ctx.tls.client_context())
    assert "STARTTLS" not in M.capabilities
    ok(M.login("alice", "alice-pw"))
    M.logout()
    tls_srv.call(server.close)


def test_repeated_failed_logins_are_answered_late(srv):
    M = srv.connect()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        with pytest.raises(imaplib.IMAP4.error):
            M.login("alice", "wrong")
        times.append(time.perf_counter() - t)
    assert times[0] < 0.2 and times[2] >= 0.4  # the lab's LoginGuard: 0.25 s, then 0.5 s
    ok(M.login("alice", "alice-pw"))
    assert [a.success for a in srv.ctx.guard.attempts] == [False, False, False, True]
    assert srv.ctx.guard.attempts[0].service == "imap:example.com"
    M.logout()


def test_idle_connections_are_logged_out():
    with ImapTestServer(options={"imap_timeout": 0.3}) as srv:
        s, f = _logged_in(srv)
        assert f.readline() == b"* BYE Autologout; idle for 0.3 seconds\r\n"
        assert f.readline() == b""
        s.close()
        time.sleep(0.1)
        events = [line.text for line in srv.transcript() if line.who == "*"]
        assert "no command for 0.3 s (imap_timeout, RFC 3501 5.4): autologout" in events


def _trickle(sock, data: bytes, every: float) -> None:
    """Send ``data`` one byte at a time, ``every`` seconds apart, until the server hangs up."""
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(every)
    except OSError:
        pass


def test_a_trickled_command_does_not_keep_a_session_alive():
    """A byte every so often once reset the idle timer for ever (issue 10: 1 byte / 20 s)."""
    with ImapTestServer(options={"imap_timeout": 0.6, "imap_command_timeout": 60}) as srv:
        s, f = _logged_in(srv)
        trickler = threading.Thread(target=_trickle, args=(s, b"a2 NOOP and more and more" * 10, 0.05))
        trickler.start()
        t0 = time.monotonic()
        assert f.readline() == b"* BYE Autologout; idle for 0.6 seconds\r\n"
        assert time.monotonic() - t0 < 5
        s.close()
        trickler.join()


def test_a_command_must_be_finished_in_time():
    with ImapTestServer(options={"imap_command_timeout": 0.5}) as srv:
        s, f = _logged_in(srv)
        s.sendall(b"a2 APPEND INBOX {100}\r\n")
        assert f.readline().startswith(b"+ ")
        trickler = threading.Thread(target=_trickle, args=(s, b"x" * 99, 0.05))
        trickler.start()
        assert f.readline() == (b"* BYE Autologout; a command was begun but not finished within "
                                b"0.5 seconds\r\n")
        s.close()
        trickler.join()
        time.sleep(0.1)
        events = [line.text for line in srv.transcript() if line.who == "*"]
        assert any("begun but not finished within 0.5 s (imap_command_timeout)" in e for e in events)
        assert len(srv.folder()) == 0


def test_a_client_that_does_not_log_in_is_closed_sooner():
    """RFC 3501's 30 minutes are for logged-in clients; strangers get imap_login_timeout."""
    with ImapTestServer(options={"imap_login_timeout": 0.5}) as srv:
        s, f, _g = _raw(srv)
        t0 = time.monotonic()
        for n in range(4):  # complete commands, but no login: still closed
            s.sendall(b"a%d NOOP\r\n" % n)
            assert f.readline().startswith(b"a%d OK" % n)
            time.sleep(0.1)
        assert f.readline() == b"* BYE Autologout; no login within 0.5 seconds; connect again\r\n"
        assert 0.4 < time.monotonic() - t0 < 5
        s.close()
        # a login attempt restarts the clock; after a login the 30 minutes apply
        s, f, _g = _raw(srv)
        time.sleep(0.3)
        s.sendall(b"a1 LOGIN alice alice-pw\r\n")
        assert f.readline().startswith(b"a1 OK")
        time.sleep(0.7)
        s.sendall(b"a2 NOOP\r\n")
        assert f.readline() == b"a2 OK NOOP completed\r\n"
        s.close()


def test_pipelined_logins_are_each_checked_in_turn(srv):
    """Eight wrong passwords and the right one in one write were answered in 0.01 s as one
    batch with one delay (issue 16); each login must wait its own turn, the right one too."""
    srv.ctx.guard = guard = FixedDelayGuard(srv.ctx.guard)
    s, f, _g = _raw(srv)
    packet = b"".join(b"w%d LOGIN alice wrong%d\r\n" % (i, i) for i in range(8))
    t0 = time.monotonic()
    s.sendall(packet + b"ok LOGIN alice alice-pw\r\nn NOOP\r\n")
    answers = [f.readline() for _ in range(10)]
    elapsed = time.monotonic() - t0
    assert [a.split()[0] for a in answers] == [b"w%d" % i for i in range(8)] + [b"ok", b"n"]
    assert all(b"NO [AUTHENTICATIONFAILED]" in a for a in answers[:8]) and b"ok OK" in answers[8]
    assert guard.asked == 9
    assert elapsed >= 9 * guard.pause, f"{elapsed:.2f} s for 9 logins"
    s.close()


def _login_answer_times(srv, logins: list[bytes], *, packet: bool) -> list[float]:
    """Seconds from the start to each login's answer: all in one write, or one connection
    after another (each sent once the previous one was answered)."""
    t0, times = time.monotonic(), []
    if packet:
        s, f, _g = _raw(srv)
        s.sendall(b"".join(b"t%d LOGIN %s\r\n" % (i, login) for i, login in enumerate(logins)))
        for _login in logins:
            assert f.readline().startswith(b"t")
            times.append(time.monotonic() - t0)
        s.close()
        return times
    for login in logins:
        s, f, _g = _raw(srv)
        s.sendall(b"t LOGIN %s\r\n" % login)
        assert f.readline().startswith(b"t ")
        times.append(time.monotonic() - t0)
        s.close()
    return times


def test_a_packet_of_logins_is_throttled_like_separate_attempts():
    """Issue 16: a packet of eight wrong LOGINs and the right one is checked on the same
    schedule as nine connections one after another, and the right password's answer waits its
    turn too (an instant OK after the refusals would tell a guesser which guess was right)."""
    from maillab.net import LoginGuard
    settings = {"base": 0.05, "cap": 0.2}
    logins = [b"alice wrong%d" % i for i in range(8)] + [b"alice alice-pw"]
    # The guard's schedule for nine attempts on one account: the first free, then base,
    # doubling up to the cap; the ninth (the right password) waits its turn like the others.
    schedule = [0, 0.05, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    for packet in (True, False):
        with ImapTestServer() as srv:
            srv.ctx.guard = LoginGuard(**settings)
            times = _login_answer_times(srv, logins, packet=packet)
        gaps = [b - a for a, b in zip([0.0] + times, times)]
        assert all(gap >= 0.9 * wait for gap, wait in zip(gaps, schedule)), (packet, gaps, schedule)


def test_a_login_does_not_stop_other_sessions(srv):
    """Passwords are checked in a worker thread: while one is checked, others are served."""
    with SlowLogins(srv.ctx) as slow:
        s, f, _g = _raw(srv)
        s.sendall(b"a1 LOGIN alice alice-pw\r\n")
        assert slow.checking.wait(5)
        other, g, greeting = _raw(srv)  # would time out if the loop were stuck in the check
        assert greeting.startswith(b"* OK")
        other.sendall(b"b1 NOOP\r\n")
        assert g.readline() == b"b1 OK NOOP completed\r\n"
        slow.release.set()
        assert f.readline().startswith(b"a1 OK [CAPABILITY")
        s.close()
        other.close()


def test_a_long_fetch_is_written_as_the_client_reads(srv):
    """A FETCH answer goes out as fast as the client reads it: it never piles up in memory."""
    body = (b"y" * 1000 + b"\r\n") * 250  # ~250 kB
    for i in range(128):  # a 32 MB answer
        srv.deliver(b"Subject: %d\r\n\r\n" % i + body)
    M = srv.login()
    ok(M.select())
    M.send(b"f1 FETCH 1:* (BODY.PEEK[])\r\n")
    time.sleep(0.5)  # the client reads nothing meanwhile
    buffered = srv.call(lambda: sum(t.get_write_buffer_size() for t in srv.ctx.connections))
    assert buffered < 2 * 1024 * 1024, f"{buffered} bytes waiting in the server"
    got = 0
    while True:
        line = M.readline()
        if line.startswith(b"f1 "):
            break
        m = re.search(rb"\{(\d+)\}\r\n$", line)
        if m:
            got += len(M.read(int(m.group(1))))
    assert line == b"f1 OK FETCH completed\r\n"
    assert got == sum(len(b"Subject: %d\r\n\r\n" % i + body) for i in range(128))
    M.logout()


def test_in_the_lab_smtp_delivery_wakes_idle_and_pop3_deletion_shows():
    import poplib
    import smtplib
    import maillab
    lab = maillab.MailLab(ports="any").start()
    try:
        M = imaplib.IMAP4(lab.host, lab.imap_port, timeout=10)
        M.login("alice", "wonderland")
        ok(M.select())
        M.send(b"i1 IDLE\r\n")
        assert M.readline().startswith(b"+ ")
        with smtplib.SMTP(lab.host, lab.smtp_port, timeout=10) as s:
            s.sendmail("bob@example.com", ["alice@example.com"],
                       b"From: bob@example.com\r\nSubject: hello\r\n\r\nhi\r\n")
        assert M.readline() == b"* 1 EXISTS\r\n"
        assert M.readline() == b"* 1 RECENT\r\n"
        M.send(b"DONE\r\n")
        assert M.readline() == b"i1 OK IDLE terminated\r\n"
        p = poplib.POP3(lab.host, lab.pop3_port, timeout=10)
        p.user("alice")
        p.pass_("wonderland")
        p.dele(1)
        p.quit()
        M.untagged_responses.clear()
        ok(M.noop())
        assert M.untagged_responses.get("EXPUNGE") == [b"1"]
        M.logout()
        assert any(l.service.startswith("imap") and l.text.endswith("IDLE terminated")
                   for l in lab.recorder.lines())
    finally:
        lab.stop()


def test_a_client_over_the_connection_limit_gets_a_polite_bye():
    with ImapTestServer(options={"max_connections": 2}) as srv:
        first, second = _raw(srv), _raw(srv)
        s, f, greeting = _raw(srv)
        assert greeting == (b"* BYE [UNAVAILABLE] mail.example.com has too many connections open; "
                            b"close one of yours or try again in a moment\r\n")
        assert f.readline() == b""
        s.close()
        time.sleep(0.1)
        refused = [line for line in srv.transcript() if line.text.startswith("* BYE [UNAVAILABLE]")]
        assert len(refused) == 1  # the transcript shows the refusal and why
        assert any(line.who == "*" and line.conn == refused[0].conn and
                   "refused: 2 connections already open" in line.text for line in srv.transcript())
        first[0].sendall(b"a1 LOGOUT\r\n")
        assert first[1].readline().startswith(b"* BYE Logging out") and first[1].readline().startswith(b"a1 OK")
        first[0].close()
        time.sleep(0.2)
        s, f, greeting = _raw(srv)  # a place is free again
        assert greeting.startswith(b"* OK [CAPABILITY")
        s.close()
        second[0].close()


def test_a_burst_of_pipelined_commands_does_not_starve_other_sessions(filled):
    """Pipelined commands run one per turn of the loop, a SEARCH one message per piece: a
    client sending dozens of heavy commands at once cannot hold the server for itself."""
    for i in range(25):
        filled.deliver(ATTACHMENT)
    a, fa, _g = _raw(filled)
    b, fb, _g = _raw(filled)
    for s, f in ((a, fa), (b, fb)):
        s.sendall(b"l LOGIN alice alice-pw\r\ns SELECT INBOX\r\n")
        while not f.readline().startswith(b"s OK"):
            pass
    a.sendall(b"".join(b"q%d SEARCH TEXT zzz\r\n" % i for i in range(60)))
    time.sleep(0.02)  # the server has the burst
    b.sendall(b"n NOOP\r\n")
    assert fb.readline() == b"n OK NOOP completed\r\n"
    while fa.readline() != b"q59 OK SEARCH completed\r\n":
        pass
    # The order in which the server wrote its answers, from the transcript:
    said = [line.text for line in filled.transcript() if line.who == "S"]
    assert said.index("n OK NOOP completed") < said.index("q59 OK SEARCH completed"), \
        "the other session waited for the whole burst"
    a.close()
    b.close()


# ----------------------------------------------------------------------------- hints that help

def _replies(srv, *commands: bytes) -> list[bytes]:
    """The tagged reply line of each command, sent one after another as alice."""
    s, f = _logged_in(srv)
    out = []
    for i, command in enumerate(commands):
        s.sendall(b"h%d %s\r\n" % (i, command))
        while not (line := f.readline()).startswith(b"h%d " % i):
            assert line, "connection closed"
        out.append(line)
    s.close()
    return out


def test_store_on_an_empty_folder_does_not_tell_the_learner_to_do_what_they_did(srv):
    """STORE 1:* in an empty folder was BAD "... (use 1:* for all)". Dovecot answers BAD too
    (there is no message 1); the hint now says why, and what works instead."""
    replies = _replies(srv, b"CREATE Empty", b"SELECT Empty", b"STORE 1:* +FLAGS (\\Seen)",
                       b"FETCH 1:* FLAGS", b"UID STORE 1:* +FLAGS (\\Seen)")
    for line in replies[2:4]:
        assert line.startswith(b"h%c BAD " % line[1]) and b"this folder is empty" in line, line
        assert b"use 1:*" not in line
    assert replies[4].startswith(b"h4 OK UID STORE completed")


def test_a_raw_utf8_folder_name_is_refused_with_its_modified_utf7_form(srv):
    """CREATE Φίλοι was accepted. RFC 3501 folder names are 7-bit (modified UTF-7) and this
    server has no UTF8=ACCEPT (RFC 6855), like Dovecot 2.3: BAD for an atom, NO for a quoted
    string, and the hint names the form to send. The reply itself stays ASCII."""
    greek = "Φίλοι".encode()
    replies = _replies(srv, b"CREATE " + greek, b'CREATE "' + greek + b'"',
                       b"SELECT " + greek, b"CREATE &A6YDrwO7A78DuQ-", b'LIST "" &A6YDrwO7A78DuQ-')
    assert replies[0].startswith(b"h0 BAD CREATE: folder names travel in ASCII, in modified "
                                 b"UTF-7") and replies[0].endswith(b"send &A6YDrwO7A78DuQ-\r\n")
    assert replies[1].startswith(b"h1 NO CREATE: ") and b"&A6YDrwO7A78DuQ-" in replies[1]
    assert replies[2].startswith(b"h2 BAD SELECT: ")
    assert all(line.isascii() for line in replies)
    assert replies[3].startswith(b"h3 OK CREATE completed")
    assert "Φίλοι" in srv.store.account("alice").folder_names()
