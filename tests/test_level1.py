"""Level 1 of the graded labs: sessions typed by hand, graded per step from the servers' evidence
(maillab.grading, section "Level 1"). Each slip a learner makes costs the step it breaks, and
the failed step says in one line what the server saw."""

from __future__ import annotations

import base64
import time

import pytest

import maillab
from maillab import grading
from maillab.sessions import run_session

TOKEN = base64.b64encode(b"\0alice\0wonderland").decode()
SUBMIT = f"""EHLO laptop.example.com
STARTTLS
EHLO laptop.example.com
AUTH PLAIN {TOKEN}
MAIL FROM:<alice@example.com>
RCPT TO:<john@example.net>
DATA
From: alice@example.com
To: john@example.net
Subject: Hello John

Hello from example.com!
.
QUIT"""


@pytest.fixture(scope="module")
def lab():
    lab = maillab.start(ports="any")
    grading.seal(lab)
    yield lab
    lab.stop()


def typed(lab, text: str, **options) -> grading.CellEvidence:
    """The evidence of one session cell, as grading.during() gives it to a test cell."""
    start = time.time()
    run_session("smtp", "example.com", text, lab=lab, **options)
    return grading.CellEvidence(lab, start, time.time())


def submission_steps(lab, text: str) -> grading.Steps:
    return grading.smtp_steps(typed(lab, text, submission=True), "submission:example.com",
                              rcpt="john@example.net", user="john", login="alice", tls=True,
                              headers=("From", "To", "Subject"))


def failed(steps: grading.Steps) -> dict[str, str]:
    return {name: problem for name, (_what, problem) in steps.results.items() if problem}


def test_a_correct_submission_passes_every_step(lab):
    steps = submission_steps(lab, SUBMIT)
    assert failed(steps) == {}
    for name in steps.results:
        steps.check(name)
    assert grading.again(steps).results == steps.results
    assert "[ ]" not in str(steps)


@pytest.mark.parametrize("slip, text, broken, says", [
    ("no blank line", SUBMIT.replace("John\n\n", "John\n"), {"message"},
     "no blank line between the headers and the body: 'Hello from example.com!' was stored"),
    ("no QUIT", SUBMIT.rsplit("\n", 1)[0], {"quit"}, "no QUIT"),
    ("RCPT before MAIL", SUBMIT.replace(
        "MAIL FROM:<alice@example.com>\nRCPT TO:<john@example.net>",
        "RCPT TO:<john@example.net>\nMAIL FROM:<alice@example.com>"),
     {"envelope", "message", "headers"}, "'RCPT TO:<john@example.net>' with '503"),
    ("a typo", SUBMIT.replace("RCPT TO", "RCTP TO"), {"envelope", "message", "headers"},
     "'RCTP TO:<john@example.net>' with '500"),
    ("no final dot", SUBMIT.replace(".\nQUIT", "QUIT"), {"message", "headers", "quit"},
     "the message never ended"),
    ("no EHLO after STARTTLS", SUBMIT.replace("STARTTLS\nEHLO laptop.example.com", "STARTTLS"),
     {"tls", "login", "envelope", "message", "headers"}, "no EHLO after STARTTLS"),
    ("a wrong password", SUBMIT.replace(TOKEN, base64.b64encode(b"\0alice\0alice").decode()),
     {"login", "envelope", "message", "headers"}, "AUTH was refused: '535"),
    ("no Subject", SUBMIT.replace("Subject: Hello John\n", ""), {"headers"}, "no Subject:"),
])
def test_each_slip_costs_the_steps_it_breaks(lab, slip, text, broken, says):
    steps = submission_steps(lab, text)
    assert set(failed(steps)) == broken, str(steps)
    assert any(says in problem for problem in failed(steps).values()), str(steps)
    with pytest.raises(AssertionError) as e:
        steps.check(sorted(broken)[0])
    assert "\n" not in str(e.value)  # one line


def test_the_student_versions_placeholder_lines_earn_nothing(lab):
    # the session cell sends nothing of nbgrader's placeholder (and says to write the session)
    steps = submission_steps(lab, "# YOUR CODE HERE\nraise NotImplementedError()")
    assert set(failed(steps)) == set(steps.results)
    assert "made no connection to submission:example.com" in failed(steps)["tls"]


