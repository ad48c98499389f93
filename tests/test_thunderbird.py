"""A real Thunderbird (Debian's package) against the lab's servers, under Xvfb.

What runs is Thunderbird's own mail code: its account setup finds both accounts' settings in the
lab's autoconfig file (served by the webmail) and checks the logins; its SMTP client sends
through the port standing for 465 (TLS from the first byte, then AUTH), its IMAP client reads
alice's mail (IMAPS), its POP3 client downloads bob's (POP3S, leaving a copy
on the server as the account window's default says), and it creates a folder and moves
the message there. The lab's transcripts and mailboxes are the evidence.

How it is driven: a fresh profile's ``user.js`` holds only prefs for a quiet start and the
address of the settings database (``mailnews.auto_config_url``, pointed at the webmail: the
lab's domains are not in the DNS, so Thunderbird's other lookups cannot reach it). Thunderbird's
remote protocol (Marionette, started with ``--marionette``) then runs the steps a user clicks
through: trust the lab's CA in Thunderbird's certificate store; in the account window (the
Account Hub) type name and address, Continue, pick IMAP or POP3 on the page of settings found,
Continue, type the password, Continue (Thunderbird logs in to check, then adds the account:
``set_up_account``); open the compose window and press Send, Get Messages, New Folder, Move To.
Fields are filled by setting their value and sending the events typing sends, buttons pressed
with click(). Screenshots of each step go to ``$MAILLAB_THUNDERBIRD_SHOTS`` (a folder) when set,
else to the test's temporary folder.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import maillab
from conftest import require_tool

SUBJECT = "Hello from Thunderbird"


class Marionette:
    """The smallest Marionette client: length-prefixed JSON commands over TCP."""

    def __init__(self, port: int, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.buffer = b""
        self.last_id = 0
        self._read()  # {"applicationType": "gecko", "marionetteProtocol": 3}
        self.call("WebDriver:NewSession", {"capabilities": {}})
        self.call("Marionette:SetContext", {"value": "chrome"})
        self.call("WebDriver:SetTimeouts", {"script": 60000})

    def _read(self):
        while b":" not in self.buffer:
            self.buffer += self._recv()
        size, rest = self.buffer.split(b":", 1)
        while len(rest) < int(size):
            rest += self._recv()
        self.buffer = rest[int(size):]
        return json.loads(rest[:int(size)])

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("Thunderbird closed the Marionette connection")
        return data

    def call(self, command: str, params: dict | None = None):
        self.last_id += 1
        data = json.dumps([0, self.last_id, command, params or {}]).encode()
        self.sock.sendall(b"%d:" % len(data) + data)
        while True:
            kind, msg_id, error, result = self._read()
            if kind == 1 and msg_id == self.last_id:
                if error:
                    raise RuntimeError(f"{command}: {error.get('message')}")
                return result

    def js(self, script: str, *args):
        """Run ``script`` with chrome privileges in Thunderbird's main window; its return value."""
        return self.call("WebDriver:ExecuteScript", {"script": script, "args": list(args)})["value"]

    def wait(self, script: str, *args, timeout: float = 60):
        """Evaluate ``script`` until it returns something true; that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(script)
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        """A PNG of the window Marionette is switched to."""
        png = self.call("WebDriver:TakeScreenshot", {"full": False, "hash": False})["value"]
        path.write_bytes(base64.b64decode(png))

    def windows(self) -> list[str]:
        return self.call("WebDriver:GetWindowHandles")

    def switch(self, handle: str) -> None:
        self.call("WebDriver:SwitchToWindow", {"handle": handle, "focus": False})


def wait_until(condition, timeout: float = 60):
    """Poll ``condition()`` until it returns something true; that value (the last one if not)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_js(lab: maillab.MailLab, marionette_port: int) -> str:
    """Prefs for a fresh profile: a quiet first start, and account setup that asks the lab.

    Thunderbird looks for a domain's settings on disk, at the provider's own web server
    (``autoconfig.<domain>``, ``<domain>/.well-known/...``: not in the DNS for the lab's
    names), in Mozilla's database (``mailnews.auto_config_url`` + the domain) and through the
    domain's MX. The database's address is pointed at the lab's webmail, which serves the same
    file there (``/autoconfig/v1.1/<domain>``); the lookups that would go to the real example.com
    on the Internet are switched off."""
    prefs = {
        "marionette.port": marionette_port,
        # a quiet first start: no start page, no default-client or rights questions
        "mail.shell.checkDefaultClient": False, "mailnews.start_page.enabled": False,
        "mail.rights.version": 1, "mail.spotlight.firstRunDone": True,
        "mail.provider.suppress_dialog_on_startup": True, "app.update.enabled": False,
        "datareporting.policy.dataSubmissionEnabled": False, "mail.biff.show_alert": False,
        "mailnews.auto_config_url": f"http://localhost:{lab.port('webmail')}/autoconfig/v1.1/",
        "mailnews.auto_config.fetchFromISP.enabled": False,
        "mailnews.auto_config.fetchFromExchange.enabled": False,
        "mailnews.auto_config.guess.enabled": False,
    }
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())


