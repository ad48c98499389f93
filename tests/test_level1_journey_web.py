"""Level 1 of the journey and web-and-security labs: a POP3 download typed by hand, HTTP
requests typed by hand, what an eavesdropper read of a STARTTLS session, and a mail program's
account settings checked by connecting with them (maillab.grading, section "Level 1")."""

from __future__ import annotations

import smtplib
import time

import pytest

import maillab
from maillab import grading
from maillab.sessions import run_session

DOWNLOAD = "USER john\nPASS postman\nSTAT\nRETR 1\nQUIT"


@pytest.fixture(scope="module")
def lab():
    lab = maillab.start(ports="any")
    grading.seal(lab)
    # John's mail from Alice, across the two providers (Received: from mail.example.com)
    with smtplib.SMTP_SSL(lab.host, lab.smtps_port, context=lab.client_context()) as client:
        client.login("alice", "wonderland")
        client.sendmail("alice@example.com", ["john@example.net"],
                        "From: alice@example.com\r\nSubject: across\r\n\r\nHello John\r\n")
    lab.settle()
    yield lab
    lab.stop()


def typed(lab, protocol: str, domain: str, text: str, **options) -> grading.CellEvidence:
    """The evidence of one session cell, as grading.during() gives it to a test cell."""
    start = time.time()
    run_session(protocol, domain, text, lab=lab, **options)
    return grading.CellEvidence(lab, start, time.time())


def failed(steps: grading.Steps) -> dict[str, str]:
    return {name: problem for name, (_what, problem) in steps.results.items() if problem}


def download_steps(lab, text: str, **options) -> grading.Steps:
    return grading.pop3_read_steps(typed(lab, "pop3", "example.net", text, **options),
                                   "example.net", user="john", came_from="mail.example.com")


def test_a_download_over_tls_that_keeps_a_copy_passes_every_step(lab):
    steps = download_steps(lab, DOWNLOAD, tls=True)
    assert failed(steps) == {}
    assert [m.subject for m in lab.mailbox("john")] == ["across"]
    # the hidden tests' second look gives the same verdicts
    assert grading.again(steps).results == steps.results


def test_port_110_costs_only_the_login_step(lab):
    problems = failed(download_steps(lab, DOWNLOAD))
    assert list(problems) == ["login"] and "without encryption" in problems["login"]


def test_dele_costs_the_kept_step(lab):
    problems = failed(download_steps(lab, DOWNLOAD.replace("QUIT", "DELE 1\nRSET\nQUIT"),
                                     tls=True))
    assert list(problems) == ["kept"] and "'DELE 1'" in problems["kept"]


def test_a_typo_in_pass_costs_login_retr_and_kept(lab):
    problems = failed(download_steps(lab, DOWNLOAD.replace("PASS", "PAS"), tls=True))
    assert set(problems) == {"login", "retr", "kept"}
    assert "no PASS line" in problems["login"] and "'RETR 1'" not in problems["retr"]


def test_no_quit_and_a_message_from_elsewhere(lab):
    login, password = grading.make_account(lab, [grading.sample(1)], domain="example.net")
    steps = grading.pop3_read_steps(
        typed(lab, "pop3", "example.net", f"USER {login}\nPASS {password}\nRETR 1", tls=True),
        "example.net", user=login, came_from="mail.example.com")
    problems = failed(steps)
    assert set(problems) == {"retr", "quit"}  # it was downloaded and kept, but not Alice's
    assert "did not come from mail.example.com" in problems["retr"]


def test_no_session_fails_every_step_with_one_reason(lab):
    # (example.com: no test here talks POP3 to it)
    steps = grading.pop3_read_steps(typed(lab, "smtp", "example.com", "QUIT"), "example.com",
                                    user="bob", came_from="mail.example.net")
    assert len(set(failed(steps).values())) == 1 and len(failed(steps)) == 4


@pytest.mark.parametrize("request_line, path, status, problem", [
    ("GET /login HTTP/1.1", "/login", 200, None),
    ("GET /mail HTTP/1.1", "/mail", 303, None),
    ("GET /logn HTTP/1.1", "/login", 200, "not GET /login"),
    ("GET /mail HTTP/1.1", "/mail", 200, "'HTTP/1.1 303 See Other"),
    ("Hello webmail", "/login", 200, "no request reached the webmail"),  # 400 at once
])
def test_http_requests_typed_by_hand(lab, request_line, path, status, problem):
    steps = grading.http_steps(typed(lab, "http", "example.com", request_line + "\nHost: localhost\n"),
                               "GET", path, status)
    got = failed(steps).get("request")
    assert (got is None) if problem is None else (problem in got), got


LOGIN_FORM = """POST /login HTTP/1.1
Host: localhost
Cookie: {Set-Cookie}
Content-Type: application/x-www-form-urlencoded

csrf={csrf}&address=alice@example.com&password=wonderland"""
MAILBOX = "GET /mail HTTP/1.1\nHost: localhost\nCookie: {Set-Cookie}\n"


