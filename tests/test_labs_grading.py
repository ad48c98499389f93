"""maillab.grading in-process: sealed evidence, integrity checks, evidence helpers."""

from __future__ import annotations

import smtplib
import socket
import time
import threading

import pytest

import maillab
from maillab import grading
from maillab.transcript import Line


@pytest.fixture(scope="module")
def lab():
    lab = maillab.start(ports="any", tls=False)
    grading.seal(lab)
    yield lab
    lab.stop()


def test_the_transcript_refuses_lines_from_notebook_code(lab):
    before = len(lab.recorder.lines())
    lab.recorder._add(Line(time.time(), "smtp:example.com", 10**6, "C", b"EHLO forged\r\n"))
    assert len(lab.recorder.lines()) == before
    assert lab.recorder._lines.refused >= 1
    with grading.watch(lab) as ev:
        with smtplib.SMTP(lab.host, lab.smtp_port, local_hostname="real.example.org") as c:
            c.ehlo()
    assert ev.session("smtp:example.com").client_lines[0] == "ehlo real.example.org"


def test_verify_passes_a_clean_lab_and_names_each_kind_of_tampering(lab, monkeypatch):
    grading.verify(lab)
    monkeypatch.setattr(maillab.lab.MailLab, "mailbox", lambda self, user, folder="INBOX": [])
    monkeypatch.setattr(grading, "maildir", lambda *a, **k: {})
    monkeypatch.setattr(lab, "transcript", lambda *a, **k: None, raising=False)
    with pytest.raises(grading.Tampered) as e:
        grading.verify(lab)
    text = str(e.value)
    assert "MailLab.mailbox was changed" in text
    assert "maillab.grading: maildir was changed" in text
    assert "MailLab.transcript was replaced on the object" in text


def test_verify_notices_an_unsealed_transcript(lab, monkeypatch):
    from collections import deque
    monkeypatch.setattr(lab.recorder, "_lines", deque(lab.recorder._lines, maxlen=10))
    with pytest.raises(grading.Tampered, match="not sealed"):
        grading.verify(lab)


def test_a_delivery_counts_only_with_the_queue_id_of_the_session(lab):
    with grading.watch(lab) as ev:
        acct = lab.store.account("bob")
        acct.folder("INBOX").deliver(b"Received: from x by y with ESMTP id FAKE1;\r\n\r\nforged\r\n")
        sock = socket.create_connection((lab.host, lab.smtp_port))
        f = sock.makefile("rb")
        for line in (b"", b"EHLO a.example.org\r\n", b"MAIL FROM:<alice@example.com>\r\n",
                     b"RCPT TO:<bob@example.com>\r\n", b"DATA\r\n",
                     b"Subject: x\r\n\r\n..dot\r\n.\r\n", b"QUIT\r\n"):
            sock.sendall(line)
            while True:
                reply = f.readline()
                if reply[3:4] != b"-":
                    break
        sock.close()
    s = ev.session("smtp:example.com")
    assert s.commands() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert s.data_payloads() == [b"Subject: x\r\n\r\n..dot\r\n"]
    assert grading.unstuff(s.data_payloads()[0]) == b"Subject: x\r\n\r\n.dot\r\n"
    got = ev.delivered("bob", s)
    assert [m.body for m in got] == [b"Subject: x\r\n\r\n.dot\r\n"]
    assert len(ev.new_messages("bob")) == 2  # the forged one is there, but does not count


def test_imap_commands_skip_literals():
    lines = [Line(0, "imap:example.com", 1, "C", raw) for raw in
             (b"a1 LOGIN x y\r\n", b"a2 APPEND INBOX {11}\r\n", b"a3 NOOP\r\n", b"ab\r\n",
              b"a4 UID FETCH 1 BODY[]\r\n")]
    assert grading.Session(lines).commands(tagged=True) == ["LOGIN", "APPEND", "UID FETCH"]


