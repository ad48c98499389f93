"""Session cells rule by rule where the rest of the suite let planted bugs through
(bench/mutation.py): what an %%http cell learns from the server's answers (the cookie, form
fields, any header) and how it fills ``{name}`` into the next cell (the notes the learner reads),
the values kept per server, a POP3 AUTH without credentials, the 10x cap on a trickling answer,
a TLS record that is not all there yet, and an unnamed cell that keeps nothing alive. Each test
here was shown to fail on a surviving mutant; they use loopback peers, no lab."""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import ssl
import threading
import time

import pytest

from maillab.sessions import run as runmodule
from maillab.sessions.drivers import AnswerValues
from maillab.sessions.replies import HttpReply
from maillab.sessions.result import SessionResult
from test_sessions_rules import (answer, greeted_pop3, no_lab, notes, scripted_peer,  # noqa: F401
                                 serving, tls_lab)


# =========================================================================== a web server
@contextlib.contextmanager
def web_server(pages: dict[str, bytes]):
    """A loopback HTTP server: each connection gets the answer ``pages`` holds for the path of
    its one request, then is closed. Yields the port and the requests it read (bytes)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    requests: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    requests.append(answer(conn))
                except OSError:
                    pass  # the client went away: the next connection is served all the same

    def answer(conn) -> bytes:
        conn.settimeout(5)
        got = b""
        while b"\r\n\r\n" not in got and (data := conn.recv(65536)):
            got += data
        head = got.split(b"\r\n\r\n", 1)[0].lower()
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n")[0]) \
            if b"content-length:" in head else 0
        while len(got) - len(head) - 4 < length and (data := conn.recv(65536)):
            got += data
        path = got.split(b" ", 2)[1].decode() if got.count(b" ") >= 2 else ""
        conn.sendall(pages.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        return got

    with serving(listener, serve, requests, stop) as served:
        yield served


def page(head: bytes, body: bytes = b"") -> bytes:
    """An answer with ``head``'s header lines (CRLF-ended) and a body of its Content-Length."""
    return b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: %d\r\n\r\n" % len(body) + body


LOGIN_PAGE = page(b"Set-Cookie: s=abc; Path=/; HttpOnly\r\n",
                  b"<form><input type='hidden' name=\"csrf\" value=\"t&amp;1\">"
                  b"<input type=submit value=Go></form>")
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


def cell(port: int, text: str, **options) -> SessionResult:
    return runmodule.run_session("http", None, text, host="127.0.0.1", port=port, timeout=3,
                                 **options)


def learned_then_filled(answer_head: bytes, typed: str, body: bytes = b""):
    """Cell 1 gets an answer with ``answer_head`` (header lines) and ``body``; cell 2 is
    ``typed``. What the server read of cell 2, and cell 2's result."""
    with web_server({"/first": page(answer_head, body), "/next": NO_CONTENT}) as (port, got):
        first = cell(port, "GET /first HTTP/1.1\nHost: x\n\n")
        assert first.ok, first.text
        second = cell(port, typed)
    assert second.ok, second.text
    return got[-1].decode("utf-8"), second


@pytest.fixture(autouse=True)
def fresh_answers(monkeypatch, no_lab):  # noqa: F811
    """No values of other tests' servers (a port may come again); no lab running."""
    monkeypatch.setattr(runmodule, "_answers", {})


# =========================================================================== drivers.py: {name}
def test_the_cookie_and_token_of_one_cell_are_filled_into_the_next_cell():
    with web_server({"/login": LOGIN_PAGE, "/next": NO_CONTENT}) as (port, got):
        cell(port, "GET /login HTTP/1.1\nHost: x\n\n")
        second = cell(port, "POST /next HTTP/1.1\nHost: x\nCookie: {Set-Cookie}\n\ncsrf={csrf}")
    assert got[-1] == (b"POST /next HTTP/1.1\r\nHost: x\r\nCookie: s=abc\r\n"
                       b"Content-Length: 8\r\n\r\ncsrf=t&1")
    (exchange,) = second.exchanges
    assert exchange.sent[2] == "Cookie: s=abc" and exchange.sent[-1] == "csrf=t&1"
    assert exchange.notes[:2] == [
        "maillab put in {Set-Cookie} from the server's last answer that had it: s=abc",
        "maillab put in {csrf} from the server's last answer that had it: t&1"]


