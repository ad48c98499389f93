"""A lab is private to the Unix user who started it; its store on disk too (maillab.privacy).

The end-to-end tests create real users (root only; CI runs as root): a lab started by one user,
every port tried by another with raw TCP, smtplib, poplib, imaplib and curl, all refused before
any greeting; the owner's own clients and root's (the grader's) work; the refusals are in the
owner's transcript.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import require_tool
from maillab.privacy import GuardedListener, OwnerOnly, PeerCheck, _proc_hex
from maillab.store import Store
from unixusers import UnixUser, require_root, shared_python, unique_name

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the peer check reads Linux's socket tables")
METHODS = ["netlink", "proc"]


def connected_pair(family=socket.AF_INET, address="127.0.0.1"):
    """(listener, client, accepted) over loopback."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    client = socket.socket(family)
    client.connect((address, server.getsockname()[1]))
    accepted, _addr = server.accept()
    return server, client, accepted


# ---------------------------------------------------------------- the peer check, as any user

@linux_only
def test_auto_picks_a_working_method_on_linux():
    assert PeerCheck().method in METHODS


@linux_only
@pytest.mark.parametrize("method", METHODS)
def test_peer_uid_of_own_connection(method):
    server, client, accepted = connected_pair()
    with server, client, accepted:
        assert PeerCheck(method).uid(accepted) == os.geteuid()


@linux_only
@pytest.mark.parametrize("method", METHODS)
def test_dual_stack_client_through_a_mapped_address(method):
    """An IPv6 socket that reached 127.0.0.1 as ::ffff:127.0.0.1 is listed in tcp6, not tcp."""
    server, client, accepted = connected_pair(socket.AF_INET6, "::ffff:127.0.0.1")
    with server, client, accepted:
        assert PeerCheck(method).uid(accepted) == os.geteuid()


@linux_only
@pytest.mark.parametrize("method", METHODS)
def test_a_client_that_has_gone_is_unknown_never_root(method):
    """After the client closes, the kernel keeps a leftover of its socket that says uid 0
    whoever made it: taking that for root would let any user in by connecting and closing."""
    server, client, accepted = connected_pair()
    client.close()
    with server, accepted:
        for _ in range(50):  # the leftover appears once the FIN is through
            if PeerCheck(method).uid(accepted) is None:
                break
            time.sleep(0.02)
        assert PeerCheck(method).uid(accepted) is None


@linux_only
def test_proc_format_matches_the_kernel_table():
    server, client, accepted = connected_pair()
    with server, client, accepted:
        host, port = client.getsockname()
        line = _proc_hex(socket.AF_INET, host, port)
        assert line in open("/proc/net/tcp", "rb").read()
        assert line.endswith(b":%04X" % port)


def test_where_the_check_cannot_work_the_lab_admits_everyone_and_says_so():
    policy = OwnerOnly(check=PeerCheck("none"))
    assert not policy.private
    assert "not private" in policy.describe()
    server, client, accepted = (connected_pair() if sys.platform.startswith("linux")
                                else pytest.skip("loopback pair"))
    with server, client, accepted:
        assert policy.judge(accepted).allowed


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError):
        PeerCheck("guess")


@linux_only
def test_lab_table_says_it_is_private():
    import maillab
    with maillab.MailLab(ports="any") as lab:
        assert lab.private
        assert lab.privacy_note.startswith("private")
        assert lab.privacy_note in repr(lab) and lab.privacy_note in lab._repr_html_()
    with maillab.MailLab(ports="any", private=False) as lab:
        assert not lab.private
        assert "every user" in lab.privacy_note


# ---------------------------------------------------------------- real users (root)

@pytest.fixture(scope="module")
def users():
    require_root()
    made = []
    try:
        for prefix in ("mlown", "mloth"):
            made.append(UnixUser(unique_name(prefix)))
        yield made
    finally:
        for user in made:
            user.remove()