def login_by_hand(lab, form: str = LOGIN_FORM, **options) -> grading.Steps:
    """The lab's three cells: the login page, the form (checked here), then nothing else."""
    typed(lab, "http", "example.com", "GET /login HTTP/1.1\nHost: localhost\n")
    return grading.webmail_login_steps(typed(lab, "http", "example.com", form, **options),
                                       "alice@example.com")


def test_a_login_typed_by_hand_passes_every_step_and_shows_the_inbox(lab):
    steps = login_by_hand(lab)
    assert failed(steps) == {}
    assert grading.again(steps).results == steps.results
    inbox = grading.http_steps(typed(lab, "http", "example.com", MAILBOX), "GET", "/mail", 200)
    assert failed(inbox) == {}
    # what the cell showed: the values put in, the line maillab added, alice's inbox page
    start = time.time()
    shown = run_session("http", "example.com", MAILBOX, lab=lab)
    assert "Logged in as" in "\n".join(shown.exchanges[-1].reply)
    assert any(line.startswith("Cookie: maillab_webmail_") and "{" not in line
               for line in shown.exchanges[-1].sent)
    assert any(a.user == "alice@example.com" and a.success and a.time >= start
               for a in lab.logins())  # the webmail read the inbox as alice


@pytest.mark.parametrize("change, token, login", [
    # a token pasted from another run (the grader's lab makes new ones)
    (("csrf={csrf}", "csrf=5c612460e1b08a8da9f5c0559aeea5e51661f9af5d1a7ae80cad374b0e41014e"),
     "403 Forbidden", "refused first"),
    (("Cookie: {Set-Cookie}\n", ""), "403 Forbidden", "refused first"),  # no cookie
    (("Content-Type: application/x-www-form-urlencoded\n", ""), "403 Forbidden", "refused first"),
    (("Content-Type: application/x-www-form-urlencoded",  # too small: refused unread
      "Content-Type: application/x-www-form-urlencoded\nContent-Length: 20"),
     "Content-Length, a number smaller", "refused first"),
    # (bob, not alice: the webmail makes an account's next logins wait after a wrong password)
    (("alice@example.com&password=wonderland", "bob@example.com&password=wonderland"), None,
     "401 Unauthorized"),
    (("alice@example.com&password=wonderland", "bob@example.com&password=builder"), None,
     "you logged in as bob@example.com, not as alice@example.com"),
    (("address=alice@example.com", "address=alice"), None, "400 Bad Request"),
    (("POST /login", "GET /login"), "not POST /login", "refused first"),
])
def test_a_slip_in_the_login_form_fails_its_steps_with_one_line(lab, change, token, login):
    problems = failed(login_by_hand(lab, LOGIN_FORM.replace(*change)))
    assert set(problems) == ({"token", "login"} if token else {"login"}), problems
    for name, words in (("token", token), ("login", login)):
        if words:
            assert words in problems[name] and "\n" not in problems[name], problems[name]


def test_a_content_length_larger_than_the_body_is_named(lab):
    form = LOGIN_FORM.replace("Content-Type: application/x-www-form-urlencoded",
                              "Content-Type: application/x-www-form-urlencoded\n"
                              "Content-Length: 200")
    problems = failed(login_by_hand(lab, form, timeout=1.5))
    assert "larger than the body" in problems["token"], problems


def test_the_mailbox_without_the_session_cookie_says_so(lab):
    login_by_hand(lab)
    steps = grading.http_steps(typed(lab, "http", "example.com",
                                     "GET /mail HTTP/1.1\nHost: localhost\n"), "GET", "/mail", 200)
    assert "no session cookie" in failed(steps)["request"]


def test_answer_values_fill_placeholders_from_the_servers_answers(lab):
    from maillab.sessions.drivers import AnswerValues, HttpDriver
    from maillab.sessions.replies import HttpReply
    reply = HttpReply()
    reply.feed(b"HTTP/1.1 303 See Other\r\nSet-Cookie: s=abc; HttpOnly\r\n"
               b"Set-Cookie: pre=; Max-Age=0\r\nLocation: mail\r\nContent-Length: 54\r\n\r\n"
               b"<input type='hidden' value=\"a&amp;b\" name=\"csrf\"><p>\n")
    values = AnswerValues()
    values.learn(reply)
    assert values.value("csrf") == "a&b" and values.value("Set-Cookie") == "s=abc"
    step = HttpDriver(values).request(["POST /x HTTP/1.1", "Host: h", "Cookie: {set-cookie}",
                                       "", "t={csrf}&u={nothing}&j={\"a\": 1}"])
    assert step.data.endswith(b"Cookie: s=abc\r\nContent-Length: 28\r\n\r\n"
                              b"t=a&b&u={nothing}&j={\"a\": 1}")
    assert any("{nothing}" in note and "sent as typed" in note for note in step.notes)
    # each server its own values: another lab's webmail (another port) starts empty
    from maillab.sessions.run import Target, answer_values
    login_by_hand(lab)  # this lab's webmail has handed out a cookie (whatever ran before)
    here = answer_values(Target(lab.host, lab.webmail_port, "localhost", False, "here", lab))
    assert here.value("Set-Cookie") and answer_values(
        Target(lab.host, 1, "localhost", False, "elsewhere", lab)).value("Set-Cookie") is None
    assert answer_values(Target(lab.host, lab.webmail_port, "localhost", False, "another lab")
                         ).value("Set-Cookie") is None


