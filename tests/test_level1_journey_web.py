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
