"""The course widgets (maillab.widgets) and Transcript.diagram(), driven against a real lab."""

from __future__ import annotations

import base64
import poplib
import smtplib
import threading
import time

import pytest

import maillab
from maillab.transcript import Line, SequenceDiagram, Transcript
from maillab.widgets import (Console, Journey, JourneyView, MailboxView, Question, Quiz,
                             TranscriptViewer, bar_chart, explain)
from maillab import explain as replies


@pytest.fixture
def lab():
    lab = maillab.MailLab(ports="any").start()
    try:
        yield lab
    finally:
        lab.stop()


def send(lab, frm="alice", password="wonderland", to=("john@example.net",), subject="Hello",
         body="Hi John,\r\nsee you at the lab.\r\n"):
    acct = lab.account(frm)
    with smtplib.SMTP("127.0.0.1", lab.smtp_port if acct.domain == "example.com"
                      else lab.port("smtp", acct.domain), timeout=5) as s:
        s.login(frm, password)
        s.sendmail(acct.address, list(to),
                   f"From: {acct.address}\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n\r\n{body}")
    lab.settle()


def pop3(lab, user, password, domain="example.com"):
    p = poplib.POP3("127.0.0.1", lab.port("pop3", domain), timeout=5)
    p.user(user)
    p.pass_(password)
    return p


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def poll_threads():
    return [t for t in threading.enumerate() if t.name == "maillab-widget-poll"]


# ---------------------------------------------------------------- reply explanations
def test_explain_knows_every_protocol():
    assert "Go ahead" in explain("smtp:example.com", "354 End data with <CR><LF>.<CR><LF>")
    assert "permanent" in explain("smtp", "550 5.1.1 <x@example.com>: no such user here")
    assert "temporary" in explain("smtp", "451 4.3.0 try later")
    assert "more lines" in explain("smtp", "250-SIZE 10485760")
    assert "extension" in explain("smtp", "250-SIZE 10485760")
    assert "extension" not in explain("smtp", "250 2.1.0 OK")  # MAIL FROM's OK is no EHLO list
    assert "start TLS" in explain("smtp", "220 Ready to start TLS")
    assert "Login failed" in explain("smtp", "535 5.7.8 Authentication credentials invalid")
    assert "worked" in explain("pop3:example.net", "+OK 2 320")
    assert "failed" in explain("pop3", "-ERR no such message")
    assert "finished but failed" in explain("imap", "a1 NO [AUTHENTICATIONFAILED] wrong")
    assert "wrong user name" in explain("imap", "a1 NO [AUTHENTICATIONFAILED] wrong")
    assert "EXISTS" not in (explain("imap", "* 3 EXISTS") or "X") and \
        "holds" in explain("imap", "* 3 EXISTS")
    assert "UIDVALIDITY" in explain("imap", "* OK [UIDVALIDITY 17] UIDs valid")
    assert "Continuation" in explain("imap", "+ idling")
    assert "redirect" in explain("http", "HTTP/1.1 302 Found")
    assert explain("smtp", "hello there") is None
    assert explain("unknown:x", "250 OK") is None


def test_explanations_go_through_the_translation_function(monkeypatch):
    monkeypatch.setattr(replies, "_", lambda text: "\u00bb" + text)
    assert explain("smtp", "221 Bye").startswith("\u00bb")
    assert explain("pop3", "+OK").startswith("\u00bb")


def test_explanations_are_greek_in_a_greek_lab_with_the_servers_hint_beside_them():
    from maillab import i18n
    from maillab.widgets import journey

    tables = [replies.SMTP_CODES, replies.SMTP_CLASS, replies.POP3_STATUS, replies.IMAP_TAGGED,
              replies.IMAP_UNTAGGED, replies.IMAP_CODES, replies.HTTP_CODES, journey._EXPLAIN]
    hinted = "452 4.5.3 too many recipients (hint: at most 100 per message)"
    with i18n.language("el"):
        untranslated = [english for table in tables for english in table.values()
                        if i18n._(english) == english]
        assert not untranslated
        greek = explain("smtp", hinted)
        # the hint went out in English on the wire; beside the reply it is Greek, number kept
        assert "Υπόδειξη: το πολύ 100 ανά μήνυμα" in greek and "at most" not in greek
        assert "Ο διακομιστής λέει: συνδέσου πρώτα" in explain(
            "imap", "a1 BAD FETCH: log in first, for example: a1 LOGIN alice password")
        assert "Ο διακομιστής λέει" not in explain("imap", "a1 OK done, 42 zorglubs")  # unknown
    with i18n.language("en"):
        english = explain("smtp", hinted)
        assert "at most" not in english and "Hint" not in english  # shown once, in the reply


