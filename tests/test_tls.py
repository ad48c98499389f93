"""TLS and logins: the secure ports, STARTTLS, policies, audit, slowed failures."""

import base64
import imaplib
import poplib
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

import maillab
from conftest import require_tool
from rawclient import Raw


@pytest.fixture(scope="module")
def lab():
    with maillab.MailLab(ports="any") as lab:
        yield lab


@pytest.fixture(scope="module")
def strict_lab():
    with maillab.MailLab(ports="any", strict=True) as lab:
        yield lab


def tls_wrap(lab, sock, hostname="mail.example.com"):
    return lab.client_context().wrap_socket(sock, server_hostname=hostname)


# ---------------------------------------------------------------- certificates

@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "mail.example.com"])
def test_certificate_valid_for_every_name_and_verified_against_lab_ca(lab, name):
    with socket.create_connection((lab.host, lab.pop3s_port), timeout=5) as raw:
        with lab.client_context().wrap_socket(raw, server_hostname=name) as s:
            assert s.recv(100).startswith(b"+OK")
            assert s.version() in ("TLSv1.2", "TLSv1.3")


def test_the_other_domain_has_its_own_certificate(lab):
    with socket.create_connection((lab.host, lab.port("imaps", "example.net")), timeout=5) as raw:
        with lab.client_context().wrap_socket(raw, server_hostname="mail.example.net") as s:
            assert b"mail.example.net" in s.recv(200)
    with socket.create_connection((lab.host, lab.port("imaps", "example.net")), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            lab.client_context().wrap_socket(raw, server_hostname="mail.example.com")


@pytest.mark.parametrize("service", ["smtps", "pop3s", "imaps"])
def test_client_that_does_not_trust_the_lab_ca_fails(lab, service):
    untrusting = ssl.create_default_context()  # the system's CAs only
    with socket.create_connection((lab.host, lab.port(service)), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.wrap_socket(raw, server_hostname="localhost")


# ---------------------------------------------------------------- SMTP

def test_smtps_offers_auth_and_relays(lab):
    with smtplib.SMTP_SSL(lab.host, lab.smtps_port, context=lab.client_context()) as s:
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"]  # the aiosmtpd gap is worked around
        s.login("alice", "wonderland")
        s.sendmail("alice@example.com", ["john@example.net"], b"Subject: over 465\r\n\r\nsecret\r\n")
    lab.settle()
    msg = [m for m in lab.mailbox("john") if m.subject == "over 465"][-1].message
    hop1, hop2 = msg.get_all("Received")[1], msg.get_all("Received")[0]
    assert "with ESMTPSA" in hop1  # client -> own server: encrypted and authenticated
    assert "with ESMTPS " in hop2  # server -> server: the relay used STARTTLS too


def test_smtps_requires_auth_before_mail(lab):
    with smtplib.SMTP_SSL(lab.host, lab.smtps_port, context=lab.client_context()) as s:
        s.ehlo()
        code, text = s.mail("alice@example.com")
        assert code == 530 and b"5.7.0" in text


def test_submission_order_starttls_then_auth_then_mail(lab):
    with smtplib.SMTP(lab.host, lab.submission_port) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0wonderland").decode())
        assert code == 530 and text.startswith(b"5.7.0")
        code, text = s.docmd("MAIL", "FROM:<alice@example.com>")
        assert code == 530
        s.starttls(context=lab.client_context())
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"]
        code, text = s.docmd("MAIL", "FROM:<alice@example.com>")
        assert code == 530 and b"Authentication required" in text
        s.rset()
        s.login("alice", "wonderland")
        s.sendmail("alice@example.com", ["bob@example.com"], b"Subject: via 587\r\n\r\nx\r\n")
    assert "via 587" in [m.subject for m in lab.mailbox("bob")]


def starttls_injection(lab, port, greeting_lines, starttls, injected, after, reply_of):
    """Send STARTTLS with a command in the same packet; after TLS, check it was not run."""
    with socket.create_connection((lab.host, port), timeout=5) as raw:
        f = raw.makefile("rb")
        for _ in range(greeting_lines):
            f.readline()
        raw.sendall(starttls + injected)
        f.readline()  # the go-ahead for TLS
        tls = tls_wrap(lab, raw)
        tf = tls.makefile("rb")
        tls.sendall(after)
        return reply_of(tf)


def smtp_reply(f):
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line)
        if line[3:4] != "-":
            return lines


def test_smtp_commands_pipelined_with_starttls_are_dropped(lab):
    # Port 25 needs no AUTH, so a MAIL FROM that survived the upgrade would make RCPT succeed.
    with socket.create_connection((lab.host, lab.smtp_port), timeout=5) as raw:
        f = raw.makefile("rb")
        smtp_reply(f)
        raw.sendall(b"EHLO me\r\n")
        smtp_reply(f)
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@elsewhere.example>\r\n")
        assert smtp_reply(f)[0].startswith("220")
        tls = tls_wrap(lab, raw)
        tf = tls.makefile("rb")
        tls.sendall(b"EHLO me\r\n")
        smtp_reply(tf)
        tls.sendall(b"RCPT TO:<bob@example.com>\r\n")
        assert smtp_reply(tf)[0].startswith("503 Error: need MAIL command")  # MAIL was dropped
        tls.sendall(b"MAIL FROM:<x@elsewhere.example>\r\n")
        smtp_reply(tf)
        tls.sendall(b"RCPT TO:<bob@example.com>\r\n")
        assert smtp_reply(tf)[0].startswith("250")  # the same commands work inside TLS


def test_pop3_commands_pipelined_with_stls_are_dropped(lab):
    reply = starttls_injection(lab, lab.pop3_port, 1, b"STLS\r\n", b"USER alice\r\n",
                               b"PASS wonderland\r\n", lambda f: f.readline().decode())
    assert reply.startswith("-ERR")  # USER was never run inside TLS


def test_imap_commands_pipelined_with_starttls_are_dropped(lab):
    reply = starttls_injection(lab, lab.imap_port, 1, b"a STARTTLS\r\n",
                               b"b LOGIN alice wonderland\r\n", b"c SELECT INBOX\r\n",
                               lambda f: f.readline().decode())
    assert reply.startswith("c BAD") or reply.startswith("c NO")


# ---------------------------------------------------------------- POP3 and IMAP

def test_pop3s_and_stls_and_auth_plain(lab):
    p = poplib.POP3_SSL(lab.host, lab.pop3s_port, context=lab.client_context())
    assert "STLS" not in p.capa()
    p.user("alice")
    p.pass_("wonderland")
    p.quit()
    p = poplib.POP3(lab.host, lab.pop3_port)
    assert "STLS" in p.capa()
    p.stls(context=lab.client_context())
    assert "STLS" not in p.capa()  # capabilities re-announced after the upgrade
    assert p._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland").decode()
                       ).startswith(b"+OK")
    p.quit()
    t = lab.transcript("pop3:example.com").last()
    assert any(l.text.startswith("TLS established (TLSv1.") for l in t if l.who == "*")