def test_the_cookie_is_the_first_that_is_set_not_deleted():
    head = (b"Set-Cookie: old=x; Max-Age=0\r\nSet-Cookie: empty=; Path=/\r\n"
            b"Set-Cookie: s=abc; Path=/\r\nSet-Cookie: t=def\r\n")
    sent, _ = learned_then_filled(head, "GET /next HTTP/1.1\nHost: x\nCookie: {Set-Cookie}\n\n")
    assert "\r\nCookie: s=abc\r\n" in sent


def test_an_answer_that_only_deletes_cookies_keeps_the_cookie_known_before():
    with web_server({"/login": LOGIN_PAGE, "/next": NO_CONTENT,
                     "/out": page(b"Set-Cookie: s=; Max-Age=0\r\n")}) as (port, got):
        cell(port, "GET /login HTTP/1.1\nHost: x\n\n")
        cell(port, "GET /out HTTP/1.1\nHost: x\n\n")
        cell(port, "GET /next HTTP/1.1\nHost: x\nCookie: {Set-Cookie}\n\n")
    assert b"\r\nCookie: s=abc\r\n" in got[-1]


def test_any_header_of_the_answer_can_be_filled_in_by_its_name():
    sent, second = learned_then_filled(b"Location: /mail?id=7\r\nX-Odd-Line\r\n",
                                       "GET /next HTTP/1.1\nHost: x\nX-Where: {location}\n"
                                       "X-Odd: {X-Odd-Line}\n\n")
    assert "\r\nX-Where: /mail?id=7\r\n" in sent  # any case of the header's name
    assert "\r\nX-Odd: {X-Odd-Line}\r\n" in sent  # a line with no colon is no header
    assert "No earlier answer of this server had {X-Odd-Line}, so it was sent as typed " \
           "(known: none yet: ask for a page first)." in second.notes


def test_a_header_line_ended_by_a_bare_lf_is_a_line_as_the_transcript_shows_it():
    with web_server({"/first": b"HTTP/1.1 200 OK\r\nX-A: one\nX-B: two\r\n"
                               b"Content-Length: 0\r\n\r\n", "/next": NO_CONTENT}) as (port, got):
        first = cell(port, "GET /first HTTP/1.1\nHost: x\n\n")
        cell(port, "GET /next HTTP/1.1\nHost: x\nX-C: {X-A}\nX-D: {X-B}\n\n")
    assert "X-A: one" in first.server_lines and "X-B: two" in first.server_lines
    # never a line end of the server's inside the learner's request
    assert b"\r\nX-C: one\r\nX-D: two\r\n" in got[-1] and b"one\n" not in got[-1]


def test_the_status_line_is_never_a_header():
    with scripted_peer(b"", [(b"\r\n\r\n", b"X-Token: abc\r\n\r\n"),
                             (b"\r\n\r\n", NO_CONTENT)]) as (port, got):
        first = runmodule.run_session("http", None, "GET / HTTP/1.1\nHost: x\n\n",
                                      host="127.0.0.1", port=port, session="w", timeout=3)
        assert first.replies[-1][1] == ["X-Token: abc", ""]  # no status line: not HTTP
        runmodule.run_session("http", None, "GET / HTTP/1.1\nHost: x\nX-T: {X-Token}\n\n",
                              session="w", timeout=3, close=True)
    assert b"\r\nX-T: {X-Token}\r\n" in bytes(got)


def test_form_fields_come_from_the_body_with_entities_read():
    body = (b"<input name='user' value=\"a&lt;b\"><INPUT type=submit value=Go>"
            b"<input name=empty><input value='v2' name=tab&amp;le>")
    sent, second = learned_then_filled(
        b"X-Hint: <input name=\"leak\" value=\"head\">\r\n",
        "GET /next HTTP/1.1\nHost: x\nA: {user}|{empty}|{leak}\n\n", body)
    assert "\r\nA: a<b||{leak}\r\n" in sent  # an <input> in a header line is no form field
    assert "maillab put in {empty} from the server's last answer that had it: " in second.notes
    values = runmodule._answers  # the one server of this test: its fields, as named
    (learned,) = values.values()
    assert learned.fields == {"user": "a<b", "empty": "", "tab&le": "v2"}