def test_a_session_on_another_port_is_no_evidence(lab):
    steps = grading.smtp_steps(typed(lab, "EHLO me\nQUIT"), "submission:example.com",
                               rcpt="john@example.net", user="john")  # typed on port 25
    assert set(failed(steps)) == {"hello", "envelope", "message", "headers", "quit"}
    assert "made no connection to submission:example.com" in failed(steps)["hello"]


def test_a_session_without_data_says_no_message_was_sent(lab):
    text = SUBMIT.split("DATA")[0] + "QUIT"
    steps = grading.smtp_steps(typed(lab, text, submission=True), "submission:example.com",
                               rcpt="john@example.net", user="john", login="alice", tls=True)
    assert failed(steps)["message"] == "no DATA command: the server got no message"


def test_of_two_refused_logins_the_last_ones_answer_is_quoted(lab):
    import base64
    wrong = base64.b64encode(b"\0alice\0not-the-password").decode()
    text = SUBMIT.replace(f"AUTH PLAIN {TOKEN}", f"AUTH PLAIN !!!\nAUTH PLAIN {wrong}")
    steps = grading.smtp_steps(typed(lab, text, submission=True), "submission:example.com",
                               rcpt="john@example.net", user="john", login="alice", tls=True)
    assert failed(steps)["login"].startswith("AUTH was refused: '535"), failed(steps)["login"]


def test_a_date_must_be_a_date(lab):
    text = SUBMIT.replace("Subject:", "Date: yesterday\nSubject:")
    steps = grading.smtp_steps(typed(lab, text, submission=True), "submission:example.com",
                               rcpt="john@example.net", user="john", login="alice", tls=True)
    assert set(failed(steps)) == {"headers"}
    assert "'yesterday' is not a date" in failed(steps)["headers"]