def test_pop3_auth_plain_with_continuation(lab):
    with Raw(lab.pop3_port) as r:
        r.line()
        r.send("AUTH PLAIN\r\n")
        assert r.line() == "+ "
        r.send(base64.b64encode(b"\0bob\0builder").decode() + "\r\n")
        assert r.line().startswith("+OK")


def test_imaps_and_starttls(lab):
    with imaplib.IMAP4_SSL(lab.host, lab.imaps_port, ssl_context=lab.client_context()) as m:
        assert "STARTTLS" not in m.capabilities
        m.login("alice", "wonderland")
        assert m.select("INBOX")[0] == "OK"
    with imaplib.IMAP4(lab.host, lab.imap_port) as m:
        assert "STARTTLS" in m.capabilities
        m.starttls(ssl_context=lab.client_context())
        assert "STARTTLS" not in m.capabilities
        m.login("alice", "wonderland")


# ---------------------------------------------------------------- policy, failures, audit

def test_strict_lab_refuses_clear_text_logins(strict_lab):
    lab = strict_lab
    with imaplib.IMAP4(lab.host, lab.imap_port) as m:
        assert "LOGINDISABLED" in m.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            m.login("alice", "wonderland")
    with Raw(lab.pop3_port) as r:
        r.line()
        r.send("USER alice\r\n")
        assert r.line().startswith("-ERR [AUTH]")
    with smtplib.SMTP(lab.host, lab.smtp_port) as s:
        s.ehlo()
        assert not s.has_extn("auth")
        s.starttls(context=lab.client_context())
        s.ehlo()
        assert s.has_extn("auth")
        s.login("alice", "wonderland")
    p = poplib.POP3(lab.host, lab.pop3_port)
    p.stls(context=lab.client_context())
    p.user("alice")
    p.pass_("wonderland")
    p.quit()


