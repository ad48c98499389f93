"""The webmail in a real headless Chromium (Debian's chromium driven by Playwright).

* A whole session as a person would have it: log in, read, write to another account, log in
  as that account, find the message, reply with an attachment, delete, log out.
* The same flow through a real Jupyter server at /proxy/<port>/ (jupyter-server-proxy).
* A corpus of hostile HTML mail (tests/webmail_corpus) opened in the browser: no script runs,
  no request leaves the webmail's origin.

Screenshots of the main pages go to test-artifacts/webmail/.
"""

from __future__ import annotations

import http.server
import json
import re
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import maillab
from browser import CHROMIUM_ARGS, expect, sync_playwright
from jupyterproc import running_jupyter
from conftest import in_ci, require_tool
from maillab.webmail.testing import make_message

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "webmail_corpus"
ARTIFACTS = ROOT / "test-artifacts" / "webmail"


@pytest.fixture(scope="module")
def browser():
    chromium = require_tool("chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab():
    lab = maillab.MailLab(ports="any").start()
    yield lab
    lab.stop()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page, base: str, address: str, password: str) -> None:
    page.goto(base)
    expect(page.get_by_role("heading", name="Log In")).to_be_visible()
    page.get_by_label("Email Address").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log In").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


def log_out(page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You have logged out.")).to_be_visible()


def whole_flow(page, lab, base: str, prefix: str, *, screenshots: bool) -> None:
    """alice reads and writes to john; john finds it, replies with a file, deletes it, logs out."""
    subject = f"Lecture notes {secrets.token_hex(3)}"
    lab.store.account("alice").folder("INBOX").deliver(make_message(
        sender="Bob <bob@example.com>", to="alice@example.com", subject=f"Welcome {subject}",
        text="Hi Alice,\nwelcome to the mail lab!\nBob", html=(
            "<p>Hi Alice,</p><p>welcome to the <b>mail lab</b>!</p>"
            "<p><img src='https://images.example/banner.png' alt='banner'></p><p>Bob</p>")))
    # --- alice logs in with the keyboard alone
    page.goto(base)
    expect(page.get_by_label("Email Address")).to_be_focused()
    if screenshots:
        shot(page, f"{prefix}1-login")
    page.keyboard.type("alice@example.com")
    page.keyboard.press("Tab")
    page.keyboard.type("wonderland")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    assert page.url.startswith(base)
    # the folder list shows the unread count; the message list links to the message
    expect(page.locator("nav.folders a.current .badge")).to_have_text(re.compile(r"^\d+ unread$"))
    if screenshots:
        shot(page, f"{prefix}2-inbox")
    page.get_by_role("link", name=re.compile(f"Welcome {subject}")).click()
    expect(page.get_by_role("heading", name=f"Welcome {subject}")).to_be_visible()
    body = page.frame_locator("iframe.body-frame")
    expect(body.locator("b")).to_have_text("mail lab")
    expect(page.get_by_text("Remote images in this message were blocked")).to_be_visible()
    if screenshots:
        shot(page, f"{prefix}3-message")
    # --- alice writes to john at the other provider
    page.get_by_role("link", name="Compose").click()
    page.get_by_label("To", exact=True).fill("john@example.net")
    page.get_by_label("Subject").fill(subject)
    page.get_by_label("Message", exact=True).fill("Hello John,\nhere are the notes.\nAlice")
    if screenshots:
        shot(page, f"{prefix}4-compose")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status").filter(has_text="Message sent to john@example.net")).to_be_visible()
    page.get_by_role("link", name=re.compile("^Sent")).click()
    expect(page.get_by_role("link", name=re.compile(subject))).to_be_visible()
    log_out(page)
    lab.settle()
    # --- john finds it and replies with an attachment
    log_in(page, base, "john@example.net", "postman")
    page.get_by_role("link", name=re.compile(subject)).click()
    expect(page.locator("pre.text-body")).to_contain_text("here are the notes.")
    page.get_by_role("link", name="Reply", exact=True).click()
    expect(page.get_by_label("Subject")).to_have_value(f"Re: {subject}")
    expect(page.get_by_label("To", exact=True)).to_have_value("alice@example.com")
    page.get_by_label("Message", exact=True).press("Control+Home")
    page.get_by_label("Message", exact=True).type("Thanks, Alice! My answers are attached.\n")
    page.get_by_label("Attach files").set_input_files(
        files=[{"name": "answers.txt", "mimeType": "text/plain", "buffer": b"1. HELO\n2. 250\n"}])
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status").filter(has_text="Message sent to alice@example.com")).to_be_visible()
    # --- john deletes alice's message: it goes to Trash
    page.get_by_role("link", name=re.compile(subject)).first.click()
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status").filter(has_text="1 message moved to Trash.")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile(subject))).to_have_count(0)
    page.get_by_role("link", name=re.compile("^Trash")).click()
    expect(page.get_by_role("link", name=re.compile(subject))).to_be_visible()
    if screenshots:
        shot(page, f"{prefix}5-trash")
    log_out(page)
    # --- alice sees the answer, answered flag and attachment included
    log_in(page, base, "alice@example.com", "wonderland")
    page.get_by_role("link", name=re.compile(f"Re: {subject}")).click()
    expect(page.get_by_role("link", name="answers.txt")).to_be_visible()
    with page.expect_download() as dl:
        page.get_by_role("link", name="answers.txt").click()
    assert dl.value.suggested_filename == "answers.txt"
    assert Path(dl.value.path()).read_bytes().replace(b"\r\n", b"\n") == b"1. HELO\n2. 250\n"
    if screenshots:
        shot(page, f"{prefix}6-reply-with-attachment")
    log_out(page)
    john = lab.mailbox("john@example.net", "INBOX")
    assert not [m for m in john if m.subject == subject]
    trashed = [m for m in lab.mailbox("john@example.net", "Trash") if m.subject == subject]
    assert trashed and "\\Answered" in trashed[0].flags


def test_whole_session_in_chromium(browser, lab):
    t = time.perf_counter()
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        whole_flow(page, lab, lab.webmail_url, "", screenshots=True)
        # the same pages on a phone-sized screen
        page.set_viewport_size({"width": 390, "height": 780})
        log_in(page, lab.webmail_url, "alice@example.com", "wonderland")
        shot(page, "7-inbox-narrow")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    finally:
        context.close()
    assert errors == []
    print(f"whole session in Chromium: {time.perf_counter() - t:.1f} s")


# ----------------------------------------------------------------------------- hostile mail

class Attacker:
    """An HTTP server on loopback that counts every request a hostile message makes it get."""

    def __init__(self):
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.end_headers()
                self.wfile.write(b"GIF89a")

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def attacker():
    a = Attacker()
    yield a
    a.close()


def corpus_messages(attacker_host: str) -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(CORPUS.iterdir()):
        if path.suffix not in (".html", ".eml"):
            continue
        number = path.name.split("-", 1)[0]
        text = path.read_text().replace("ATTACKER", attacker_host).replace("NN", number)
        if path.suffix == ".html":
            what = text.split("\n", 1)[0].strip("<!-> ")
            raw = make_message(sender="Mallory <mallory@example.org>", to="victim@example.com",
                               subject=f"Hostile {number}: {what}", text=None,
                               html=text + f"\n<p>CANARY-{number}</p>\n")
        else:
            raw = text.replace("\n", "\r\n").encode()
        out.append((number, raw))
    return out


def test_corpus_has_at_least_30_hostile_messages():
    assert len([p for p in CORPUS.iterdir() if p.suffix in (".html", ".eml")]) >= 30


def test_hostile_mail_runs_no_script_and_reaches_no_network(browser, lab, attacker):
    lab.store.add_account("victim", "victim-pw", "example.com")
    folder = lab.store.account("victim").folder("INBOX")
    uids = {number: folder.deliver(raw).uid for number, raw in corpus_messages(attacker.host)}
    origin = lab.webmail_url.rstrip("/")
    context = browser.new_context()
    consoles, requests_out, dialogs, popups = [], [], [], []
    context.on("console", lambda m: consoles.append((m.type, m.text)))
    context.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    context.on("request", lambda r: r.url.startswith((origin + "/", "data:", "about:"))
               or requests_out.append(r.url))
    pages = []
    try:
        page = context.new_page()
        log_in(page, lab.webmail_url, "victim@example.com", "victim-pw")
        expect(page.locator("nav.folders a.current .badge")).to_have_text(f"{len(uids)} unread")
        page.on("popup", lambda p: popups.append(p.url))
        for number, uid in uids.items():
            tab = context.new_page()
            tab.on("popup", lambda p: popups.append(p.url))
            pages.append(tab)
            tab.goto(f"{lab.webmail_url}read?f=INBOX&uid={uid}")
            expect(tab.get_by_role("heading", level=1)).to_contain_text(f"Hostile {number}")
            frame = tab.frame_locator("iframe.body-frame")
            # the body really was shown (the frame got its session and its document)
            expect(frame.get_by_text(f"CANARY-{number}")).to_be_visible()
            if number in ("07", "37"):
                shot(tab, f"hostile-{number}")
        # moving the mouse over a message does not run anything either (handlers are gone)
        pages[-1].mouse.move(400, 500)
        pages[-1].mouse.move(420, 560)
        time.sleep(1.0)  # time for delayed refreshes, animations and timers to fire
    finally:
        for tab in pages:
            tab.close()
        context.close()
    # a payload that ran would have logged "PWNED NN" (browser warnings quoting one do not count)
    pwned = [t for kind, t in consoles if kind == "log" and t.startswith("PWNED")]
    assert pwned == [], pwned
    # Nothing active even reached the browser: the sanitizer took it all out, so the CSP and
    # the sandbox (the second line of defence, tested below) had nothing to refuse.
    refused = [t for _k, t in consoles if "Content Security Policy" in t or "Blocked" in t]
    assert refused == [], refused
    assert dialogs == [] and popups == []
    assert attacker.hits == [], attacker.hits
    assert requests_out == [], requests_out


def raw_html(raw: bytes) -> str:
    import email
    import email.policy
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body(("html",))
    return body.get_content() if body is not None else ""


def test_csp_and_sandbox_alone_stop_script_if_the_sanitizer_were_bypassed(browser, lab, attacker):
    """Defence in depth: the body's own CSP (with sandbox), the hostile HTML put back raw."""
    from maillab.webmail.message import html_document
    lab.store.add_account("victim2", "victim2-pw", "example.com")
    folder = lab.store.account("victim2").folder("INBOX")
    raw_by_uid = {}
    for number, raw in corpus_messages(attacker.host):
        raw_by_uid[str(folder.deliver(raw).uid)] = raw_html(raw)
    context = browser.new_context()
    consoles, dialogs, swapped = [], [], []
    context.on("console", lambda m: consoles.append((m.type, m.text)))
    context.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def unsanitized(route):
        response = route.fetch()  # the webmail's real answer: its headers (CSP, sandbox) stay
        uid = re.search(r"[?&]uid=(\d+)", route.request.url).group(1)
        swapped.append(uid)
        route.fulfill(response=response, body=html_document(raw_by_uid[uid], "raw"))

    context.route(re.compile(r".*/body\?.*"), unsanitized)
    before = len(attacker.hits)
    pages = []
    try:
        page = context.new_page()
        log_in(page, lab.webmail_url, "victim2@example.com", "victim2-pw")
        for uid in raw_by_uid:
            tab = context.new_page()
            pages.append(tab)
            # The body opened on its own, as a top-level page: no iframe sandbox attribute helps,
            # only the response's own headers (CSP with its sandbox directive).
            tab.goto(f"{lab.webmail_url}body?f=INBOX&uid={uid}")
        time.sleep(1.0)
    finally:
        for tab in pages:
            tab.close()
        context.close()
    assert len(swapped) >= 30
    assert [t for kind, t in consoles if kind == "log" and t.startswith("PWNED")] == []
    assert dialogs == []
    assert any("Content Security Policy" in t for _k, t in consoles)  # it did have work to do
    # Every subresource is refused by the CSP (img-src, frame-src, object-src, style-src...);
    # a meta refresh, which no CSP governs, is stopped by the sandbox (no automatic features).
    assert attacker.hits[before:] == []


def test_remote_images_load_only_when_the_reader_allows_them(browser, lab, attacker):
    lab.store.add_account("reader", "reader-pw", "example.com")
    body = (f'<p>Newsletter</p><img src="http://{attacker.host}/banner.png?allowed" alt="banner">')
    uid = lab.store.account("reader").folder("INBOX").deliver(make_message(
        sender="news@example.org", to="reader@example.com", subject="Newsletter", text=None,
        html=body)).uid
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, lab.webmail_url, "reader@example.com", "reader-pw")
        before = len(attacker.hits)
        page.goto(f"{lab.webmail_url}read?f=INBOX&uid={uid}")
        expect(page.frame_locator("iframe.body-frame").get_by_text("Newsletter")).to_be_visible()
        time.sleep(0.3)
        assert len(attacker.hits) == before
        page.get_by_role("link", name="Show images").click()
        expect(page.frame_locator("iframe.body-frame").get_by_alt_text("banner")).to_be_visible()
        deadline = time.time() + 5
        while len(attacker.hits) == before and time.time() < deadline:
            time.sleep(0.05)
        assert attacker.hits[before:] == ["/banner.png?allowed"]
    finally:
        context.close()


