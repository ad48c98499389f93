"""The lab answers Thunderbird's autoconfig lookup, and every server it names lets its user in.

The file is fetched over HTTP from the webmail as a mail program fetches it (at each of
Thunderbird's paths), parsed as XML, and then each named server is connected to with the
socketType it states (TLS from the first byte, STARTTLS, or plain) and logged in with the user
name the file gives (``%EMAILADDRESS%`` filled in), for an account of each domain.
"""

from __future__ import annotations

import http.client
import imaplib
import poplib
import smtplib
from xml.etree import ElementTree

import pytest

import maillab

USERS = {"example.com": ("alice@example.com", "wonderland"),
         "example.net": ("john@example.net", "postman")}


@pytest.fixture(scope="module")
def lab():
    with maillab.MailLab(ports="any") as lab:
        yield lab


def fetch(lab, path: str, host: str | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET to the webmail, with an optional Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", lab.port("webmail"), timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def servers(xml: bytes) -> list[dict]:
    """Every incoming and outgoing server of a clientConfig file, as dicts of its fields."""
    provider = ElementTree.fromstring(xml).find("emailProvider")
    return [dict(type=entry.get("type"), kind=entry.tag,
                 **{field.tag: field.text for field in entry})
            for entry in provider if entry.tag in ("incomingServer", "outgoingServer")]


def log_in(lab, server: dict, address: str, password: str) -> None:
    """Connect as the entry says and log in; raises if the server refuses."""
    user = server["username"].replace("%EMAILADDRESS%", address)
    host, port, socket_type = server["hostname"], int(server["port"]), server["socketType"]
    ctx = lab.client_context() if socket_type != "plain" else None
    if server["type"] == "imap":
        conn = (imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=10)
                if socket_type == "SSL" else imaplib.IMAP4(host, port, timeout=10))
        if socket_type == "STARTTLS":
            conn.starttls(ctx)
        assert conn.login(user, password)[0] == "OK"
        conn.logout()
    elif server["type"] == "pop3":
        conn = (poplib.POP3_SSL(host, port, context=ctx, timeout=10)
                if socket_type == "SSL" else poplib.POP3(host, port, timeout=10))
        if socket_type == "STARTTLS":
            conn.stls(ctx)
        conn.user(user)
        assert conn.pass_(password).startswith(b"+OK")
        conn.quit()
    else:
        conn = (smtplib.SMTP_SSL(host, port, context=ctx, timeout=10)
                if socket_type == "SSL" else smtplib.SMTP(host, port, timeout=10))
        conn.ehlo("laptop.example.org")
        if socket_type == "STARTTLS":
            conn.starttls(context=ctx)
            conn.ehlo("laptop.example.org")
        assert conn.login(user, password)[0] == 235
        conn.quit()


@pytest.mark.parametrize("domain", sorted(USERS))
def test_every_server_the_file_names_lets_the_user_in(lab, domain):
    address, password = USERS[domain]
    status, content_type, body = fetch(lab, f"/mail/config-v1.1.xml?emailaddress={address}")
    assert status == 200 and content_type.startswith("application/xml"), (status, body)
    root = ElementTree.fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    assert root.find("emailProvider/domain").text == domain
    named = servers(body)
    # The lab's real ports of this domain, each with the TLS it speaks, and nothing else.
    expected = {("imap", lab.port("imaps", domain), "SSL"),
                ("imap", lab.port("imap", domain), "STARTTLS"),
                ("pop3", lab.port("pop3s", domain), "SSL"),
                ("pop3", lab.port("pop3", domain), "STARTTLS"),
                ("smtp", lab.port("smtps", domain), "SSL"),
                ("smtp", lab.port("submission", domain), "STARTTLS")}
    assert {(s["type"], int(s["port"]), s["socketType"]) for s in named} == expected
    assert len(named) == len(expected)
    # Thunderbird reads incoming servers first; the first of each kind is the one it proposes.
    kinds = [s["kind"] for s in named]
    assert kinds == sorted(kinds)  # incomingServer... before outgoingServer...
    assert all(s["authentication"] == "password-cleartext" for s in named)
    for server in named:
        log_in(lab, server, address, password)
    # Each login left its trace in that server's transcript (what the lab saw, not only OK).
    assert lab.transcript(f"submission:{domain}").client_lines()
    assert lab.transcript(f"pop3s:{domain}").client_lines()