# Thunderbird's account window (the Account Hub, a dialog in the main window; views/email.mjs):
# ``hub()`` is its e-mail view, ``shown()`` the id of the step it shows, ``type()`` types into a
# field as a keyboard would (the value, then the events that make the form check it).
HUB = ("const hub = () => Services.wm.getMostRecentWindow('mail:3pane').document"
       ".querySelector('account-hub-container').modal.querySelector('account-hub-email');\n"
       "const shown = () => { const v = [...hub().querySelectorAll('[id$=Subview]')]"
       ".filter(s => !s.hidden); return v.length ? v[0].id : ''; };\n"
       "const type = (field, text) => { field.focus(); field.value = text;"
       " field.dispatchEvent(new Event('input', {bubbles: true}));"
       " field.dispatchEvent(new Event('change', {bubbles: true})); };\n"
       "const forward = () => hub().querySelector('account-hub-footer #forward');\n")


def set_up_account(tb: Marionette, name: str, address: str, password: str, protocol: str,
                   shots: Path) -> dict:
    """Add an account as a user does in the account window: name and address, Continue; on the
    page of settings found, pick IMAP or POP3, Continue; the password, Continue (Thunderbird
    then logs in to check). Returns the incoming server the page of settings found showed (type, host, port,
    connection security, user name)."""
    tb.js("Services.wm.getMostRecentWindow('mail:3pane').openAccountHub('MAIL');")
    tb.wait(HUB + "try { return shown() == 'emailAutoConfigSubview'; } catch (e) { return false; }")
    tb.js(HUB + "const form = hub().querySelector('#emailAutoConfigSubview');"
          "type(form.querySelector('#realName'), arguments[0]);"
          "type(form.querySelector('#email'), arguments[1]); forward().click();", name, address)
    tb.wait(HUB + "return shown() == 'emailConfigFoundSubview';")
    tb.js(HUB + "hub().querySelector(`#emailConfigFoundSubview #${arguments[0]} input`).click();",
          protocol)
    time.sleep(0.5)  # let the page paint for the screenshot
    tb.screenshot(shots / f"0-{name.lower()}-settings-found.png")
    found = tb.js(HUB + """
        const page = hub().querySelector('#emailConfigFoundSubview');
        const text = id => page.querySelector('#' + id).textContent.trim();
        return [text('incomingType'), text('incomingHost'), text('incomingPort'),
                text('incomingSocketType'), text('incomingUsername')];""")
    tb.js(HUB + "forward().click();")
    tb.wait(HUB + "return shown() == 'emailPasswordSubview';")
    tb.js(HUB + "type(hub().querySelector('#emailPasswordSubview #password'), arguments[0]);"
          "forward().click();", password)
    tb.wait(HUB + "return shown() == 'emailAddedSuccessSubview';", timeout=60)
    tb.js("Services.wm.getMostRecentWindow('mail:3pane').document"
          ".querySelector('account-hub-container').modal.close();")
    return found