# ----------------------------------------------------------------------------- through Jupyter

@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """A real `jupyter server` (with jupyter-server-proxy) on a free port, with a token."""
    pytest.importorskip("jupyter_server_proxy") if not in_ci() else None
    root = tmp_path_factory.mktemp("jupyter-root")
    # stop_wait: it has nothing to save (no kernels, no notebooks)
    with running_jupyter("server", root, root / "server.log", timeout=60, stop_wait=3,
                         env={"JUPYTER_RUNTIME_DIR": str(root / "runtime")}) as server:
        yield {**server, "runtime": root / "runtime"}


def test_whole_session_through_jupyter_server_proxy(browser, lab, jupyter):
    from maillab.webmail.location import jupyter_base_url, webmail_url
    # What a kernel started by this server would compute as lab.webmail_url:
    runtime = jupyter["runtime"]
    servers = [json.loads(p.read_text()) for p in runtime.glob("jpserver-*.json")]
    assert servers, "the server wrote no runtime file"
    path = webmail_url(lab.webmail_port, kernel=True, environ={}, servers=servers,
                       parent_pid=jupyter["proc"].pid)
    assert path == f"/proxy/{lab.webmail_port}/"
    assert jupyter_base_url(environ={}, servers=servers, parent_pid=jupyter["proc"].pid) == "/"
    base = jupyter["base"] + path
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    try:
        # Jupyter's own login: the token once, then its cookie.
        page.goto(f"{base}?token={jupyter['token']}")
        expect(page.get_by_role("heading", name="Log In")).to_be_visible()
        assert urlsplit(page.url).path == f"/proxy/{lab.webmail_port}/login"
        whole_flow(page, lab, base, "jupyter-", screenshots=True)
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies.get(f"maillab_webmail_{lab.webmail_port}")
        if session is not None:  # after logout it is expired; the pre-session one remains
            assert session["path"] == f"/proxy/{lab.webmail_port}"
        pre = cookies[f"maillab_webmail_{lab.webmail_port}_pre"]
        assert pre["path"] == f"/proxy/{lab.webmail_port}" and pre["httpOnly"]
        assert pre["sameSite"] == "Strict"
    finally:
        context.close()