def run_as(user: UnixUser, code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(user.command([shared_python(), "-c", code, *args]), env=user.env(),
                          capture_output=True, text=True, timeout=timeout)


CONNECT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    try:
        print(repr(s.recv(100)))
    except OSError as e:
        print(type(e).__name__)
""")


@pytest.mark.parametrize("allowed", [False, True])
def test_listener_admits_only_the_users_the_policy_names(users, allowed):
    owner, other = users
    policy = OwnerOnly(owner=owner.uid, allow=[other.name] if allowed else [])
    refused = []
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen(8)
        listener = GuardedListener(plain, policy, lambda addr, text: refused.append(text))
        proc = subprocess.Popen(other.command([shared_python(), "-c", CONNECT,
                                               str(plain.getsockname()[1])]),
                                env=other.env(), stdout=subprocess.PIPE, text=True)
        plain.settimeout(10)
        if allowed:
            conn, _addr = listener.accept()
            with conn:
                conn.sendall(b"hello\r\n")
                assert proc.communicate(timeout=10)[0].strip() == repr(b"hello\r\n")
            assert refused == []
        else:
            with pytest.raises(TimeoutError):  # refused, closed, and nothing else came
                plain.settimeout(1.5)
                listener.accept()
            assert proc.communicate(timeout=10)[0].strip() in ("b''", "ConnectionResetError")
            assert refused == [f"refused a connection from another user: {other.name} (uid {other.uid})"]
            assert policy.refused == {other.uid: 1}


OWNER_LAB = textwrap.dedent("""
    import imaplib, json, poplib, smtplib, socket, sys, urllib.request
    import maillab

    lab = maillab.start(ports="any")
    own = {}
    with smtplib.SMTP(lab.host, lab.smtp_port, timeout=5) as s:
        own["smtp"] = s.login("alice", "wonderland")[0]
    pop = poplib.POP3(lab.host, lab.pop3_port, timeout=5)
    pop.user("alice"); own["pop3"] = pop.pass_("wonderland").decode(); pop.quit()
    with imaplib.IMAP4(lab.host, lab.imap_port, timeout=5) as m:
        own["imap"] = m.login("alice", "wonderland")[0]
    with imaplib.IMAP4_SSL(lab.host, lab.imaps_port, ssl_context=lab.client_context(), timeout=5) as m:
        own["imaps"] = m.login("alice", "wonderland")[0]
    own["webmail"] = urllib.request.urlopen(f"http://{lab.host}:{lab.webmail_port}/login", timeout=5).status
    print(json.dumps({"services": [[s.name, s.protocol, s.port] for s in lab.services],
                      "ca": lab.ca_file, "private": lab.private, "own": own}), flush=True)
    sys.stdin.readline()
    print(json.dumps({"refusals": [[l.service, l.text] for l in lab.transcript()
                                   if "refused a connection" in l.text],
                      "counts": {str(k): v for k, v in lab.privacy.refused.items()}}), flush=True)
    lab.stop()
""")

OTHER_CLIENTS = textwrap.dedent("""
    import imaplib, json, poplib, smtplib, socket, ssl, sys, urllib.request

    def raw(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            return repr(s.recv(100))
        except OSError as e:
            return type(e).__name__
        finally:
            s.close()

    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # a stranger: trusts anything
    clients = {
        "smtp": lambda p: smtplib.SMTP("127.0.0.1", p, timeout=5).login("alice", "wonderland"),
        "submission": lambda p: smtplib.SMTP("127.0.0.1", p, timeout=5).starttls(context=tls),
        "smtps": lambda p: smtplib.SMTP_SSL("127.0.0.1", p, context=tls, timeout=5).login("alice", "wonderland"),
        "pop3": lambda p: poplib.POP3("127.0.0.1", p, timeout=5).user("alice"),
        "pop3s": lambda p: poplib.POP3_SSL("127.0.0.1", p, context=tls, timeout=5).user("alice"),
        "imap": lambda p: imaplib.IMAP4("127.0.0.1", p, timeout=5).login("alice", "wonderland"),
        "imaps": lambda p: imaplib.IMAP4_SSL("127.0.0.1", p, ssl_context=tls, timeout=5).login("alice", "wonderland"),
        "webmail": lambda p: urllib.request.urlopen(f"http://127.0.0.1:{p}/login", timeout=5).status,
    }
    out = {}
    for name, protocol, port in json.loads(sys.argv[1]):
        try:
            got = "answered: " + repr(clients[protocol](port))[:80]
        except Exception as e:
            got = type(e).__name__
        out[name] = {"raw": raw(port), "client": got}
    print(json.dumps(out))
""")

# What a client sees when the server closes at once: nothing, an end of file, or a reset.
REFUSED = {"b''", "ConnectionResetError", "SMTPServerDisconnected", "error_proto", "abort",
           "SSLEOFError", "SSLZeroReturnError", "RemoteDisconnected", "URLError",
           "ConnectionAbortedError", "BrokenPipeError", "IMAP4.abort", "EOFError"}


def greeting_as_root(protocol: str, port: int, ca_file: str) -> bytes:
    """The first bytes the lab sends root's client (the grader), through TLS where the port
    starts with it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if protocol in ("smtps", "pop3s", "imaps"):
        sock = ssl.create_default_context(cafile=ca_file).wrap_socket(sock, server_hostname="localhost")
    with sock:
        if protocol == "webmail":
            sock.sendall(b"GET /login HTTP/1.0\r\n\r\n")
        return sock.recv(100)


def test_a_lab_refuses_every_other_user_on_every_port(users):
    curl = require_tool("curl")
    owner, other = users
    lab = subprocess.Popen(owner.command([sys.executable, "-c", OWNER_LAB], read_anything=True),
                           env=owner.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        started = json.loads(lab.stdout.readline() or "null") or pytest.fail(lab.stderr.read())
        services = started["services"]
        assert started["private"]
        assert len(services) == 15  # 7 services for each of two domains, and the webmail
        # The owner's own programs: every client logged in.
        own = started["own"]
        assert (own["smtp"], own["imap"], own["imaps"], own["webmail"]) == (235, "OK", "OK", 200)
        assert own["pop3"].startswith("+OK")
        # Root, where a teacher's grader runs: greeted on every port.
        for name, protocol, port in services:
            first = greeting_as_root(protocol, port, started["ca"])
            assert first[:4] in (b"220 ", b"+OK ", b"* OK", b"HTTP"), (name, first)

        # Another user: nothing answers, on any port, with any client.
        tried = run_as(other, OTHER_CLIENTS, json.dumps(services))
        assert tried.returncode == 0, tried.stderr
        results = json.loads(tried.stdout)
        for name, result in results.items():
            assert result["raw"] in REFUSED, (name, result)
            assert result["client"] in REFUSED, (name, result)
        webmail_port = next(port for _n, protocol, port in services if protocol == "webmail")
        by_curl = subprocess.run(other.command([curl, "-sS", "-m", "5", "-o", "/dev/null",
                                                f"http://127.0.0.1:{webmail_port}/login"]),
                                 env=other.env(), capture_output=True, text=True)
        assert by_curl.returncode in (52, 56), by_curl  # empty reply / connection reset
        pop3_port = next(port for _n, protocol, port in services if protocol == "pop3")
        by_curl = subprocess.run(other.command([curl, "-sS", "-m", "5", f"pop3://127.0.0.1:{pop3_port}/",
                                                "-u", "alice:wonderland"]),
                                 env=other.env(), capture_output=True, text=True)
        assert by_curl.returncode in (8, 52, 56), by_curl  # no greeting: weird reply / reset
        assert "+OK" not in by_curl.stdout

        lab.stdin.write("report\n")
        lab.stdin.flush()
        report = json.loads(lab.stdout.readline())
    finally:
        lab.stdin.close()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
    # Each refusal is one line in the owner's transcript, under the service it was aimed at.
    line = f"refused a connection from another user: {other.name} (uid {other.uid})"
    refused_services = {service for service, text in report["refusals"] if text == line}
    # (the webmail's sessions are recorded as "http:<domain>", its refusals too)
    assert refused_services == {name.replace("webmail:", "http:") for name, _p, _port in services}
    # raw + client on every port, and two curls: every one counted, none admitted.
    assert report["counts"] == {str(other.uid): 2 * len(services) + 2}


def modes_not_private(root: Path) -> dict[str, str]:
    """Every folder under root that is not 0700 and every file that is not 0600."""
    wrong = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + [""] + files:
            path = os.path.join(folder, name)
            mode = os.stat(path).st_mode & 0o777
            if mode != (0o700 if os.path.isdir(path) else 0o600):
                wrong[path] = oct(mode)
    return wrong


@pytest.fixture
def open_folder(tmp_path):
    """A folder everyone may enter and write: only the store's own modes protect it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(shared, 0o777)
    return shared


def test_store_on_disk_is_readable_by_its_owner_only(users, open_folder):
    owner, other = users
    store = Store(open_folder / "mail", hash_n=2**4)
    alice = store.add_account("alice", "wonderland", "example.com")
    inbox = alice.folder("INBOX")
    inbox.deliver(b"Subject: private\n\nsecret\n")
    inbox.store_flags(1, ["$Label1"], "add")  # keywords file
    alice.create_folder("Projects")
    alice.set_subscribed("Projects")
    assert modes_not_private(store.root) == {}
    message = next(info.path for info in inbox.messages())
    peek = run_as(other, "import sys\ntry:\n    print(open(sys.argv[1]).read())\nexcept OSError as e:\n"
                         "    print(type(e).__name__)", str(message))
    assert peek.stdout.strip() == "PermissionError"
    store.close()


def test_a_whole_lab_keeps_its_store_and_relay_queue_private(open_folder):
    import smtplib

    import maillab

    with maillab.MailLab(root=open_folder / "lab", ports="any") as lab:
        with smtplib.SMTP(lab.host, lab.smtp_port) as s:
            s.login("alice", "wonderland")
            s.sendmail("alice@example.com", ["john@example.net"], b"Subject: relayed\r\n\r\nhi\r\n")
        lab.settle()
        assert [m.subject for m in lab.mailbox("john")] == ["relayed"]
    assert modes_not_private(open_folder / "lab") == {}