# ---------------------------------------------------------------- Transcript.diagram()
def test_diagram_is_mermaid_of_a_real_session(lab):
    send(lab, subject="diagram; #1 <test>")
    d = lab.transcript().diagram()
    assert isinstance(d, SequenceDiagram)
    text = d.text
    assert text.startswith("sequenceDiagram\n")
    assert "participant P1 as alice's client" in text
    assert "as mail.example.com" in text and "as mail.example.net" in text
    # the relay: mail.example.com is the client of mail.example.net
    assert "ehlo mail.example.com" in text.lower()
    # characters mermaid would read itself are written as entity codes
    assert "#60;alice@example.com#62;" in text
    assert "#59;" in text and "#35;1" in text and "<test>" not in text
    assert str(d) == text
    md = d._repr_markdown_()
    assert md.startswith("```mermaid\n") and md.endswith("\n```")
    # one arrow per run of lines: the EHLO reply is folded
    assert "more lines)" in text
    assert d.arrows < len(lab.transcript())


def test_diagram_limits_and_empty():
    assert Transcript([]).diagram().text.strip() == "sequenceDiagram"
    lines = [Line(float(i), "pop3:example.com", 1, "CS"[i % 2], f"NOOP {i}\r\n".encode())
             for i in range(50)]
    d = Transcript(lines).diagram(max_arrows=10)
    assert d.arrows == 10 and "more lines not drawn" in d.text


def test_diagram_folds_routine_exchanges(lab):
    # issue 11: the 05-webmail picture was ~3,800 px tall, mostly CAPABILITY and STATUS
    import imaplib
    imap = imaplib.IMAP4("127.0.0.1", lab.imap_port)
    imap.login("alice", "wonderland")
    imap.capability()
    for folder in ("INBOX", "Sent", "Trash"):
        imap.status(folder, "(MESSAGES UNSEEN)")
    imap.select("INBOX")
    imap.logout()
    session = lab.transcript("imap").last()
    full, brief = session.diagram(skip=()), session.diagram()
    assert "STATUS" in full.text and "CAPABILITY" in full.text.split("LOGIN")[1]
    arrows = [l for l in brief.text.splitlines() if "->>" in l]
    assert not [a for a in arrows if " STATUS " in a or a.rstrip().endswith("CAPABILITY")]
    assert "not drawn: CAPABILITY, STATUS \u00d73" in brief.text
    assert any("SELECT INBOX" in a for a in arrows) and any("LOGIN" in a for a in arrows)
    assert brief.arrows <= full.arrows - 8


def test_transcript_api_is_unchanged(lab):
    send(lab)
    t = lab.transcript("smtp:example.com")
    assert t.connections() and t.client_lines()[0].lower().startswith("ehlo")
    assert "<table>" in t._repr_html_()
    assert str(t).startswith("=== smtp:example.com")


# ---------------------------------------------------------------- transcript viewer
def test_viewer_shows_coloured_lines_with_explanations(lab):
    send(lab)
    v = TranscriptViewer(lab, "smtp:example.com", live=False)
    html = v.html.value
    assert 'class="ml-C"' in html and 'class="ml-S"' in html
    assert "AUTH PLAIN" in html
    assert '<details class="ml-exp"><summary title="Go ahead' in html  # hover and click
    assert "logged in as alice" in html
    v.explain_box.value = True
    assert '<details class="ml-exp" open>' in v.html.value
    assert "smtp:example.net" not in v.html.value
    v.close()