def test_lines_a_server_asked_for_are_not_commands(lab):
    with grading.watch(lab) as ev:
        with smtplib.SMTP(lab.host, lab.smtp_port, local_hostname="pc.example.org") as c:
            c.ehlo()
            c.user, c.password = "alice", "wonderland"
            c.auth("LOGIN", c.auth_login)  # 334 Username:, 334 Password:
            c.sendmail("alice@example.com", ["bob@example.com"], "Subject: x\r\n\r\nhi\r\n")
    s = ev.session("smtp:example.com")
    assert s.commands() == ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"], s.commands()
    # IMAP: AUTHENTICATE's answer to '+' and IDLE's DONE; POP3: AUTH's answer to '+ '
    imap = [("C", b"a1 AUTHENTICATE PLAIN\r\n"), ("S", b"+ \r\n"), ("C", b"AGFsaWNlAHg=\r\n"),
            ("S", b"a1 OK\r\n"), ("C", b"a2 IDLE\r\n"), ("S", b"+ idling\r\n"),
            ("C", b"DONE\r\n"), ("S", b"a2 OK\r\n"), ("C", b"a3 LOGOUT\r\n")]
    session = grading.Session([Line(0, "imap:example.com", 1, w, raw) for w, raw in imap])
    assert session.commands(tagged=True) == ["AUTHENTICATE", "IDLE", "LOGOUT"]
    pop3 = [("S", b"+OK ready\r\n"), ("C", b"AUTH PLAIN\r\n"), ("S", b"+ \r\n"),
            ("C", b"AGFsaWNlAHg=\r\n"), ("S", b"+OK\r\n"), ("C", b"STAT\r\n"),
            ("S", b"+OK 0 0\r\n"), ("C", b"QUIT\r\n")]
    session = grading.Session([Line(0, "pop3:example.com", 1, w, raw) for w, raw in pop3])
    assert session.commands() == ["AUTH", "STAT", "QUIT"]


def test_a_fresh_account_with_messages_and_flags(lab):
    user, password = grading.make_account(lab, [grading.sample(1), grading.sample(2)],
                                          flags=[("\\Seen",)])
    files = grading.maildir(lab, user)
    assert len(files) == 2
    assert sorted(len(grading.DiskMessage(p).flags) for p in files.values()) == [0, 1]
    assert lab.store.authenticate(user, password) is not None


def test_the_cell_limit_is_only_armed_in_ipython():
    grading.limit_cells(1)  # outside IPython: nothing happens, nothing breaks
    assert threading.current_thread() is threading.main_thread()
    assert issubclass(grading.CellTimeLimit, BaseException)
    assert not issubclass(grading.CellTimeLimit, Exception)


def test_a_cell_that_ends_the_kernel_still_defines_its_functions():
    source = ("import os\n@staticmethod\ndef read_reply(f):\n    return f.readline()\n"
              "class POP3Error(Exception):\n    pass\nx = read_reply\nos._exit(1)\n")
    kept = grading.definitions(source)
    assert "def read_reply" in kept and "class POP3Error" in kept and "import os" in kept
    assert "_exit" not in kept and "x = " not in kept
    assert grading.definitions("%%smtp\nEHLO me") == ""  # not Python: nothing to replay


def test_hidden_tests_are_split_from_what_learners_see():
    source = "a = 1\n### BEGIN HIDDEN TESTS\n_g = grading.fresh(lab)\na = 1\n### END HIDDEN TESTS\nb = 2"
    visible, hidden = grading.split_hidden(source)
    assert visible == ["a = 1", "b = 2"] and hidden == ["_g = grading.fresh(lab)", "a = 1"]
    assert grading.visible_source(source) == "a = 1\nb = 2"


def test_plain_nbgrader_keeps_the_functions_of_a_cell_that_ended_the_kernel(tmp_path):
    """The corpus's killcell, autograded by a plain nbgrader: the kernel ends at the end of the
    cell that defines read_reply, every part still gets its points (before: read_reply was lost
    with the kernel, and every part that calls it failed)."""
    import json

    from labcourse import ROOT, Course

    course = Course(tmp_path / "course", ["smtp"])
    course.generate("smtp")
    course.submit("smtp", "killcell", ROOT / "tests" / "lab_corpus" / "smtp" / "killcell.ipynb")
    course.autograde("smtp", "killcell")
    grades = course.grades("smtp", "killcell")
    expected = json.loads((ROOT / "tests" / "lab_corpus" / "expected.json").read_text())
    assert sum(v or 0 for v in grades.values()) == expected["smtp"]["killcell"]["score"] == 90