def test_a_wrong_password_is_refused_on_the_named_servers(lab):
    status, _type, body = fetch(lab, "/mail/config-v1.1.xml?emailaddress=bob@example.com")
    first_imap = next(s for s in servers(body) if s["type"] == "imap")
    with pytest.raises(imaplib.IMAP4.error):
        log_in(lab, first_imap, "bob@example.com", "not-his-password")


@pytest.mark.parametrize("path, host", [
    ("/mail/config-v1.1.xml?emailaddress=john%40example.net", None),
    ("/mail/config-v1.1.xml", "autoconfig.example.net"),  # Thunderbird's first URL, no address
    ("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=john@example.net", None),
    ("/.well-known/autoconfig/mail/config-v1.1.xml", "example.net:80"),
    ("/autoconfig/v1.1/example.net", None),  # mailnews.auto_config_url + the domain
    ("/autoconfig/v1.1/EXAMPLE.NET", None),
])
def test_each_path_thunderbird_asks_finds_the_domain(lab, path, host):
    status, _type, body = fetch(lab, path, host)
    assert status == 200, body
    assert ElementTree.fromstring(body).find("emailProvider").get("id") == "example.net"
    assert {int(s["port"]) for s in servers(body)} >= {lab.port("imaps", "example.net"),
                                                      lab.port("submission", "example.net")}


@pytest.mark.parametrize("path, host", [
    ("/mail/config-v1.1.xml?emailaddress=eve@example.org", None),  # not a lab domain
    ("/mail/config-v1.1.xml", None),  # Host 127.0.0.1:port names no domain
    ("/autoconfig/v1.1/<script>", None),
    ("/.well-known/autoconfig/mail/config-v1.1.xml", "[::1]:80"),
])
def test_a_domain_that_is_not_the_labs_gets_404_with_a_hint(lab, path, host):
    status, content_type, body = fetch(lab, path, host)
    assert status == 404 and content_type.startswith("text/plain"), (status, body)
    assert b"emailaddress=" in body


def test_without_tls_the_file_names_the_plain_ports():
    with maillab.MailLab(ports="any", tls=False) as lab:
        address, password = USERS["example.com"]
        status, _type, body = fetch(lab, "/autoconfig/v1.1/example.com")
        named = servers(body)
        assert {(s["type"], int(s["port"]), s["socketType"]) for s in named} == {
            ("imap", lab.imap_port, "plain"), ("pop3", lab.pop3_port, "plain"),
            ("smtp", lab.smtp_port, "plain")}
        for server in named:
            log_in(lab, server, address, password)


def test_serve_says_where_mail_programs_find_their_settings():
    """``python -m maillab serve`` prints the settings address, and it answers for a domain."""
    import re
    import urllib.request

    from test_serve import Serve

    serve = Serve()
    try:
        found = re.search(r"(http://localhost:\d+/autoconfig/v1\.1/)<domain>", serve.output)
        assert found, serve.output
        with urllib.request.urlopen(found.group(1) + "example.net", timeout=30) as answer:
            xml = answer.read()
        assert ElementTree.fromstring(xml).find("emailProvider").get("id") == "example.net"
        # every port the file names is one serve's table lists for mail.example.net
        listed = {int(port) for port in re.findall(r"mail\.example\.net\s+port (\d+)",
                                                    serve.output)}
        assert len(listed) == 7 and {int(s["port"]) for s in servers(xml)} <= listed, serve.output
        assert [s["socketType"] for s in servers(xml) if s["type"] == "smtp"] == ["SSL", "STARTTLS"]
    finally:
        serve.stop()