def test_viewer_follows_the_lab_live_and_stops_with_it(lab):
    v = TranscriptViewer(lab, "pop3", interval=0.05)
    assert v.live and "Nothing recorded yet" in v.html.value
    p = pop3(lab, "alice", "wonderland")
    p.stat()
    p.quit()
    assert wait_for(lambda: "STAT" in v.html.value), "the viewer did not update by itself"
    assert "live" in v.status.value
    lab.stop()
    assert wait_for(lambda: not v.live, 1.0)
    assert not poll_threads()
    assert "lab stopped" in v.status.value


def test_viewer_on_a_fixed_transcript_and_new_lines_only(lab):
    send(lab)
    fixed = TranscriptViewer(lab.transcript().last())
    assert not fixed.live and "smtp:example.net" in fixed.html.value
    v = TranscriptViewer(lab, live=False)
    v.show_new_only()
    assert "Nothing recorded yet" in v.html.value
    send(lab, subject="second")
    v.refresh_button.click()
    assert "second" in v.html.value


# ---------------------------------------------------------------- console
def test_console_smtp_by_hand(lab):
    c = Console(lab)
    assert c.connected and c.history[-1][1].startswith("220 mail.example.com")
    started = time.monotonic()
    assert c.send("EHLO laptop.example.com").startswith("250-mail.example.com")
    assert c.send("MAIL FROM:<bob@example.com>").startswith("250")
    assert c.send("RCPT TO:<alice@example.com>").startswith("250")
    assert c.send("DATA").startswith("354")
    for line in ("Subject: typed by hand", "", "Hello Alice"):
        assert c.send(line) == ""  # no reply inside DATA
    assert "queued as" in c.send(".")
    assert c.send("QUIT").startswith("221")
    assert time.monotonic() - started < 2, "the console waited longer than the replies needed"
    assert not c.connected  # the server closed the connection after QUIT
    assert [m.subject for m in lab.mailbox("alice")] == ["typed by hand"]
    assert "hint" in Console(lab).send("RCPT TO:<x@example.com>")  # a mistake, with a hint
    assert "C: DATA" in c.transcript_text()


def test_console_a_forgotten_final_dot_is_named(lab):
    # QUIT after a message without its final dot is a line of the message: the server says
    # nothing, so the console says why, and the session goes on once the dot comes
    c = Console(lab)
    for line in ("EHLO me.example.org", "MAIL FROM:<bob@example.com>", "RCPT TO:<alice@example.com>",
                 "DATA", "Subject: no dot", "", "Hi", "Quit"):
        c.send(line)
    remark = c.history[-1]
    assert remark[0] == "*" and remark[1].startswith(
        "You are still inside the message: the server took QUIT as a line of it"), remark
    assert c.connected
    assert "queued as" in c.send(".")
    assert c.send("QUIT").startswith("221")
    inside = [text for who, text, _t in c.history if who == "*" and "inside the message" in text]
    assert len(inside) == 1  # only the command, not "Hi" nor the empty line
    assert [m.raw.endswith(b"\r\n\r\nHi\r\nQuit\r\n") for m in lab.mailbox("alice")
            if m.subject == "no dot"] == [True]


def test_console_widget_input_sends_on_enter(lab):
    c = Console(lab, "pop3", "example.net")
    assert c.target.value == ("pop3", lab.port("pop3", "example.net"))
    c.input.value = "USER john"  # what pressing Enter in the text box does
    assert c.input.value == ""
    assert c.history[-1][1].startswith("+OK")
    assert "ml-S" in c.screen.value and "USER john" in c.screen.value
    c.input.value = "PASS postman"
    assert c.history[-1][1].startswith("+OK")
    c.close_button.click()
    assert not c.connected and "not connected" in c.state.value
    c.connect_button.click()
    assert c.connected


def press_enter(console, text=""):
    """What the browser does when the learner presses Enter in the console's box: the "submit"
    event at once, then (if the box held text) the text as a value change."""
    console.input._handle_custom_msg({"event": "submit"}, [])
    if text:
        console.input.value = text