def test_the_fresh_copy_reads_the_cell_times_of_the_installed_module(lab, monkeypatch):
    """Hidden tests call _g.during(lab) on grading.fresh(lab)'s copy of the module, whose own
    cell hooks never ran (before: 'that cell has not run in this kernel')."""
    limit = grading._CellLimit(8, 3)
    limit.windows = [("cell-a", 1.0, 2.0), ("cell-b", 3.0, 4.0)]
    monkeypatch.setattr(grading, "_limit", limit)
    monkeypatch.setattr(grading, "verify", lambda lab: None)
    import importlib.util
    spec = importlib.util.spec_from_file_location("maillab_grading_fresh", grading.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy._limit is None
    found = copy.during(lab)
    assert (found.start, found.end) == (3.0, 4.0)
    assert copy.during(lab, "cell-a").start == 1.0


POP3_BOX = "USER bob\nPASS builder\nSTAT\nRETR 1\nDELE 2\nQUIT"
IMAP_BOX = r"""a1 LOGIN bob builder
a2 CREATE Homework
a3 SELECT INBOX
a4 MOVE 3 Homework
a5 SELECT Homework
a6 STORE 1 +FLAGS (\Flagged)
a7 SEARCH FLAGGED
a8 LOGOUT"""


def box_steps(lab, protocol: str, text: str) -> grading.Steps:
    """Bob's mailbox filled afresh, the session typed, its steps worked out."""
    grading.fill_mailbox(lab, "bob", "builder", "bob@example.com", drop="Homework")
    start = time.time()
    run_session(protocol, "example.com", text, lab=lab)
    ev = grading.CellEvidence(lab, start, time.time())
    if protocol == "pop3":
        steps = grading.pop3_steps(ev, "pop3:example.com", user="bob", retr=1, dele=2)
    else:
        steps = grading.imap_steps(ev, "imap:example.com", user="bob", folder="Homework",
                                   subject="Homework for Monday")
    assert grading.again(steps).results == steps.results
    return steps


@pytest.mark.parametrize("protocol, text, broken", [
    ("pop3", POP3_BOX, set()),
    ("pop3", POP3_BOX.replace("\nQUIT", ""), {"quit"}),  # nothing deleted without UPDATE
    ("pop3", POP3_BOX.replace("PASS", "PAS"), {"login", "look", "retr", "dele", "quit", "kept"}),
    ("pop3", POP3_BOX.replace("DELE 2", "DELE 2\nDELE 3"), {"kept"}),
    ("pop3", "STAT\n" + POP3_BOX.replace("STAT\n", ""), {"look"}),
    # SASL PLAIN (RFC 5034) instead of USER and PASS: the base64 on the line, or after '+ '
    ("pop3", POP3_BOX.replace("USER bob\nPASS builder", "AUTH PLAIN AGJvYgBidWlsZGVy"), set()),
    ("pop3", POP3_BOX.replace("USER bob\nPASS builder", "AUTH PLAIN\nAGJvYgBidWlsZGVy"), set()),
    ("pop3", "# YOUR CODE HERE\nraise NotImplementedError()",  # the student version: nothing
     {"login", "look", "retr", "dele", "quit", "kept"}),
    ("imap", IMAP_BOX, set()),
    ("imap", IMAP_BOX.replace("\na8 LOGOUT", ""), {"logout"}),
    ("imap", IMAP_BOX.replace("MOVE 3", "COPY 3"), {"move"}),
    ("imap", IMAP_BOX.replace("a6 STORE", "STORE"), {"flag", "search"}),
    ("imap", IMAP_BOX.replace("a2 CREATE", "a2 CRAETE"), {"create", "move", "flag", "search"}),
    ("imap", "# YOUR CODE HERE\nraise NotImplementedError()",
     {"login", "create", "move", "flag", "search", "logout"}),
])
def test_mailbox_sessions_typed_by_hand(lab, protocol, text, broken):
    steps = box_steps(lab, protocol, text)
    assert set(failed(steps)) == broken, str(steps)


def test_a_pop3_sasl_login_as_someone_else_is_named(lab):
    alice = POP3_BOX.replace("USER bob\nPASS builder", "AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=")
    steps = box_steps(lab, "pop3", alice)
    assert "you logged in as alice, not as bob" in str(steps)


def test_an_earlier_cells_session_ending_during_this_cell_is_no_evidence():
    """A connection whose first lines came before the cell, and only its last (a late answer,
    the hang-up) during it, belongs to the earlier cell: before, its tail alone was taken for
    this cell's session ('no EHLO was accepted' instead of 'made no connection')."""
    from maillab.transcript import Line

    class Lines:
        def __init__(self, lines):
            self._lines = lines

        def lines(self):
            return self._lines

    class Lab:
        recorder = Lines([
            Line(1.0, "smtp:submission:example.com", 7, "*", b"connected\r\n"),
            Line(1.1, "smtp:submission:example.com", 7, "C", b"# YOUR CODE HERE\r\n"),
            Line(2.5, "smtp:submission:example.com", 7, "S", b"530 5.7.0 Must issue STARTTLS\r\n"),
            Line(2.6, "smtp:submission:example.com", 7, "*", b"closed\r\n"),
            Line(2.7, "smtp:example.com", 8, "*", b"connected\r\n"),
        ])

    evidence = grading.CellEvidence(Lab(), 2.0, 3.0)
    assert evidence.sessions("smtp:submission:example.com") == []
    assert [s.lines[0].conn for s in evidence.sessions("smtp")] == [8]
    assert [s.lines[0].conn for s in grading.CellEvidence(Lab(), 0.5, 3.0).sessions("smtp")] \
        == [7, 8]


def test_a_pop3_session_run_twice_is_named_with_the_way_back(lab):
    # the second run's DELE 2 deletes another message (the first run's 2 is gone): the step
    # says what happened and how to start over, not only "keep a copy of the rest"
    box_steps(lab, "pop3", POP3_BOX)
    start = time.time()
    run_session("pop3", "example.com", POP3_BOX, lab=lab)
    ev = grading.CellEvidence(lab, start, time.time())
    steps = grading.pop3_steps(ev, "pop3:example.com", user="bob", retr=1, dele=2)
    assert set(failed(steps)) == {"kept"}, str(steps)
    assert "run the cell that fills the mailbox, then your session once" in failed(steps)["kept"]


def test_a_refusal_quoted_in_a_greek_lab_says_what_the_server_said_in_greek(lab):
    # the reply is quoted as sent (English on the wire, cut short), and its hint follows in the
    # learner's language: a cut English reply alone told a Greek pupil nothing
    from maillab.i18n import set_language
    set_language("el")
    try:
        steps = submission_steps(lab, SUBMIT.replace(f"AUTH PLAIN {TOKEN}\n", ""))
    finally:
        set_language("en")
    envelope = failed(steps)["envelope"]
    assert "'530 5.7.0 Authentication required" in envelope, envelope
    assert "(Υπόδειξη: συνδέσου πρώτα με AUTH PLAIN ή AUTH LOGIN)" in envelope, envelope
    english = failed(submission_steps(lab, SUBMIT.replace(f"AUTH PLAIN {TOKEN}\n", "")))
    assert "Υπόδειξη" not in english["envelope"] and "(hint: log in" in english["envelope"]
