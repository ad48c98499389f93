"""A light start (issue 15): what ``import maillab`` loads, and what a lab makes only when used.

* ``import maillab`` loads the lab and its SMTP server, and nothing a lesson may never use:
  certificates (trustme, cryptography), the webmail (aiohttp, jinja2, nh3), widgets, grading,
  the session magics, message parsing and relaying (email.policy, smtplib), the stdlib's Maildir
  classes. Checked on module names in a fresh interpreter, never on times
  (``bench/bench_core.py`` measures times beside aiosmtpd's and Dovecot's).
* A new account's special folders (Sent, Drafts, Trash, Junk) are made on disk the first time
  anything looks beyond INBOX; every listing shows them as before.
* The webmail's port listens at once; its application loads when a browser first connects,
  and that browser waits in the port's queue and gets its page.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from maillab.net import bind_listener
from maillab.store import SPECIAL_USE, Store
from maillab.webmail import LazyWebmail

# ----------------------------------------------------------------------------- import maillab

# Never loaded by a plain ``import maillab`` (a module or any module below it).
NOT_AT_IMPORT = [
    "maillab.webmail", "maillab.widgets", "maillab.grading", "maillab.grader", "maillab.sessions",
    "maillab.magics", "maillab.imap", "maillab.pop3",
    "aiohttp", "jinja2", "nh3", "ipywidgets", "IPython",
    "trustme", "cryptography",
    "email.policy", "email.parser", "smtplib", "mailbox",
]


def modules_after(code: str, env: dict | None = None) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (with ``env`` added to
    its environment)."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=120,
                         env=None if env is None else {**os.environ, **env})
    return set(json.loads(out.stdout.splitlines()[-1]))


def loaded(modules: set[str], name: str) -> list[str]:
    return sorted(m for m in modules if m == name or m.startswith(name + "."))


@pytest.fixture(scope="module")
def after_import() -> set[str]:
    return modules_after("import maillab")


@pytest.mark.parametrize("name", NOT_AT_IMPORT)
def test_import_maillab_does_not_load(after_import, name):
    assert loaded(after_import, name) == []


def test_import_maillab_loads_the_lab_and_its_smtp_server(after_import):
    # The other side of the check: what a lab needs is there, so the list above is not
    # passing because nothing was imported at all.
    assert {"maillab.lab", "maillab.smtp", "maillab.store", "aiosmtpd.smtp"} <= after_import


def test_serve_does_not_load_the_grader_but_grade_still_has_its_options():
    modules = modules_after("import maillab.__main__ as cli\n"
                            "cli.serve = lambda args: 0  # the command line read, no lab started\n"
                            "cli.main(['serve', '--ports', 'any'])")
    assert loaded(modules, "maillab.grader") == []
    out = subprocess.run([sys.executable, "-m", "maillab", "grade", "--help"], capture_output=True,
                         text=True, check=True, timeout=120)
    assert "--workers" in out.stdout and "--no-sandbox" in out.stdout


STARTED_LAB = (
    "import imaplib, socket, sys, maillab\n"
    "lab = maillab.MailLab(ports='any').start()\n"
    "try:\n"
    "    assert lab.ca_file and 'aiohttp' not in sys.modules\n"
    "    with imaplib.IMAP4_SSL(lab.host, lab.imaps_port, ssl_context=lab.client_context(), timeout=60) as m:\n"
    "        assert m.login('alice', 'wonderland')[0] == 'OK'\n"
    "    with socket.create_connection((lab.host, lab.webmail_port), timeout=60) as s:\n"
    "        s.sendall(b'GET / HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n')\n"
    "        assert s.recv(64).split()[1] == b'303', 'the login page is where / leads'\n"
    "finally:\n"
    "    lab.stop()\n")


def test_a_started_lab_loads_certificates_but_the_webmail_only_when_a_browser_comes(tmp_path):
    modules = modules_after(STARTED_LAB, {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert loaded(modules, "maillab.certificates") and loaded(modules, "maillab.imap")
    assert loaded(modules, "cryptography"), "the first lab of a user makes the CA and keys"
    # IMAP's FETCH and SEARCH (and the email package they bring) load with the first of them
    assert loaded(modules, "maillab.imap.fetch") == loaded(modules, "maillab.imap.search") == []
    assert loaded(modules, "aiohttp") and loaded(modules, "maillab.webmail.app")
    # The certificates are written out by maillab.tls: no x509 module (about 20 ms to import).
    assert loaded(modules, "cryptography.x509") == [] and loaded(modules, "trustme") == []


def test_a_lab_takes_the_certificates_kept_in_the_users_cache_without_cryptography(tmp_path):
    """Making keys costs more than the rest of a start: the CA and the server keys of a lab
    without a folder of its own are kept in the user's cache folder (private to the user) and
    a later lab uses them (the IMAPS login inside STARTED_LAB checks they still fit)."""
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    modules_after(STARTED_LAB, cache)
    kept = tmp_path / "cache" / "maillab" / "tls"
    ca = (kept / "maillab-ca.pem").read_bytes()
    assert kept.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in kept.iterdir())
    modules = modules_after(STARTED_LAB, cache)
    assert loaded(modules, "maillab.certificates") and loaded(modules, "cryptography") == []
    assert (kept / "maillab-ca.pem").read_bytes() == ca
    # a cache folder open to others is not used: a fresh CA, nothing written there
    os.chmod(kept, 0o755)
    modules = modules_after(STARTED_LAB, cache)
    assert loaded(modules, "cryptography") and (kept / "maillab-ca.pem").read_bytes() == ca


# ----------------------------------------------------------------------------- special folders

@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", hash_n=2**10)
    yield s
    s.close()


def on_disk(acct) -> list[str]:
    return sorted(p.name for p in acct.path.iterdir() if p.is_dir())


def test_special_folders_are_made_on_the_first_look_beyond_inbox(store):
    acct = store.add_account("alice", "pw", "example.com")
    assert on_disk(acct) == ["cur", "new", "tmp"]  # INBOX only
    acct.folder("INBOX").deliver(b"Subject: hi\n\nSMTP and POP3 see INBOX alone\n")
    assert on_disk(acct) == ["cur", "new", "tmp"]
    assert json.loads((store.root / "accounts.json").read_text())["accounts"][0][
        "folders_to_make"] == list(SPECIAL_USE)
    assert acct.folder_names() == ["INBOX", "Drafts", "Junk", "Sent", "Trash"]
    assert on_disk(acct) == [".Drafts", ".Junk", ".Sent", ".Trash", "cur", "new", "tmp"]
    for name in SPECIAL_USE:  # Maildir++ sub-folders, as the stdlib's mailbox makes them
        assert sorted(p.name for p in (acct.path / f".{name}").iterdir()) == [
            "cur", "maildirfolder", "new", "tmp"]
    assert "folders_to_make" not in (store.root / "accounts.json").read_text()


@pytest.mark.parametrize("first_look", ["has_folder", "folder", "subscriptions", "create_folder"])
def test_any_look_beyond_inbox_makes_them(store, first_look):
    acct = store.add_account("alice", "pw", "example.com")
    {"has_folder": lambda: acct.has_folder("Sent"), "folder": lambda: acct.folder("Trash"),
     "subscriptions": acct.subscriptions, "create_folder": lambda: acct.create_folder("Work")}[
        first_look]()
    assert {".Drafts", ".Junk", ".Sent", ".Trash"} <= set(on_disk(acct))
    assert acct.subscriptions() == ["INBOX", "Sent", "Drafts", "Trash", "Junk"]


def test_folders_still_to_make_survive_a_restart_and_a_deleted_one_stays_deleted(store, tmp_path):
    store.add_account("alice", "pw", "example.com")
    bob = store.add_account("bob", "pw", "example.com")
    bob.delete_folder("Junk")  # before it was ever on disk
    store.close()
    again = Store(tmp_path / "store", hash_n=2**10)
    assert on_disk(again.account("alice")) == ["cur", "new", "tmp"]
    assert again.account("alice").folder_names() == ["INBOX", "Drafts", "Junk", "Sent", "Trash"]
    assert again.account("bob").folder_names() == ["INBOX", "Drafts", "Sent", "Trash"]
    # Replacing a password keeps what is still to make.
    again.add_account("alice", "new-pw", "example.com")
    assert again.account("alice").folders_to_make == []


def test_imap_lists_the_special_folders_of_a_new_lab():
    import maillab
    with maillab.MailLab(ports="any") as lab:
        acct = lab.store.account("alice")
        assert ".Sent" not in on_disk(acct)
        with imaplib.IMAP4(lab.host, lab.imap_port) as client:
            client.login("alice", "wonderland")
            typ, lines = client.list('(SPECIAL-USE) ""', "*")
    assert typ == "OK"
    assert sorted(lines) == sorted(f'({use}) "." {name}'.encode() for name, use in SPECIAL_USE.items())


# ----------------------------------------------------------------------------- the webmail

class LoopThread:
    """An asyncio loop on a thread of its own (as a lab runs its servers)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def held_webmail():
    """A LazyWebmail whose application loads only when the test says ``go.set()``."""
    from maillab.webmail import _load_webmail

    runner, go, started = LoopThread(), threading.Event(), threading.Event()

    def slow_loader(backend, kwargs):
        started.set()
        if not go.wait(60):
            raise TimeoutError("the test never let the webmail load")
        return _load_webmail(backend, kwargs)

    sock = bind_listener(None)

    async def make():
        return LazyWebmail(sock, lambda _domain: None, {}, loader=slow_loader)

    server = runner.run(make())
    yield server, sock.getsockname()[1], go, started, runner
    go.set()
    runner.run(server.wait_closed())
    runner.close()