def test_each_name_gets_one_note_and_unknown_names_are_sent_as_typed():
    sent, second = learned_then_filled(
        b"Set-Cookie: s=abc\r\n", "GET /next HTTP/1.1\nHost: x\nA: {Set-Cookie} {set-cookie}\n"
        "B: {Set-Cookie} {nothing} {nothing}\n\n",
        b"<input name=csrf value=1><input name=b value=2>")
    assert "\r\nA: s=abc s=abc\r\nB: s=abc {nothing} {nothing}\r\n" in sent
    assert second.notes[:3] == [
        "maillab put in {Set-Cookie} from the server's last answer that had it: s=abc",
        "maillab put in {set-cookie} from the server's last answer that had it: s=abc",
        "No earlier answer of this server had {nothing}, so it was sent as typed (known: {b}, "
        "{csrf}, {Set-Cookie})."]
    assert not any("{nothing}" in note for note in second.notes[3:])


def test_a_long_value_is_shown_shortened_to_48_characters_but_sent_whole():
    exactly, longer = "a" * 48, "b" * 46 + "cde"
    sent, second = learned_then_filled(f"X-Long: {longer}\r\nX-Fits: {exactly}\r\n".encode(),
                                       "GET /next HTTP/1.1\nHost: x\nA: {X-Fits}\nB: {X-Long}\n\n")
    assert f"\r\nA: {exactly}\r\nB: {longer}\r\n" in sent
    assert second.notes[:2] == [
        f"maillab put in {{X-Fits}} from the server's last answer that had it: {exactly}",
        f"maillab put in {{X-Long}} from the server's last answer that had it: {'b' * 45}..."]


# =========================================================================== run.py: values kept per server
def test_each_lab_on_the_same_port_has_values_of_its_own():
    class Lab:
        running, host, started_at, ca = True, "127.0.0.1", 1.0, None

    older, newer = Lab(), Lab()
    with web_server({"/login": LOGIN_PAGE, "/next": NO_CONTENT}) as (port, got):
        cell(port, "GET /login HTTP/1.1\nHost: x\n\n", lab=older)
        cell(port, "GET /next HTTP/1.1\nHost: x\nCookie: {Set-Cookie}\n\n", lab=newer)
        cell(port, "GET /next HTTP/1.1\nHost: x\nCookie: {Set-Cookie}\n\n", lab=older)
    assert b"\r\nCookie: {Set-Cookie}\r\n" in got[1]  # a new lab makes new cookies
    assert b"\r\nCookie: s=abc\r\n" in got[2]


def learned(port: int, cookie: str) -> AnswerValues:
    """The values kept for 127.0.0.1:``port`` (no lab), after an answer that set ``cookie``."""
    values = runmodule.answer_values(runmodule.Target("127.0.0.1", port, "x", False, "x"))
    reply = HttpReply()
    reply.feed(f"HTTP/1.1 204 No Content\r\nSet-Cookie: {cookie}\r\n\r\n".encode())
    values.learn(reply)
    return values


def kept(port: int) -> str | None:
    return runmodule.answer_values(runmodule.Target("127.0.0.1", port, "x", False, "x")
                                   ).value("Set-Cookie")


def test_the_values_of_the_sixteen_servers_used_last_are_kept():
    assert runmodule.KEEP_ANSWERS == 16
    for port in range(1, 17):
        learned(port, f"c={port}")
    assert kept(1) == "c=1"  # sixteen servers: all kept; 1 is now the newest
    learned(17, "c=17")
    assert kept(1) == "c=1" and kept(17) == "c=17"
    assert kept(2) is None  # the oldest went first (2: 1 was asked for again)
    for port in range(100, 116):
        learned(port, f"c={port}")
    assert kept(1) is None and kept(115) == "c=115"
    assert len(runmodule._answers) == 16


# =========================================================================== drivers.py: POP3
def test_pop3_auth_without_credentials_that_a_server_accepts_is_no_login():
    p = greeted_pop3()
    answer(p, "AUTH PLAIN", b"+OK go on\r\n")  # no initial response: nothing was checked
    assert notes(p, "STAT") == "STAT works only after logging in (USER, then PASS)."


# =========================================================================== run.py: sockets
def test_a_trickling_answer_is_cut_off_at_ten_times_the_timeout():
    def trickle(conn):  # a piece every 0.1 s; the answer ends 5.4 s after EHLO
        started = time.monotonic()
        while time.monotonic() - started < 5.3:
            time.sleep(0.1)
            conn.sendall(b"250-more\r\n")
        time.sleep(max(0.0, 5.4 - (time.monotonic() - started)))
        conn.sendall(b"250 end\r\n")

    with scripted_peer(b"220 hi\r\n", [(b"EHLO me\r\n", b"250-a\r\n")], trickle) as (port, _):
        result = runmodule.run_session("smtp", None, "EHLO me", host="127.0.0.1", port=port,
                                       timeout=0.5)
    assert result.error.startswith("No whole answer within 0.5 s"), result.text
    assert "250 end" not in result.server_lines


