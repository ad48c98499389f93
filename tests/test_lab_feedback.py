"""What the labs tell a learner who slipped (issue 11, section 4): replies and hints that say what
really happened, and never ask for what the task forbids."""

from __future__ import annotations

import socket

import pytest

import maillab
from maillab import grading


@pytest.fixture(scope="module")
def lab():
    lab = maillab.start(ports="any", tls=False)
    yield lab
    lab.stop()


def pop3(lab, user: str, password: str):
    sock = socket.create_connection((lab.host, lab.pop3_port), timeout=5)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"+OK")
    for line in (f"USER {user}", f"PASS {password}"):
        sock.sendall(line.encode() + b"\r\n")
        reply = f.readline()
    return sock, f, reply


def test_a_socket_closed_while_its_file_is_open_gets_a_hint_that_fits_the_drop_task(lab):
    """POP3 lab, part 7 ("drop the connection without QUIT"): sock.close() alone leaves the
    connection open while the makefile() file holds it, so the next login is refused with
    [IN-USE]. The hint said "it must QUIT first": what the task forbids. It must say that
    closing the connection ends the session too, and that the file keeps it open."""
    user, password = grading.make_account(lab, [grading.sample(1), grading.sample(2)])
    sock, f, reply = pop3(lab, user, password)
    assert reply.startswith(b"+OK")
    sock.sendall(b"DELE 1\r\n")
    assert f.readline().startswith(b"+OK")
    sock.close()  # the file f still holds the connection: the server sees nothing
    sock2, f2, refused = pop3(lab, user, password)
    text = refused.decode()
    assert text.startswith("-ERR [IN-USE] "), text
    assert "QUIT first" not in text, text
    assert "closing its connection" in text and "makefile()" in text, text
    f.close()  # now the connection really closes: the session ends without UPDATE
    sock2.close(), f2.close()
    sock3, f3, again = pop3(lab, user, password)
    assert again.startswith(b"+OK"), again
    sock3.sendall(b"STAT\r\n")
    assert f3.readline().startswith(b"+OK 2 "), "a dropped session deleted something"
    sock3.sendall(b"QUIT\r\n")
    f3.readline()
    f3.close(), sock3.close()


def test_a_command_without_its_line_end_times_out_with_a_hint(lab):
    """A learner's client that forgets \\r\\n waits for an answer that never comes and ends in a
    TimeoutError deep in its own read_reply: the feedback asks whether the server got a whole
    line (before: a bare TimeoutError)."""
    def ehlo_without_line_end(host, port):
        sock = socket.create_connection((host, port), timeout=0.5)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO forgetful.example.org")  # no \r\n: the server waits for the rest
        return f.readline()

    with pytest.raises(TimeoutError) as e:
        with grading.watch(lab):
            ehlo_without_line_end(lab.host, lab.smtp_port)
    notes = getattr(e.value, "__notes__", [])
    assert any("whole line" in n and "\\r\\n" in n for n in notes), notes


def test_the_sealed_grader_gives_the_same_hint(lab):
    from maillab.grader.checks import explain_learner_error

    class LearnerTimeout(TimeoutError):
        learner_text = "timed out"
    assert "whole line" in explain_learner_error(LearnerTimeout("timed out"), "timed out")
    assert explain_learner_error(ValueError("x"), "x") == "x"