@contextmanager
def xvfb():
    """A private X display; yields its name (":N")."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([require_tool("Xvfb"), "-displayfd", str(write_end), "-screen", "0",
                             "1280x900x24", "-nolisten", "tcp"], pass_fds=[write_end],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as f:
            yield ":" + f.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def thunderbird(profile: Path, display: str, marionette_port: int):
    env = dict(os.environ, DISPLAY=display, MOZ_CRASHREPORTER_DISABLE="1", HOME=str(profile.parent))
    log = open(profile.parent / "thunderbird.log", "wb")
    # Debian's /usr/bin/thunderbird is a script that starts the real program: a session of
    # its own lets the test end both (and Thunderbird's helper processes) at the end.
    proc = subprocess.Popen([require_tool("thunderbird"), "--profile", str(profile), "--no-remote",
                             "--marionette", "-remote-allow-system-access"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Marionette(marionette_port)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


# JavaScript run inside Thunderbird. ``account(login)`` finds an account by its user name.
ACCOUNT = ("const account = login => MailServices.accounts.accounts.find("
           "a => a.incomingServer.username.split('@')[0] == login);\n"
           "const inboxOf = login => account(login).incomingServer.rootFolder"
           ".getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);\n"
           "const mainWindow = Services.wm.getMostRecentWindow('mail:3pane');\n"
           "const subjects = folder => [...folder.messages].map(h => h.mime2DecodedSubject);\n")


IMAP_UPDATE = ("folder.QueryInterface(Ci.nsIMsgImapMailFolder)"
               ".updateFolderWithListener(mainWindow.msgWindow, null)")


def show_folder(tb: Marionette, folder: str, get_messages: str, shot: Path) -> list[str]:
    """Select ``folder`` (a JavaScript expression) in Thunderbird's folder pane, run
    ``get_messages`` (JavaScript, with ``folder`` bound), wait until the folder lists a message,
    take a screenshot; the subjects Thunderbird shows."""
    tb.js(ACCOUNT + f"const folder = {folder};"
          f"mainWindow.gTabmail.currentAbout3Pane.displayFolder(folder.URI); {get_messages};")
    shown = tb.wait(ACCOUNT + f"const got = subjects({folder}); return got.length && got;")
    time.sleep(1)  # let the message list paint
    tb.screenshot(shot)
    return shown


def session_lines(lab, service: str) -> list[str]:
    """What clients said to ``service`` (e.g. "imap:example.com"), upper-cased, IMAP tags dropped."""
    said = [line.strip().upper() for line in lab.transcript(service).client_lines()]
    if service.startswith("imap"):
        said = [line.split(" ", 1)[-1] for line in said]
    return said


def test_thunderbird_sends_reads_over_imap_and_pop3_and_moves(tmp_path):
    require_tool("thunderbird")
    require_tool("Xvfb")
    shots = Path(os.environ.get("MAILLAB_THUNDERBIRD_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    profile = tmp_path / "profile"
    profile.mkdir()
    port = free_port()
    with maillab.MailLab(root=tmp_path / "mail", ports="any") as lab:
        (profile / "user.js").write_text(user_js(lab, port))
        with xvfb() as display, thunderbird(profile, display, port) as tb:
            # Settings > Privacy & Security > Manage Certificates > Authorities > Import
            der = ssl.PEM_cert_to_DER_cert(Path(lab.ca_file).read_text())
            tb.js("Cc['@mozilla.org/security/x509certdb;1'].getService(Ci.nsIX509CertDB)"
                  ".addCertFromBase64(arguments[0], 'C,,');", base64.b64encode(der).decode())
            # Account setup, as in the account window: name, address, password; the rest is
            # found in the lab's autoconfig file. alice keeps IMAP (what it proposes first),
            # bob picks POP3 on the result page.
            alice = set_up_account(tb, "Alice", "alice@example.com", "wonderland", "imap", shots)
            bob = set_up_account(tb, "Bob", "bob@example.com", "builder", "pop3", shots)
            # what the page of settings found showed: the lab's ports, TLS from the first byte
            assert alice == ["imap", "localhost", str(lab.imaps_port), "SSL/TLS",
                             "alice@example.com"], alice
            assert bob == ["pop3", "localhost", str(lab.pop3s_port), "SSL/TLS",
                           "bob@example.com"], bob
            made = tb.js("return MailServices.accounts.accounts.map(a => [a.incomingServer.type,"
                         " a.incomingServer.port, a.incomingServer.socketType,"
                         " a.incomingServer.username, a.defaultIdentity?.email]);")
            ssl_tls = 3  # Ci.nsMsgSocketType.SSL
            assert sorted(made, key=str) == sorted([
                ["imap", lab.imaps_port, ssl_tls, "alice@example.com", "alice@example.com"],
                ["pop3", lab.pop3s_port, ssl_tls, "bob@example.com", "bob@example.com"],
                ["none", -1, 0, "nobody", None]], key=str), made
            outgoing = tb.js("return [...MailServices.outgoingServer.servers].map(s => ["
                             "s.QueryInterface(Ci.nsISmtpServer).port, s.username]);")
            assert sorted(outgoing) == [[lab.smtps_port, "alice@example.com"],
                                        [lab.smtps_port, "bob@example.com"]], outgoing
            # Thunderbird fetched the file from the webmail and checked each login there.
            assert "GET /autoconfig/v1.1/example.com HTTP/1.1" in lab.transcript(
                "http:example.com").client_lines()
            pop3_login = session_lines(lab, "pop3s:example.com")
            assert any(line.startswith(("USER", "AUTH")) for line in pop3_login), pop3_login

            # 1. Write a message in the compose window and press Send.
            main_window = tb.call("WebDriver:GetWindowHandle")["value"]
            tb.js(ACCOUNT + """
                const fields = Cc['@mozilla.org/messengercompose/composefields;1']
                  .createInstance(Ci.nsIMsgCompFields);
                fields.from = 'Alice <alice@example.com>';
                fields.to = 'Bob <bob@example.com>';
                fields.cc = 'Alice <alice@example.com>';
                fields.subject = arguments[0];
                fields.body = 'Sent by a real Thunderbird through the lab.\\n';
                const params = Cc['@mozilla.org/messengercompose/composeparams;1']
                  .createInstance(Ci.nsIMsgComposeParams);
                params.composeFields = fields;
                params.identity = account('alice').defaultIdentity;
                params.format = Ci.nsIMsgCompFormat.PlainText;
                MailServices.compose.OpenComposeWindowWithParams(null, params);""", SUBJECT)
            tb.wait("const w = Services.wm.getMostRecentWindow('msgcompose');"
                    "return !!(w && w.document.readyState == 'complete' && w.gMsgCompose);")
            time.sleep(1)  # let the window paint for the screenshot
            compose_window = [w for w in tb.windows() if w != main_window][-1]
            tb.switch(compose_window)
            tb.screenshot(shots / "1-compose.png")
            tb.switch(main_window)
            tb.js("Services.wm.getMostRecentWindow('msgcompose').goDoCommand('cmd_sendNow');")
            received = wait_until(lambda: lab.mailbox("bob"))
            assert [m.subject for m in received] == [SUBJECT]
            assert "Thunderbird" in received[0].message["User-Agent"]
            sent = wait_until(lambda: lab.mailbox("alice", "Sent"))
            assert [m.subject for m in sent] == [SUBJECT]  # Thunderbird's copy, over IMAP
            # sent over TLS from the first byte (the port standing for 465), after AUTH
            submission = session_lines(lab, "smtps:example.com")
            assert any(line.startswith("AUTH") for line in submission), submission

            # 2. alice: Get Messages over IMAP (TLS from the first byte).
            assert show_folder(tb, "inboxOf('alice')", IMAP_UPDATE,
                               shots / "2-imap-inbox.png") == [SUBJECT]
            imap = session_lines(lab, "imaps:example.com")
            assert any(line.startswith(("AUTHENTICATE", "LOGIN"))
                                              for line in imap), imap
            assert any(line.startswith("SELECT") for line in imap), imap

            # 3. bob: Get Messages over POP3S. An account made by the account window leaves a
            # copy on the server (14 days): UIDL tells Thunderbird what it has already fetched.
            get_pop3 = "account('bob').incomingServer.getNewMessages(folder, mainWindow.msgWindow, null)"
            assert show_folder(tb, "inboxOf('bob')", get_pop3, shots / "3-pop3-inbox.png") == [SUBJECT]
            # (Thunderbird shows the message before it has sent QUIT: wait for it.)
            pop3 = wait_until(lambda: (said := session_lines(lab, "pop3s:example.com"))
                              and said[-1] == "QUIT" and "RETR 1" in said and said)
            assert "RETR 1" in pop3 and "UIDL" in pop3 and "DELE 1" not in pop3, pop3
            assert [m.subject for m in lab.mailbox("bob")] == [SUBJECT]

            # 4. alice: New Folder "Lab", then Move To > Lab.
            tb.js(ACCOUNT + "account('alice').incomingServer.rootFolder"
                  ".createSubfolder('Lab', mainWindow.msgWindow);")
            tb.wait(ACCOUNT + "return account('alice').incomingServer.rootFolder"
                    ".containsChildNamed('Lab');")
            tb.js(ACCOUNT + """
                const inbox = inboxOf('alice');
                const lab = account('alice').incomingServer.rootFolder.getChildNamed('Lab');
                MailServices.copy.copyMessages(inbox, [...inbox.messages], lab, true, null,
                                               mainWindow.msgWindow, false);""")
            moved = wait_until(lambda: lab.mailbox("alice", "Lab"))
            assert [m.subject for m in moved] == [SUBJECT]
            assert wait_until(lambda: lab.mailbox("alice") == []), lab.mailbox("alice")
            lab_folder = "account('alice').incomingServer.rootFolder.getChildNamed('Lab')"
            assert show_folder(tb, lab_folder, IMAP_UPDATE, shots / "4-moved-to-lab.png") == [SUBJECT]
            imap = session_lines(lab, "imaps:example.com")
            assert any(line.startswith('CREATE "LAB"') or line.startswith("CREATE LAB")
                       for line in imap), imap
            assert any(line.startswith(("UID MOVE", "MOVE", "UID COPY", "COPY")) for line in imap), imap