def request(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"GET /login HTTP/1.0\r\nHost: localhost\r\n\r\n")
    return s


def status(page: bytes) -> int:
    return int(page.split(b" ", 2)[1])


def read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_a_browser_that_comes_while_the_webmail_loads_waits_and_gets_its_page(held_webmail):
    server, port, go, started, _runner = held_webmail
    assert server.webmail is None and not started.is_set()  # nothing loads before a browser
    with request(port) as browser:
        assert started.wait(30), "a connection starts the loading"
        browser.settimeout(0.5)
        with pytest.raises(socket.timeout):  # held in the port's queue, not refused
            browser.recv(1)
        go.set()
        browser.settimeout(60)
        page = read_all(browser)
    assert status(page) == 200 and b'name="password"' in page
    assert server.webmail is not None
    with request(port) as second:  # and it goes on serving
        assert status(read_all(second)) == 200


def test_stopping_while_the_webmail_loads_refuses_the_waiting_browser(held_webmail):
    server, port, go, started, runner = held_webmail
    with request(port) as browser:
        assert started.wait(30)
        runner.run(server.wait_closed())
        try:
            assert read_all(browser) == b""
        except ConnectionResetError:
            pass  # as good: the queued connection was reset
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_webmail_that_cannot_load_refuses_browsers_and_says_why(caplog):
    runner = LoopThread()
    sock = bind_listener(None)
    port = sock.getsockname()[1]

    def broken(backend, kwargs):
        raise RuntimeError("templates missing")

    async def make():
        return LazyWebmail(sock, lambda _domain: None, {}, loader=broken)

    server = runner.run(make())
    try:
        try:
            with request(port) as browser:
                assert read_all(browser) == b""
        except ConnectionResetError:
            pass  # as good a refusal: reset while connecting (the port closed) or reading
        runner.run(server.wait_closed())
    finally:
        runner.close()
    assert "the webmail could not be started" in caplog.text and "templates missing" in caplog.text


def test_show_webmail_loads_it_before_the_browser_asks():
    import maillab
    with maillab.MailLab(ports="any") as lab:
        server = lab.service("webmail").server
        assert server.webmail is None
        html = lab.show_webmail()._repr_html_()
        assert "<iframe" in html
        asyncio.run_coroutine_threadsafe(server.ready(), lab._loop).result(60)
        assert server.webmail is not None