def test_console_enter_on_an_empty_line_sends_an_empty_line(lab):
    # issue 11: the 01-smtp exercise typed with Enter only; the blank line must reach the server
    c = Console(lab)
    for line in ["EHLO laptop.example.com", "MAIL FROM:<bob@example.com>",
                 "RCPT TO:<alice@example.com>", "DATA", "Subject: typed with Enter", "",
                 "Hello Alice", ".", "QUIT"]:
        press_enter(c, line)
        if not line:
            assert wait_for(lambda: c.history[-1] [:2] == ("C", ""), 2), \
                "Enter on an empty line sent nothing"
    assert wait_for(lambda: not c.connected, 3)
    (stored,) = lab.mailbox("alice")
    head, _sep, body = stored.raw.partition(b"\r\n\r\n")
    assert b"Subject: typed with Enter" in head and body == b"Hello Alice\r\n"
    assert stored.message["Subject"] == "typed with Enter"


def test_console_enter_pairs_text_with_its_own_enter(lab):
    c = Console(lab)
    for line in ["EHLO laptop.example.com", "MAIL FROM:<bob@example.com>",
                 "RCPT TO:<alice@example.com>", "DATA", "Subject: quick fingers"]:
        press_enter(c, line)
    press_enter(c)  # an empty line typed quickly, before its timer ran out...
    press_enter(c, "first line")  # ...goes before the next line
    c.input.value = "second line"  # the box lost the focus: the text goes without an Enter
    press_enter(c)  # a browser's Enter event right after its own text: no extra line
    time.sleep(0.6)
    press_enter(c, ".")
    assert [t for w, t, _x in c.history if w == "C"][-6:] == [
        "DATA", "Subject: quick fingers", "", "first line", "second line", "."]
    (stored,) = lab.mailbox("alice")
    assert stored.raw.endswith(b"Subject: quick fingers\r\n\r\nfirst line\r\nsecond line\r\n")


def test_console_text_before_its_enter_event(lab, monkeypatch):
    # a browser may deliver the text before the Enter event; while a slow line is being sent
    # (a big RETR, a server slow to answer) that Enter event waits in the kernel's queue, and
    # must not then count as an empty line of its own
    c = Console(lab)
    send = c.send

    def slow_send(line):
        time.sleep(0.3)
        return send(line)
    monkeypatch.setattr(c, "send", slow_send)
    for line in ("EHLO laptop.example.com", "NOOP"):
        c.input.value = line
        c.input._handle_custom_msg({"event": "submit"}, [])
    time.sleep(1.2)  # longer than an empty line's wait (0.4 s) and its slow send (0.3 s)
    assert [t for w, t, _x in c.history if w == "C"] == ["EHLO laptop.example.com", "NOOP"]


def test_console_says_the_lab_is_stopped(lab):
    c = Console(lab)
    c.send("NOOP")
    lab.stop()
    assert c.send("NOOP") == ""  # no traceback: the console says what to do
    press_enter(c, "NOOP")
    later = Console(lab)
    for console in (c, later):
        text = console.transcript_text()
        assert "the lab is stopped: run the first cell again" in text, text
        assert "Refused" not in text and "Error" not in text


def test_console_pop3_multiline_and_imap_tags(lab):
    send(lab, to=("alice@example.com",), frm="bob", password="builder")
    p = Console(lab, "pop3")
    p.send("USER alice")
    p.send("PASS wonderland")
    listing = p.send("LIST")
    assert listing.endswith(".\r\n") and "1 " in listing
    assert p.send("RETR 1").rstrip().endswith("\r\n.") and "Subject: Hello" in p.transcript_text()
    assert p.send("LIST 1").startswith("+OK 1 ")
    i = Console(lab, "imap")
    assert i.history[-1][1].startswith("* OK")
    assert "a1 OK" in i.send("a1 LOGIN alice wonderland")
    assert "a2 OK" in i.send("a2 SELECT INBOX")
    assert i.send("a3 IDLE").startswith("+")
    send(lab, to=("alice@example.com",), frm="bob", password="builder", subject="during idle")
    assert wait_for(lambda: "EXISTS" in i.receive(0.2), 3)
    assert "a3 OK" in i.send("DONE")  # DONE belongs to the IDLE command's tag
    assert "* BAD" in i.send("nonsense")
    started = time.monotonic()
    assert "a4 OK" in i.send("a4 LOGOUT")
    assert time.monotonic() - started < 1


