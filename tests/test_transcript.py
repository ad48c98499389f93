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
