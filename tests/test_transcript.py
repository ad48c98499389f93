"""The transcript recorder: lines per side and connection, limits that keep memory bounded."""

from maillab.transcript import Recorder, Transcript


def test_lines_split_across_chunks_and_sides():
    rec = Recorder()
    conn = rec.open("smtp:example.com", "127.0.0.1:5000")
    conn.server(b"220 hello\r\n")
    conn.client(b"EHLO me")
    conn.client(b"\r\nQUIT\r\n")
    conn.client(b"half a line")
    conn.close()
    t = Transcript(rec.lines())
    assert t.client_lines() == ["EHLO me", "QUIT", "half a line"]
    assert t.server_lines() == ["220 hello"]
    assert t.client_bytes() == b"EHLO me\r\nQUIT\r\nhalf a line"
    assert [l.who for l in t][0] == "*" and str(t).startswith("=== smtp:example.com connection 1")


def test_huge_downloads_are_counted_not_kept():
    rec = Recorder(per_connection=100)
    conn = rec.open("pop3:example.com", "127.0.0.1:5001")
    conn.client(b"RETR 1\r\n")
    conn.server(b"line\r\n" * 1000)
    conn.client(b"QUIT\r\n")
    conn.close()
    t = Transcript(rec.lines())
    assert len(t.server_lines()) == 100
    assert t.client_lines() == ["RETR 1", "QUIT"]  # the client's side is still complete
    events = [l.text for l in t if l.who == "*"]
    assert any("900 more server lines not kept" in e for e in events)


def test_a_client_that_never_sends_a_newline_cannot_grow_memory():
    rec = Recorder()
    conn = rec.open("imap:example.com", "127.0.0.1:5002")
    for _ in range(100):
        conn.client(b"x" * 10_000)
    assert len(conn._partial["C"]) < 70_000


def test_refused_garbage_is_counted_not_kept():
    rec = Recorder()
    conn = rec.open("smtp:example.com", "127.0.0.1:5003")
    conn.server(b"220 hello\r\n")
    for i in range(10_000):  # a client that never says anything the server accepts
        conn.client(b"GARBAGE %d " % i + b"x" * 1000 + b"\r\n")
        conn.server(b'500 5.5.2 Error: command "GARBAGE" not recognized\r\n')
    conn.client(b"NOOP\r\n")
    conn.server(b"250 OK\r\n")  # accepted again: lines are kept again
    conn.client(b"QUIT\r\n")
    conn.close()
    t = Transcript(rec.lines())
    assert len(t.client_lines()) == 20 + 2 and t.client_lines()[-2:] == ["NOOP", "QUIT"]
    assert rec.memory < 100_000  # was more than 10 MB
    events = [l.text for l in t if l.who == "*"]
    assert any("20 commands in a row were refused" in e for e in events)
    assert any("19960 refused lines" in e for e in events)  # 9,980 commands and their 500s


def test_a_long_line_keeps_its_start_and_says_what_was_cut():
    rec = Recorder()
    conn = rec.open("imap:example.com", "127.0.0.1:5004")
    conn.client(b"a LOGIN " + b"y" * 100_000 + b"\r\n")
    conn.close()
    t = Transcript(rec.lines())
    [line] = [l for l in t if l.who == "C"]
    assert line.raw.startswith(b"a LOGIN yyy") and len(line.raw) <= 8 * 1024 + 1
    assert any("bytes of this line not kept" in l.text for l in t if l.who == "*")


def test_each_connection_and_the_whole_recorder_stay_within_their_bytes():
    rec = Recorder(max_bytes=2_000_000, per_connection_bytes=500_000)
    for c in range(10):
        conn = rec.open("pop3:example.com", f"127.0.0.1:{6000 + c}")
        conn.client(b"RETR 1\r\n")
        conn.server(b"+OK\r\n" + (b"z" * 76 + b"\r\n") * 20_000)  # 1.5 MB of message
        conn.close()
    assert rec.memory <= 2_000_000 and rec.dropped > 0
    per_conn = {}
    for l in rec.lines():
        per_conn[l.conn] = per_conn.get(l.conn, 0) + len(l.raw)
    assert max(per_conn.values()) <= 500_000 + 1000
    last = Transcript(rec.lines()).last()
    assert any("transcript limit" in l.text for l in last if l.who == "*")


def test_a_long_reply_is_one_entry_until_it_is_read():
    rec = Recorder()
    conn = rec.open("imap:example.com", "127.0.0.1:5005")
    conn.client(b"a1 FETCH 1:* (FLAGS)\r\n")
    reply = b"".join(b"* %d FETCH (FLAGS (\\Seen))\r\n" % i for i in range(1, 1001)) + b"a1 OK done\r\n"
    conn.server(reply)
    entries = list(rec._lines)
    assert len(entries) == 3  # the connect event, the command, the whole reply
    server = [l for l in rec.lines() if l.who == "S"]
    assert len(server) == 1001 and b"".join(l.raw for l in server) == reply
    assert server[0].text == "* 1 FETCH (FLAGS (\\Seen))" and server[-1].text == "a1 OK done"
    assert {(l.conn, l.service, l.peer) for l in server} == {(conn.id, "imap:example.com", "127.0.0.1:5005")}