def test_console_without_a_lab_and_connection_errors(lab):
    port = lab.smtp_port
    c = Console(port=port, protocol="smtp")
    assert c.protocol == "smtp" and c.history[-1][1].startswith("220")
    c.close()
    lab.stop()
    c2 = Console(port=port, protocol="smtp", connect=False)
    c2.connect_button.click()  # refused: shown in the widget, no exception in the UI path
    assert "could not connect" in c2.transcript_text()


# ---------------------------------------------------------------- journey
def test_journey_follows_the_lectures_example(lab):
    send(lab, subject="The journey")
    j = Journey(lab)
    assert [h.kind for h in j] == ["submission", "relay", "stored", "retrieval"]
    sub, relay, stored, fetch = j
    assert sub.sender == "alice's mail client" and sub.receiver == "mail.example.com"
    assert relay.sender == "mail.example.com" and relay.receiver == "mail.example.net"
    assert "by mail.example.com" in sub.received and f"id {j.queue_ids[0]}" in sub.received
    assert "by mail.example.net" in relay.received
    assert stored.detail.startswith("new/") and ",U=1," in stored.detail
    assert not fetch.done and not j.complete
    assert j.recipient == "john@example.net"
    p = pop3(lab, "john", "postman", "example.net")
    p.retr(1)
    p.dele(1)
    p.quit()
    j = Journey(lab)
    assert j.complete and j[3].protocol == "POP3"
    assert any("RETR 1" in l for l in j[3].transcript.client_lines())
    assert "no longer in the mailbox" in j[2].detail
    assert j[1].received and "by mail.example.net" in j[1].received  # read from the download
    assert "4. [POP3]" in str(j)


def test_journey_view_steps(lab):
    empty = JourneyView(lab)
    assert "No message" in empty.heading.value and empty.next_button.disabled
    send(lab)
    empty.refresh_button.click()
    v = empty
    assert "Step 1 of 4" in v.heading.value and v.prev_button.disabled
    assert "ml-box" in v.picture.value and "alice&#x27;s mail client" in v.picture.value
    assert "AUTH PLAIN" in v.body.value
    v.next_button.click()
    assert "Step 2 of 4" in v.heading.value and "ehlo mail.example.com" in v.body.value.lower()
    assert "Received:" in v.body.value
    v.next_button.click()
    v.next_button.click()
    assert "Step 4 of 4" in v.heading.value and "not yet" in v.heading.value
    assert v.next_button.disabled
    v.prev_button.click()
    assert "Step 3 of 4" in v.heading.value


def test_journey_view_shortens_long_messages(lab):
    send(lab, body="".join(f"line {i}\r\n" for i in range(200)))
    v = JourneyView(lab, step=0)
    assert "more lines of the message" in v.body.value and "line 199" in v.body.value
    assert "line 100" not in v.body.value


# ---------------------------------------------------------------- mailbox view
def test_mailbox_view_shows_maildir_files_live(lab):
    send(lab, subject="first")
    send(lab, subject="second")
    v = MailboxView(lab, "john", live=True, interval=0.05)
    rows = v.rows()
    assert [r["subject"] for r in rows] == ["first", "second"]
    assert all(r["dir"] == "new" and ",U=" in r["file"] for r in rows)
    assert "INBOX (2)" in [label for label, _v in v.folder.options]
    assert "Sent (0)" in [label for label, _v in v.folder.options]
    assert "new/" in v.table.value and "2 messages" in v.summary.value
    p = pop3(lab, "john", "postman", "example.net")
    p.retr(1)
    p.dele(2)
    p.quit()
    assert wait_for(lambda: "1 messages" in v.summary.value), v.summary.value
    (row,) = v.rows()
    assert row["subject"] == "first" and "\\Seen" in row["flags"] and row["dir"] == "cur"
    v.folder.value = "Trash"
    assert "empty" in v.table.value
    v.close()
    assert not poll_threads()