def test_a_lab_started_in_a_jupyter_kernel_gives_the_proxy_address(browser, jupyter):
    """maillab.start() in a real kernel of that server: lab.webmail_url is the proxy path."""
    import requests
    from jupyter_client import BlockingKernelClient
    base = jupyter["base"]
    auth = {"Authorization": f"token {jupyter['token']}"}
    kernel_id = requests.post(f"{base}/api/kernels", headers=auth, json={"name": "python3"},
                              timeout=30).json()["id"]
    client = None
    try:
        connection = jupyter["runtime"] / f"kernel-{kernel_id}.json"
        deadline = time.time() + 30
        while not connection.exists() and time.time() < deadline:
            time.sleep(0.1)
        client = BlockingKernelClient()
        client.load_connection_file(str(connection))
        client.start_channels()
        client.wait_for_ready(timeout=60)
        said = []

        def run(code: str) -> str:
            said.clear()
            reply = client.execute_interactive(code, timeout=60, output_hook=said.append)
            assert reply["content"]["status"] == "ok", reply["content"]
            return "".join(m["content"].get("text", "") for m in said if m["msg_type"] == "stream")

        out = run("import maillab\nlab = maillab.start(ports='any')\n"
                  "print(lab.webmail_url)\nprint(lab.show_webmail()._repr_html_())")
        url, html = out.split("\n", 1)
        assert re.fullmatch(r"/proxy/\d+/", url), out
        assert f'<iframe src="{url}"' in html
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{base}{url}?token={jupyter['token']}")
            page.get_by_label("Email Address").fill("maria@example.net")
            page.get_by_label("Password").fill("sunflower")
            page.get_by_role("button", name="Log In").click()
            expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
            # the notebook's view of what just happened: the webmail's IMAP login, server-side
            said_imap = run("print(lab.transcript('imap:example.net').client_lines())")
            assert "LOGIN maria@example.net" in said_imap
        finally:
            context.close()
        run("lab.stop()")
    finally:
        if client is not None:
            client.stop_channels()
        requests.delete(f"{base}/api/kernels/{kernel_id}", headers=auth, timeout=30)