def test_what_an_eavesdropper_read_of_a_starttls_session(lab):
    session = (f"EHLO me.example.org\nSTARTTLS\nEHLO me.example.org\n"
               f"AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\nQUIT")
    tls = typed(lab, "smtp", "example.com", session, submission=True)
    assert grading.readable_commands(tls.sessions("submission:example.com")[-1]) == \
        {"EHLO", "STARTTLS"}
    clear = typed(lab, "smtp", "example.com", "EHLO me.example.org\n"
                  "AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\nQUIT")
    assert grading.readable_commands(clear.sessions("smtp:example.com")[-1]) == \
        {"EHLO", "AUTH", "QUIT"}


def settings(lab, **changes) -> dict:
    """alice's account as a mail program's window holds it: IMAPS in, SMTPS out."""
    account = {"email": "alice@example.com", "password": "wonderland",
               "incoming": {"protocol": "IMAP", "server": "localhost", "port": lab.imaps_port,
                            "security": "SSL/TLS", "authentication": "Normal password",
                            "username": "alice"},
               "outgoing": {"server": "localhost", "port": lab.smtps_port,
                            "security": "SSL/TLS", "authentication": "Normal password",
                            "username": "alice"}}
    for key, value in changes.items():
        group, field = key.split("__") if "__" in key else (None, key)
        (account[group] if group else account)[field] = value
    return account


def test_settings_that_work_pass_both_groups(lab):
    assert failed(grading.mail_settings_steps(lab, settings(lab))) == {}
    other = settings(lab, incoming__protocol="pop3", incoming__port=lab.pop3_port,
                     incoming__security="STARTTLS", outgoing__port=lab.submission_port,
                     outgoing__security="starttls", outgoing__username="alice@example.com",
                     incoming__server="127.0.0.1")
    assert failed(grading.mail_settings_steps(lab, other)) == {}
    logins = [a for a in lab.logins() if a.user in ("alice", "alice@example.com")]
    assert logins and all(a.secure for a in logins[-4:])  # each group really logged in


@pytest.mark.parametrize("change, group, words", [
    ({"incoming__port": "pop3s"}, "incoming", "port: {port} is the lab's POP3S port, not IMAP's"),
    ({"incoming__port": "imap"}, "incoming", "port {port} speaks STARTTLS, not SSL/TLS"),
    ({"incoming__security": "None", "incoming__port": "imap"}, "incoming", "None sends your password"),
    ({"outgoing__port": "smtp", "outgoing__security": "STARTTLS"}, "outgoing", "stands for 25"),
    ({"outgoing__port": ("imaps", "example.net")}, "outgoing", "the lab's IMAPS port, not SMTP's"),
    ({"outgoing__port": ("smtps", "example.net")}, "outgoing", "is example.net's server"),
    ({"password": "alice"}, "incoming", "refused the login as 'alice'"),
    ({"incoming__username": "bob"}, "incoming", "refused the login as 'bob'"),
    ({"outgoing__authentication": "Encrypted password"}, "outgoing", "Normal password"),
    ({"incoming__protocol": "Exchange"}, "incoming", "neither IMAP nor POP3"),
    ({"incoming__port": None}, "incoming", "no port"),
    ({"outgoing__server": "no-such-host.invalid"}, "outgoing", "not a name this computer knows"),
])
def test_a_wrong_setting_is_named_in_one_line(lab, change, group, words):
    values = {}
    for key, value in change.items():
        if key.endswith("port") and value is not None:
            service, domain = value if isinstance(value, tuple) else (value, None)
            value = lab.port(service, domain)
        values[key] = value
    problems = failed(grading.mail_settings_steps(lab, settings(lab, **values)))
    port = values.get(f"{group}__port")
    assert list(problems) == [group] or (group == "incoming" and "password" in change), problems
    assert words.format(port=port) in problems[group] and "\n" not in problems[group]


def test_settings_that_are_not_a_dict_fail_both_groups(lab):
    assert set(failed(grading.mail_settings_steps(lab, None))) == {"incoming", "outgoing"}
    assert set(failed(grading.mail_settings_steps(lab, {"email": "alice@example.com"}))) == \
        {"incoming", "outgoing"}