# ---------------------------------------------------------------- quiz and chart
def test_quiz_gives_instant_feedback():
    q = Quiz([
        Question("Port for SMTP between servers?", ["110", "25", "143"], 1, "Port 25."),
        Question("IMAP over SSL?", answer="993", accept=["tcp/993"]),
        Question("Which download mail?", ["SMTP", "POP3", "IMAP"], [1, 2]),
    ], title="Check")
    assert "0 of 3 right" in q.score.value
    radio = q._inputs[0]
    radio.value = 0
    assert "Not quite" in q._feedback[0].value and q.results[0] is False
    radio.value = 1
    assert "Right" in q._feedback[0].value and "Port 25." in q._feedback[0].value
    q._inputs[1].value = " TCP/993 "
    assert q.results[1] is True
    checks = q._inputs[2]
    checks[1].value = True
    assert q.answer(2, [1]) is False
    assert q.answer(2, [2, 1]) is True
    # right in the end, but only the typed answer was right at the first try
    assert "1 of 3 right at the first try" in q.score.value


def test_quiz_explains_after_a_wrong_try_and_cannot_be_clicked_through():
    # issue 11: explanations after wrong tries too; after two wrong tries the answer is shown
    q = Quiz([
        Question("Who speaks first in SMTP?", ["the client", "the server", "nobody"], 1,
                 explain="The server greets you with 220.", hint="Think of the 220 greeting."),
        Question("IMAP over TLS?", answer="993", explain="143 is the clear-text port."),
        Question("Which download mail?", ["SMTP", "POP3", "IMAP"], [1, 2],
                 explain="SMTP only sends."),
    ])
    radio = q._inputs[0]
    radio.value = 0
    assert "Think of the 220 greeting." in q._feedback[0].value
    assert "greets you" not in q._feedback[0].value  # not yet: one more try first
    radio.value = 2
    feedback = q._feedback[0].value
    assert "The answer is: the server." in feedback and "The server greets you with 220." in feedback
    assert radio.disabled, "after two wrong tries the question is closed"
    assert q.answer(0, 1) is False and q.results[0] is False  # guessing afterwards scores nothing
    q._inputs[1].value = "143"
    assert "try once more" in q._feedback[1].value  # a hint even without one written
    q._inputs[1].value = "25"
    assert "The answer is: 993." in q._feedback[1].value and q._inputs[1].disabled
    assert q.answer(2, [0, 1]) is False
    assert q.answer(2, [1]) is False
    assert "The answer is: POP3, IMAP." in q._feedback[2].value
    assert all(w.disabled for w in q._inputs[2])
    assert "0 of 3 right at the first try" in q.score.value


def test_predictions_beside_what_happened():
    from maillab.widgets import check_answers, reveal
    assert "right!" in repr(reveal("3", 3)) and "right!" in repr(reveal(" Yes ", True))
    wrong = reveal("maria", "John", explain="John uses POP3.")
    assert repr(wrong) == "\u2718 You predicted maria; it is John. John uses POP3."
    assert "No answer yet" in repr(reveal(..., 465)) and "465" in repr(reveal(..., 465))
    table = check_answers({"SMTP relay": 25, "IMAPS": "143"}, {"SMTP relay": 25, "IMAPS": 993,
                                                               "POP3": 110})
    assert table.right == 1 and len(table.rows) == 3
    html = table._repr_html_()
    assert "ml-ok" in html and "ml-bad" in html and "POP3: No answer yet" in html