def test_wrong_password_codes_and_slowdown_and_audit(lab):
    t0 = time.time()
    with smtplib.SMTP(lab.host, lab.smtp_port) as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("bob", "nope")
        assert e.value.smtp_code == 535
    p = poplib.POP3(lab.host, lab.pop3_port)
    p.user("bob")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        p.pass_("nope")
    p.quit()
    with imaplib.IMAP4(lab.host, lab.imap_port) as m:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login("bob", "nope")
    # More failures for the same user from the same address take longer and longer.
    timings = []
    for _ in range(3):
        p = poplib.POP3(lab.host, lab.pop3_port, timeout=30)  # the guard may wait up to 4 s
        p.user("bob")
        start = time.perf_counter()
        with pytest.raises(poplib.error_proto):
            p.pass_("nope")
        timings.append(time.perf_counter() - start)
        p.quit()
    assert timings[-1] > 0.4 and timings[-1] > timings[0]
    failures = [a for a in lab.logins() if a.time >= t0 and not a.success and a.user == "bob"]
    assert {a.service for a in failures} >= {"smtp:example.com", "pop3:example.com",
                                            "imap:example.com"}
    # a success resets the account's slowdown: the next wrong password is answered much sooner
    # (the address's own count, shared with this module's other tests, may still add base s)
    with smtplib.SMTP(lab.host, lab.smtp_port) as s:
        s.login("bob", "builder")
    ok = [a for a in lab.logins() if a.success and a.user == "bob"][-1]
    assert ok.mechanism == "AUTH PLAIN" and not ok.secure
    p = poplib.POP3(lab.host, lab.pop3_port)
    p.user("bob")
    start = time.perf_counter()
    with pytest.raises(poplib.error_proto):
        p.pass_("nope")
    assert time.perf_counter() - start < timings[-1] / 2
    p.quit()


# ---------------------------------------------------------------- real clients

def test_curl_over_tls(lab, tmp_path):
    curl = require_tool("curl")
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: curl tls\r\n\r\nhi\r\n")
    base = [curl, "-sS", "-m", "10", "--cacert", lab.ca_file]
    subprocess.run(base + [f"smtps://localhost:{lab.smtps_port}/laptop", "-u", "alice:wonderland",
                           "--mail-from", "alice@example.com", "--mail-rcpt", "bob@example.com",
                           "-T", str(msg)], check=True)
    subprocess.run(base + ["--ssl-reqd", f"smtp://localhost:{lab.submission_port}/laptop",
                           "-u", "alice:wonderland", "--mail-from", "alice@example.com",
                           "--mail-rcpt", "bob@example.com", "-T", str(msg)], check=True)
    assert [m.subject for m in lab.mailbox("bob")].count("curl tls") == 2
    listing = subprocess.run(base + [f"pop3s://localhost:{lab.pop3s_port}/", "-u", "bob:builder"],
                             check=True, capture_output=True, text=True).stdout
    assert len(listing.splitlines()) == len(lab.mailbox("bob"))
    subprocess.run(base + ["--ssl-reqd", f"pop3://localhost:{lab.pop3_port}/", "-u", "bob:builder"],
                   check=True, capture_output=True)
    out = subprocess.run(base + [f"imaps://localhost:{lab.imaps_port}/INBOX?SUBJECT%20curl",
                                 "-u", "bob:builder"], check=True, capture_output=True, text=True)
    assert out.stdout.startswith("* SEARCH")
    subprocess.run(base + ["--ssl-reqd", f"imap://localhost:{lab.imap_port}/", "-u", "bob:builder"],
                   check=True, capture_output=True)
    untrusted = subprocess.run([curl, "-sS", "-m", "10", f"pop3s://localhost:{lab.pop3s_port}/",
                                "-u", "bob:builder"], capture_output=True)
    assert untrusted.returncode == 60  # peer certificate cannot be authenticated