def test_a_tls_record_not_all_there_between_cells_is_no_hang_up(tls_lab):  # noqa: F811
    lab, server = tls_lab

    def half_a_record(conn):  # the header of a 64-byte record, past the encryption
        os.write(conn.fileno(), b"\x17\x03\x03\x00\x40")

    def serve_tls(conn):
        return server.wrap_socket(conn, server_side=True)

    with scripted_peer(b"+OK hi\r\n", [(b"NOOP\r\n", b"+OK\r\n")], half_a_record,
                       wrap=serve_tls, implicit=True) as (port, _):
        session = runmodule.Session("pop3", runmodule.Target(
            "127.0.0.1", port, "mail.example.com", True, "lab", lab), timeout=0.5)
        first = SessionResult("pop3")
        session.open(first)
        session.run(["NOOP"], first)
        assert first.ok, first.text
        # the peer's half record follows its answer: wait until it is here
        assert select.select([session.sock], [], [], 3)[0]
        later = SessionResult("pop3")
        session.run(["NOOP"], later)
        session.close()
    assert "closed this session" not in later.text, later.text
    assert later.client_lines == ["NOOP"]  # the cell was sent; its answer never came whole
    assert later.error.startswith("No whole answer within 0.5 s")


def test_a_cell_without_a_session_name_keeps_no_session_alive():
    def sessions():
        gc.collect()
        return [o for o in gc.get_objects() if isinstance(o, runmodule.Session)]

    before = len(sessions())
    with scripted_peer(b"220 hi\r\n", [(b"NOOP\r\n", b"250 ok\r\n")]) as (port, _):
        result = runmodule.run_session("smtp", None, "NOOP", host="127.0.0.1", port=port,
                                       timeout=3)
    assert result.ok and not result.open
    assert len(sessions()) <= before
    assert runmodule.open_sessions() == {} and None not in runmodule._open


def test_the_tls_handshake_gets_the_whole_timeout_not_what_the_last_wait_left(tls_lab,  # noqa: F811
                                                                               monkeypatch):
    lab, server = tls_lab
    handshake_timeouts = []
    wrap_socket = ssl.SSLContext.wrap_socket

    def recording(context, sock, *args, server_side=False, **options):
        if not server_side:
            handshake_timeouts.append(sock.gettimeout())
        return wrap_socket(context, sock, *args, server_side=server_side, **options)

    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", recording)

    def serve_tls(conn):
        return server.wrap_socket(conn, server_side=True)

    answers = [(b"STARTTLS\r\n", b"220 go ahead\r\n", "tls"), (b"NOOP\r\n", b"250 ok\r\n")]
    with scripted_peer(b"220 hi\r\n", answers, wrap=serve_tls) as (port, _):
        session = runmodule.Session("smtp", runmodule.Target(
            "127.0.0.1", port, "mail.example.com", False, "lab", lab), timeout=3)
        result = SessionResult("smtp")
        session.open(result)
        session.run(["STARTTLS", "NOOP"], result)
        session.close()
    assert result.ok and result.reply_to("NOOP") == ["250 ok"], result.text
    # (the wait for "220 go ahead" left a little less than 3 s on the socket)
    assert handshake_timeouts == [3]


def test_after_starttls_the_smtp_state_starts_over():
    from test_sessions_rules import hello_smtp
    s = hello_smtp()
    answer(s, "MAIL FROM:<a@example.com>", b"250 OK\r\n")
    answer(s, "RCPT TO:<b@example.com>", b"250 OK\r\n")
    s.tls_started()
    assert any("EHLO" in n for n in s.step("MAIL FROM:<a@example.com>").notes)  # no hello yet
    answer(s, "EHLO me", b"250 mail.example.com\r\n")
    assert s.step("MAIL FROM:<a@example.com>").notes == []  # no message under way any more
    answer(s, "MAIL FROM:<a@example.com>", b"250 OK\r\n")
    assert s.step("DATA").notes == ["DATA comes after at least one accepted RCPT TO."]


def test_a_fresh_smtp_driver_remembers_no_refused_mail():
    from test_sessions_rules import hello_smtp
    assert hello_smtp().step("RCPT TO:<b@example.com>").notes == ["RCPT TO comes after MAIL FROM."]