def test_facts_are_written_and_a_missing_result_is_named():
    from maillab.i18n import set_language
    from maillab.widgets import check_answers, reveal
    ports = check_answers({"IMAPS": 993, "POP3S": 110}, {"IMAPS": 993, "POP3S": 995}, facts=True)
    assert repr(ports) == ("\u2714 IMAPS: You wrote 993: right!\n"
                           "\u2718 POP3S: You wrote 110; it is 995.")
    assert "You predicted 993" in repr(check_answers({"a": 993}, {"a": 993}))
    # the experiment's cell was not run: no StopIteration, no false verdict
    early = reveal("5", None, explain="550: no such user.")
    assert repr(early).startswith("\u2022 Nothing to compare with yet: run the cell above first")
    assert early.right == 0 and "right" not in repr(early) and "550" not in repr(early)
    assert repr(reveal(..., None)).count("\u2022") == 1
    set_language("el")
    try:
        assert "Έγραψες 993: σωστά!" in repr(check_answers({"a": 993}, {"a": 993}, facts=True))
    finally:
        set_language("en")


def test_bar_chart_svg():
    chart = bar_chart({"disk (MB)": {"POP3 user": 0.5, "IMAP user": 12.0}}, "Server load", "MB")
    svg = chart._repr_html_()
    assert svg.startswith("<svg") and "POP3 user" in svg and "12.0 MB" in svg
    assert svg.count("<rect") == 4  # two bars, two legend keys


# ---------------------------------------------------------------- wiretap
def test_wiretap_sees_clear_text_but_not_tls(lab):
    from maillab.widgets import Wiretap

    with Wiretap(lab, "pop3") as tap:
        p = poplib.POP3("127.0.0.1", tap.port, timeout=5)
        p.user("alice")
        p.pass_("wonderland")
        p.quit()
    assert tap.contains("PASS wonderland") and tap.readable() == 1.0
    assert "PASS wonderland" in tap.text() and "ml-C" in tap._repr_html_()
    with Wiretap(lab, "pop3s") as tap:
        p = poplib.POP3_SSL("127.0.0.1", tap.port, context=lab.client_context(), timeout=5)
        p.user("alice")
        p.pass_("wonderland")
        p.quit()
    assert tap.captured() and not tap.contains("wonderland") and tap.readable() < 0.6
    assert not [t for t in threading.enumerate() if t.name == "maillab-wiretap"]


def test_wiretap_ends_with_the_lab(lab):
    from maillab.widgets import Wiretap

    tap = Wiretap(lab, "smtp")
    with smtplib.SMTP("127.0.0.1", tap.port, timeout=5) as s:
        s.noop()
    lab.stop()
    assert wait_for(lambda: not tap.running, 2)
    assert tap.contains("220 mail.example.com")


def test_diagram_names_the_webmail(lab):
    import urllib.request

    urllib.request.urlopen(f"http://127.0.0.1:{lab.webmail_port}/login", timeout=5).read()
    text = lab.transcript("http").diagram().text
    assert "as webmail.example.com" in text and "GET /login" in text


def test_console_tls_ports_and_starttls(lab):
    c = Console(lab, "imaps")
    assert any("TLS established" in t for _w, t, _x in c.history)
    assert "a1 OK" in c.send("a1 LOGIN alice wonderland")
    s = Console(lab, "submission")
    s.send("EHLO laptop.example.com")
    assert s.send("STARTTLS").startswith("220")
    assert "TLS established" in s.history[-1][1]
    assert s.send("EHLO laptop.example.com").startswith("250")
    token = base64.b64encode(b"\0alice\0wonderland").decode()
    assert s.send(f"AUTH PLAIN {token}").startswith("235")
    p = Console(lab, "pop3")
    assert p.send("STLS").startswith("+OK")
    assert p.send("USER alice").startswith("+OK")


def test_journey_from_the_submission_port(lab):
    with smtplib.SMTP("127.0.0.1", lab.submission_port, timeout=5) as s:
        s.starttls(context=lab.client_context())
        s.login("alice", "wonderland")
        s.sendmail("alice@example.com", ["john@example.net"], "Subject: via 587\r\n\r\nhi\r\n")
    lab.settle()
    j = Journey(lab)
    assert [h.kind for h in j][:2] == ["submission", "relay"]
    assert j[0].transcript.lines[0].service == "submission:example.com"