def test_swaks_tls_and_implicit_tls(lab):
    swaks = require_tool("swaks")
    common = ["-s", "localhost", "-f", "alice@example.com", "-t", "bob@example.com",
              "--auth", "PLAIN", "-au", "alice", "-ap", "wonderland", "--tls-verify",
              "--tls-ca-path", lab.ca_file, "--silent", "2"]
    for args, subject in (([ "-p", str(lab.submission_port), "--tls"], "swaks 587"),
                          (["-p", str(lab.smtps_port), "--tlsc"], "swaks 465")):
        done = subprocess.run([swaks, *args, *common, "--header", f"Subject: {subject}"],
                              capture_output=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        assert subject in [m.subject for m in lab.mailbox("bob")]


@pytest.mark.parametrize("proto, service", [("smtp", "submission"), ("pop3", "pop3"),
                                            ("imap", "imap")])
def test_openssl_s_client_starttls(lab, proto, service):
    openssl = require_tool("openssl")
    done = subprocess.run([openssl, "s_client", "-starttls", proto, "-connect",
                           f"127.0.0.1:{lab.port(service)}", "-CAfile", lab.ca_file,
                           "-verify_return_error", "-servername", "mail.example.com"],
                          input=b"", capture_output=True, timeout=30)
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, out + done.stderr.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out


# ---------------------------------------------------------------- what an observer sees

def test_observer_reads_clear_text_logins_but_not_tls_ones(lab):
    t0 = time.time()
    p = poplib.POP3(lab.host, lab.pop3_port)
    p.user("alice")
    p.pass_("wonderland")
    p.quit()
    with imaplib.IMAP4_SSL(lab.host, lab.imaps_port, ssl_context=lab.client_context()) as m:
        m.login("alice", "wonderland")
    with smtplib.SMTP(lab.host, lab.submission_port) as s:
        s.starttls(context=lab.client_context())
        s.login("alice", "wonderland")
    plain = lab.transcript("pop3:example.com", since=t0)
    seen = lab.observed("pop3:example.com", plain.connections()[-1])
    assert seen.readable() and b"PASS wonderland\r\n" in seen.client_bytes()
    tls = lab.observed("imaps:example.com")
    assert tls.connections and not tls.readable()
    assert b"wonderland" not in tls.client_bytes()
    assert tls.client_bytes()[:1] == b"\x16"  # a TLS handshake record
    sub = lab.observed("submission:example.com").connections[-1].wire.bytes_from("C")
    assert sub.startswith(b"ehlo ") and b"STARTTLS\r\n" in sub  # readable up to STARTTLS
    assert b"AUTH" not in sub and b"wonderland" not in sub  # the login went inside TLS
    # the transcript itself shows the decrypted conversation after the TLS line
    text = str(lab.transcript("submission:example.com").last())
    assert "TLS established (TLSv1." in text and "AUTH PLAIN" in text


def handshake_with_command_in_same_packet(lab, sock, command: bytes) -> bytes:
    """TLS through memory BIOs, so that the client's Finished and its first command leave in
    one TCP segment, as curl sends them. Returns the server's first decrypted reply line."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = lab.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    tls.write(command)  # encrypted behind the Finished message, not yet sent
    sock.sendall(outgoing.read())
    reply = b""
    while b"\r\n" not in reply:
        try:
            reply += tls.read(65536)
        except ssl.SSLWantReadError:
            incoming.write(sock.recv(65536))
    return reply


@pytest.mark.parametrize("service, go, command, expect", [
    ("pop3", b"STLS\r\n", b"CAPA\r\n", b"+OK"),
    ("imap", b"a STARTTLS\r\n", b"b CAPABILITY\r\n", b"* CAPABILITY"),
])
def test_first_command_sent_with_the_handshake_is_answered(lab, service, go, command, expect):
    with socket.create_connection((lab.host, lab.port(service)), timeout=5) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(go)
        assert f.readline()[:1] in (b"+", b"a")
        assert handshake_with_command_in_same_packet(lab, sock, command).startswith(expect)