def test_the_oldest_lines_of_a_block_go_first_and_the_rest_stays():
    rec = Recorder(limit=250)
    conn = rec.open("pop3:example.com", "127.0.0.1:5006")  # 1 event line
    conn.client(b"RETR 1\r\n")  # 1 line
    conn.server(b"".join(b"line %d\r\n" % i for i in range(300)))  # 300 lines in one read
    lines = rec.lines()
    assert len(lines) == 250 and rec.dropped == 52
    assert lines[0].text == "line 50" and lines[-1].text == "line 299"
    assert rec.memory == sum(len(l.raw) for l in lines) + 200  # one entry's overhead
    conn.client(b"QUIT\r\n")
    assert [l.text for l in rec.lines()][:2] == ["line 51", "line 52"]


def test_a_refusal_inside_a_run_of_lines_is_seen():
    # An IMAP server's tagged NO in the middle of a pipelined run of answers still starts the
    # count of refused commands, as it would line by line.
    rec = Recorder()
    conn = rec.open("imap:example.com", "127.0.0.1:5007")
    for i in range(25):
        conn.client(b"x%d BOGUS\r\n" % i)
        conn.server(b"* OK still here\r\nx%d BAD unknown command\r\n* OK more\r\n" % i)
    assert conn.refusals_in_a_row == 25
    t = Transcript(rec.lines())
    assert len(t.client_lines()) == 20  # the rest are counted, not kept
    conn.client(b"x99 NOOP\r\n")
    conn.server(b"x99 NO [x] no\r\n* 1 EXISTS\r\nx99 OK fine\r\n")
    assert conn.refusals_in_a_row == 0  # OK ended the run (the NO in the same read counted first)


def test_the_answer_to_a_command():
    rec = Recorder()
    pop = rec.open("pop3:example.net", "127.0.0.1:5001")
    pop.server(b"+OK ready\r\n")
    pop.client(b"user john\r\n")
    pop.server(b"+OK\r\n")
    pop.client(b"PASS postman\r\n")
    pop.server(b"-ERR [IN-USE] maildrop already in use\r\n")
    pop.client(b"DELE 1\r\n")
    pop.server(b"-ERR not logged in\r\n")
    imap = rec.open("imap:example.com", "127.0.0.1:5002")
    imap.server(b"* OK ready\r\n")
    imap.client(b"a1 SELECT INBOX\r\n")
    imap.server(b"* 3 EXISTS\r\na1 OK done\r\n")
    t = Transcript(rec.lines())
    assert t.answer_to("pass") == "-ERR [IN-USE] maildrop already in use"
    assert t.answer_to("DELE") == "-ERR not logged in"
    assert t.answer_to("SELECT") == "* 3 EXISTS"  # IMAP: the tag is not the command
    assert t.answer_to("RETR") == "" and Transcript([]).answer_to("DELE") == ""
    asked_last = Transcript(l for l in rec.lines() if l.text != "-ERR not logged in")
    assert asked_last.filter(service="pop3").answer_to("DELE") == ""  # asked, no answer yet


def test_the_last_session_that_sent_a_line():
    rec = Recorder()
    for subject in ("first", "second"):
        conn = rec.open("smtp:example.com", "127.0.0.1:5003")
        conn.server(b"220 hi\r\n")
        conn.client(f"RCPT TO:<{subject}@example.com>\r\n".encode())
        conn.server(b"550 no\r\n")
        conn.close()
    t = Transcript(rec.lines())
    assert t.last(sent="first@").client_lines() == ["RCPT TO:<first@example.com>"]
    assert t.last().client_lines() == ["RCPT TO:<second@example.com>"]
    assert len(t.last(sent="nobody@")) == 0 and t.last(sent="nobody@").server_lines() == []


def test_event_lines_are_shown_in_the_learners_language_and_kept_in_english():
    from maillab.i18n import set_language
    from maillab.widgets._common import render_lines
    rec = Recorder(per_connection=2)
    conn = rec.open("pop3:example.net", "127.0.0.1:5004")
    conn.server(b"+OK hi\r\n+OK 1\r\n+OK 2\r\n+OK 3\r\n")
    conn.close()
    t = Transcript(rec.lines())
    events = [l.text for l in t if l.who == "*"]
    assert events[0] == "connection from 127.0.0.1:5004" and events[-1] == "connection closed"
    set_language("el")
    try:
        shown = str(t)
        page = render_lines(t.lines)
    finally:
        set_language("en")
    assert shown.startswith("=== pop3:example.net, σύνδεση 1 (127.0.0.1:5004) ===\n"
                            "-- σύνδεση από 127.0.0.1:5004"), shown
    assert "-- άλλες 2 γραμμές του διακομιστή δεν κρατήθηκαν" in shown
    assert shown.endswith("-- η σύνδεση έκλεισε") and "connection" not in shown
    assert "σύνδεση από 127.0.0.1:5004" in page and "connection closed" not in page
    assert [l.text for l in t if l.who == "*"] == events  # the evidence stays as recorded
