"""What each corpus case does to each lab, and which tests must then fail (make_corpus.py).

The first cases are a learner's slips and accidents (hang, swallow, kill, cells). The others
are attacks, written as a determined student would write them with nothing but the notebook;
each one's expected score is what its *honest* work earns (the parts it really solved), and
``maillab grade`` must give exactly that. Attacks that could hurt the machine they run on (a
fork bomb, filling the disk) go off only under a throwaway user id, as in the grader's
sandboxes, so that running this corpus anywhere else does no harm.
"""

from attacks import ANYTHING  # the same yes-to-everything class as the attacks

# The steps of the smtp lab's parts typed by hand (solutions/.labs/lab_smtp.py)
SMTP_HAND = ["hello", "envelope", "message", "headers", "quit"]
SMTP_SUBMIT = ["tls", "login", "envelope", "message", "headers", "quit"]
# ... and the pop3 lab's (solutions/.labs/lab_pop3.py)
POP3_BOX_STEPS = ["login", "look", "retr", "dele", "quit", "kept"]
# ... and the imap lab's (solutions/.labs/lab_imap.py)
IMAP_STEPS = ["login", "create", "move", "flag", "search", "logout"]
# ... and the journey lab's (solutions/.labs/lab_journey.py)
JOURNEY_LEVEL1 = [f"{part}_{step}_tests" for part, steps in (
    ("send", ["hello", "tls", "login", "envelope", "message", "headers", "quit"]),
    ("download", ["login", "retr", "kept", "quit"])) for step in steps]
# ... and the web-and-security lab's (solutions/.labs/lab_web_and_security.py)
WEB_LEVEL1 = ["page_request_tests", "mailbox_request_tests", "post_token_tests",
              "post_login_tests", "inbox_request_tests", "predict_tests",
              "account_incoming_tests", "account_outgoing_tests"] + [
    f"submit_{step}_tests" for step in ["hello", "tls", "login", "envelope", "message", "quit"]]
# a login form's token copied from an earlier run of the lab (each run makes its own)
STALE_TOKEN = "5c612460e1b08a8da9f5c0559aeea5e51661f9af5d1a7ae80cad374b0e41014e"


def busy_loop(fn: str) -> str:
    return f'''
def {fn}(*args, **kwargs):
    while True:  # never ends
        pass
'''


def recv_forever(fn: str) -> str:
    return f'''
def {fn}(host, port, *args, **kwargs):
    sock = socket.create_connection((host, port))
    f = sock.makefile("rb")
    while True:
        f.readline()  # waits for lines the server will never send
'''


def swallow(fn: str) -> str:
    return f'''
import time

def {fn}(*args, **kwargs):
    while True:
        try:
            time.sleep(0.1)
        except BaseException:  # KeyboardInterrupt, the cell time limit: ignore them all
            pass
'''


def kill(fn: str) -> str:
    return f'''
import os

def {fn}(*args, **kwargs):
    os._exit(1)  # ends the Python kernel
'''


# Patch the grading helpers so that every check "passes", and the lab's own methods.
TAMPER = ANYTHING + '''
import maillab.grading, maillab.lab

for _name in ("watch", "verify", "maildir", "plain_auth_user", "unstuff"):
    setattr(maillab.grading, _name, lambda *a, **k: _Anything())
maillab.grading.Watch.sessions = lambda self, service=None: [_Anything()]
maillab.lab.MailLab.mailbox = lambda self, user, folder="INBOX": [_Anything()]
lab.transcript = lambda *a, **k: _Anything()
'''

# Fake the evidence: forged transcript lines, a message file written straight into a Maildir,
# a delivery through the store that no SMTP session made.
FORGE = '''
import secrets, time
from maillab.transcript import Line

def _forge(service, client, server, conn=10**6):
    for who, raws in (("S", server), ("C", client)):
        for raw in raws:
            lab.recorder._add(Line(time.time(), service, conn, who, raw, "127.0.0.1:1"))
'''

FAKE_SMTP = FORGE + '''

def send_mail(host, port, sender, recipients, message, name="student.example.org"):
    qid = "FAKE" + secrets.token_hex(4).upper()
    for rcpt in recipients:
        new = lab.store.root / rcpt.split("@")[0] / "new"
        (new / f"{time.time_ns()}.forged").write_bytes(
            f"Received: from x by mail.example.com with ESMTP id {qid};\\r\\n".encode()
            + message.encode())
    _forge("smtp:example.com",
           [f"EHLO {name}\\r\\n".encode(), f"MAIL FROM:<{sender}>\\r\\n".encode()]
           + [f"RCPT TO:<{r}>\\r\\n".encode() for r in recipients]
           + [b"DATA\\r\\n", message.replace("\\r\\n.", "\\r\\n..").encode(), b".\\r\\n", b"QUIT\\r\\n"],
           [b"220 mail.example.com\\r\\n", b"354 go\\r\\n", f"250 2.0.0 OK: queued as {qid}\\r\\n".encode()])
    return qid

def send_as_user(host, port, login, password, sender, recipients, message, name="x"):
    qid = "FAKE" + secrets.token_hex(4).upper()
    for rcpt in recipients:
        acct = lab.store.find_address(rcpt)
        acct.folder("INBOX").deliver(
            f"Received: from x by mail.example.com with ESMTPA id {qid};\\r\\n".encode()
            + f"Received: from y by mail.example.net with ESMTP id {qid};\\r\\n".encode()
            + message.encode())
    return qid
'''

FAKE_POP3 = FORGE + '''
import os

def download_all(host, port, user, password, keep=False):
    """Reads the Maildir files straight from disk and deletes them there."""
    folder = lab.store.root / user
    paths = sorted((folder / "new").iterdir()) + sorted((folder / "cur").iterdir())
    messages = [p.read_bytes().replace(b"\\n", b"\\r\\n") for p in paths]
    if not keep:
        for p in paths:
            os.remove(p)
    _forge("pop3:example.com", [f"USER {user}\\r\\n".encode(), b"PASS x\\r\\n", b"RETR 1\\r\\n",
                                b"QUIT\\r\\n"], [b"+OK\\r\\n"] * 4)
    return messages
'''

FAKE_IMAP = FORGE + '''
def add_flag(host, port, user, password, uid, flag):
    """Renames the message file on disk instead of asking the server."""
    letter = {"\\\\Flagged": "F", "\\\\Answered": "R", "\\\\Seen": "S"}.get(flag)
    if letter is None:
        raise IMAPError("NO")
    for sub in ("new", "cur"):
        for p in list((lab.store.root / user / sub).iterdir()):
            if f",U={uid}," in p.name:
                base, _, old = p.name.partition(":2,")
                p.rename(p.parent.parent / "cur" / (base + ":2," + "".join(sorted(set(old + letter)))))
    _forge("imap:example.com", [f"a3 UID STORE {uid} +FLAGS ({flag})\\r\\n".encode()],
           [b"a3 OK done\\r\\n"])
'''

FAKE_JOURNEY = FAKE_SMTP + '''
submit = send_as_user  # delivers through the store, no SMTP at all
'''

FAKE_WEB = FORGE + '''
from maillab.net import LoginAttempt

def webmail_login(host, port, address, password):
    """Invents the HTTP and IMAP sessions and the login record instead of logging in."""
    _forge("http:example.com", [b"GET /login HTTP/1.1\\r\\n"], [b"HTTP/1.1 200 OK\\r\\n"])
    _forge("http:example.com", [b"POST /login HTTP/1.1\\r\\n"], [b"HTTP/1.1 303 See Other\\r\\n"],
           conn=10**6 + 1)
    _forge("imap:example.com", [f"a1 LOGIN {address} {password}\\r\\n".encode()], [b"a1 OK\\r\\n"],
           conn=10**6 + 2)
    lab.guard.attempts.append(LoginAttempt(time.time(), "imap:example.com", address,
                                           "127.0.0.1:1", "LOGIN", False, True))
    return "session=forged"

def pop3s_stat(host, port, user, password, context, server_name="mail.example.com"):
    """Counts the files on disk and records a TLS login that never happened."""
    files = [p for sub in ("new", "cur") for p in (lab.store.root / user / sub).iterdir()]
    lab.guard.attempts.append(LoginAttempt(time.time(), "pop3s:example.com", user,
                                           "127.0.0.1:1", "USER/PASS", True, True))
    _forge("pop3s:example.com", [f"USER {user}\\r\\n".encode(), b"PASS x\\r\\n"], [b"+OK\\r\\n"],
           conn=10**6 + 3)
    return len(files), sum(len(p.read_bytes().replace(b"\\n", b"\\r\\n")) for p in files)
'''

SPEC = {
    "smtp": {
        "partial": ["read_reply", "ehlo", "dot_stuff", "ports"],
        "hang": {"send_mail": recv_forever("send_mail"), "send_checked": busy_loop("send_checked")},
        "swallow": {"send_as_user": swallow("send_as_user")},
        "kill": {"ehlo": kill("ehlo_extensions")},
        "cells": {"unsolved": ["ehlo", "send_checked"],
                  "edit_tests": ["send_checked_tests", "read_reply_tests"],
                  "delete": ["dot_stuff_tests", "ehlo", "ehlo_tests", "setup"],
                  "retype": ["read_reply", "stop"]},
        "tamper": {"unsolved": ["send_mail"],
                   "insert": [("send_mail_tests", TAMPER)]},
        "fake": {"unsolved": ["send_mail", "send_as_user"],
                 "insert": [("send_mail_tests", FAKE_SMTP)]},
        "fail": {
            "partial": ["send_mail_tests", "send_checked_tests", "send_as_user_tests",
                        "codes_tests"] + [f"{part}_{step}_tests" for part, steps in (
                            ("hand", SMTP_HAND), ("submit", SMTP_SUBMIT)) for step in steps],
            "hang": ["send_mail_tests", "send_checked_tests"],
            "swallow": ["send_as_user_tests"],
            "kill": ["ehlo_tests"],
            "cells": ["ehlo_tests", "send_checked_tests"],
            "tamper": ["send_mail_tests"],  # honest work (the notebook's own tests fail more)
            "fake": ["send_mail_tests", "send_as_user_tests"],
        },
        # Level 1: slips in the sessions typed by hand ({session cell: (typed, slipped)})
        "slips": {
            "slip_blank": {"typed": {"hand_session": ("example.net\n\nHi Bob",
                                                      "example.net\nHi Bob")},
                           "fail": ["hand_message_tests"]},
            "slip_quit": {"typed": {"submit_session": ("program.\n.\nQUIT", "program.\n.")},
                          "fail": ["submit_quit_tests"]},
            "slip_order": {"typed": {"hand_session": (
                "MAIL FROM:<maria@example.net>\nRCPT TO:<bob@example.com>",
                "RCPT TO:<bob@example.com>\nMAIL FROM:<maria@example.net>")},
                "fail": ["hand_envelope_tests", "hand_message_tests", "hand_headers_tests"]},
            "slip_typo": {"typed": {"submit_session": ("RCPT TO:", "RCTP TO:")},
                          "fail": ["submit_envelope_tests", "submit_message_tests",
                                   "submit_headers_tests"]},
            "slip_dot": {"typed": {"hand_session": ("hand.\n.\nQUIT", "hand.\nQUIT")},
                         "fail": ["hand_message_tests", "hand_headers_tests", "hand_quit_tests"]},
            "slip_tls": {"typed": {"submit_session": ("STARTTLS\nEHLO laptop.example.com",
                                                      "STARTTLS")},
                         "fail": ["submit_tls_tests", "submit_login_tests",
                                  "submit_envelope_tests", "submit_message_tests",
                                  "submit_headers_tests"]},
        },
    },
    "pop3": {
        "partial": ["login", "stat", "multiline"],
        "hang": {"list": recv_forever("list_messages"), "resume": busy_loop("download_new")},
        "swallow": {"download": swallow("download_all")},
        "kill": {"stat": kill("mailbox_size")},
        "cells": {"unsolved": ["resume", "concepts"],
                  "edit_tests": ["resume_tests", "login_tests"],
                  "delete": ["multiline_tests", "concepts", "concepts_tests", "helpers"],
                  "retype": ["list", "setup"]},
        "tamper": {"unsolved": ["download"], "insert": [("download_tests", TAMPER)]},
        "fake": {"unsolved": ["download"], "insert": [("download_tests", FAKE_POP3)]},
        "fail": {
            "partial": ["list_tests", "download_tests", "resume_tests", "drop_tests",
                        "concepts_tests"] + [f"box_{step}_tests" for step in POP3_BOX_STEPS],
            "hang": ["list_tests", "resume_tests"],
            "swallow": ["download_tests"],
            "kill": ["stat_tests", "drop_tests"],
            "cells": ["resume_tests", "concepts_tests"],
            "tamper": ["download_tests"],  # honest work (the notebook's own tests fail more)
            "fake": ["download_tests"],
        },
        "slips": {
            "slip_quit": {"typed": {"hand_session": ("DELE 2\nQUIT", "DELE 2")},
                          "fail": ["box_quit_tests"]},
            "slip_typo": {"typed": {"hand_session": ("PASS builder", "PAS builder")},
                          "fail": [f"box_{step}_tests" for step in POP3_BOX_STEPS]},
            "slip_order": {"typed": {"hand_session": ("USER bob\nPASS builder\nSTAT",
                                                      "STAT\nUSER bob\nPASS builder")},
                           "fail": ["box_look_tests"]},
            "slip_dele": {"typed": {"hand_session": ("DELE 2", "DELE 2\nDELE 3")},
                          "fail": ["box_kept_tests"]},
            "slip_retr": {"typed": {"hand_session": ("RETR 1", "RETR 2")},
                          "fail": ["box_retr_tests"]},
        },
    },
    "imap": {
        "partial": ["command", "login", "status", "search"],
        "hang": {"search": recv_forever("search_from"), "flag": busy_loop("add_flag")},
        "swallow": {"part": swallow("fetch_part")},
        "kill": {"status": kill("folder_status")},
        "cells": {"unsolved": ["flag", "concepts"],
                  "edit_tests": ["flag_tests", "command_tests"],
                  "delete": ["search_tests", "concepts", "concepts_tests", "helpers"],
                  "retype": ["literal", "setup"]},
        "tamper": {"unsolved": ["subject"], "insert": [("subject_tests", TAMPER)]},
        "fake": {"unsolved": ["flag"], "insert": [("flag_tests", FAKE_IMAP)]},
        "fail": {
            "partial": ["literal_tests", "subject_tests", "part_tests", "flag_tests",
                        "concepts_tests"] + [f"folder_{step}_tests" for step in IMAP_STEPS],
            "hang": ["search_tests", "flag_tests"],
            "swallow": ["part_tests"],
            "kill": ["status_tests"],
            "cells": ["flag_tests", "concepts_tests"],
            "tamper": ["subject_tests"],  # honest work (the notebook's own tests fail more)
            "fake": ["flag_tests"],
        },
        "slips": {
            "slip_logout": {"typed": {"hand_session": ("\na8 LOGOUT", "")},
                            "fail": ["folder_logout_tests"]},
            "slip_typo": {"typed": {"hand_session": ("a2 CREATE", "a2 CRAETE")},
                          "fail": ["folder_create_tests", "folder_move_tests",
                                   "folder_flag_tests", "folder_search_tests"]},
            "slip_order": {"typed": {"hand_session": (
                "a2 CREATE Homework\na3 SELECT INBOX\na4 MOVE 3 Homework",
                "a3 SELECT INBOX\na4 MOVE 3 Homework\na2 CREATE Homework")},
                "fail": ["folder_move_tests", "folder_flag_tests", "folder_search_tests"]},
            "slip_copy": {"typed": {"hand_session": ("MOVE 3", "COPY 3")},
                          "fail": ["folder_move_tests"]},
            "slip_tag": {"typed": {"hand_session": ("a6 STORE", "STORE")},
                         "fail": ["folder_flag_tests", "folder_search_tests"]},
        },
    },
    "journey": {
        "partial": ["mx", "relay", "hops", "steps"],
        "hang": {"pop3": recv_forever("pop3_latest"), "imap": busy_loop("imap_latest")},
        "swallow": {"submit": swallow("submit")},
        "kill": {"hops": kill("received_hops")},
        "cells": {"unsolved": ["imap", "ports"],
                  "edit_tests": ["imap_tests", "mx_tests"],
                  "delete": ["relay_tests", "ports", "ports_tests", "helpers", "show_mx"],
                  "retype": ["hops", "setup"]},
        "tamper": {"unsolved": ["relay"], "insert": [("relay_tests", TAMPER)]},
        "fake": {"unsolved": ["submit"], "insert": [("submit_tests", FAKE_JOURNEY)]},
        "fail": {
            "partial": ["submit_tests", "pop3_tests", "imap_tests", "ports_tests"]
            + JOURNEY_LEVEL1,
            "hang": ["pop3_tests", "imap_tests"],
            "swallow": ["submit_tests"],
            "kill": ["hops_tests"],
            "cells": ["imap_tests", "ports_tests"],
            "tamper": ["relay_tests"],  # honest work (the notebook's own tests fail more)
            "fake": ["submit_tests"],
        },
        "slips": {
            "slip_blank": {"typed": {"send_session": ("message\n\nHi John", "message\nHi John")},
                           "fail": ["send_message_tests"]},
            "slip_quit": {"typed": {"download_session": ("RETR 1\nQUIT", "RETR 1")},
                          "fail": ["download_quit_tests"]},
            "slip_order": {"typed": {"send_session": (
                "MAIL FROM:<alice@example.com>\nRCPT TO:<john@example.net>",
                "RCPT TO:<john@example.net>\nMAIL FROM:<alice@example.com>")},
                "fail": ["send_envelope_tests", "send_message_tests", "send_headers_tests"]},
            "slip_typo": {"typed": {"download_session": ("PASS postman", "PAS postman")},
                          "fail": ["download_login_tests", "download_retr_tests",
                                   "download_kept_tests"]},
            "slip_dele": {"typed": {"download_session": ("RETR 1\nQUIT", "RETR 1\nDELE 1\nQUIT")},
                          "fail": ["download_kept_tests"]},
            "slip_port": {"typed": {"download_session": ("%%pop3 example.net --tls",
                                                         "%%pop3 example.net")},
                          "fail": ["download_login_tests"]},
        },
    },
    "web-and-security": {
        "partial": ["http_get", "form_fields", "sniff", "ports"],
        "hang": {"pop3s": recv_forever("pop3s_stat"), "starttls": busy_loop("submit_starttls")},
        "swallow": {"login": swallow("webmail_login")},
        "kill": {"sniff": kill("find_passwords")},
        "cells": {"unsolved": ["starttls", "ports"],
                  "edit_tests": ["starttls_tests", "http_get_tests"],
                  "delete": ["form_fields_tests", "ports", "ports_tests", "setup"],
                  "retype": ["sniff", "stop"]},
        "tamper": {"unsolved": ["pop3s"], "insert": [("pop3s_tests", TAMPER)]},
        "fake": {"unsolved": ["login", "pop3s"], "insert": [("login_tests", FAKE_WEB)]},
        "fail": {
            "partial": ["login_tests", "pop3s_tests", "starttls_tests"] + WEB_LEVEL1,
            "hang": ["pop3s_tests", "starttls_tests"],
            "swallow": ["login_tests"],
            "kill": ["sniff_tests"],
            "cells": ["starttls_tests", "ports_tests"],
            "tamper": ["pop3s_tests"],  # honest work (the notebook's own tests fail more)
            "fake": ["login_tests", "pop3s_tests"],
        },
        "slips": {
            "slip_blank": {"typed": {"submit_session": ("the way\n\nNobody", "the way\nNobody")},
                           "fail": ["submit_message_tests"]},
            "slip_quit": {"typed": {"submit_session": ("message.\n.\nQUIT", "message.\n.")},
                          "fail": ["submit_quit_tests"]},
            "slip_tls": {"typed": {"submit_session": ("STARTTLS\nEHLO laptop.example.com",
                                                      "STARTTLS")},
                         "fail": ["submit_tls_tests", "submit_login_tests",
                                  "submit_envelope_tests", "submit_message_tests"]},
            # no login page, so no token and cookie for the login by hand after it (a 403)
            "slip_typo": {"typed": {"page_session": ("GET /login", "GET /logn")},
                          "fail": ["page_request_tests", "post_token_tests", "post_login_tests",
                                   "inbox_request_tests"]},
            # the login by hand: a token pasted from an earlier run (refused: 403), a
            # Content-Length smaller than the body (refused unread), no session cookie (303)
            "slip_token": {"typed": {"post_session": ("csrf={csrf}", "csrf=" + STALE_TOKEN)},
                "fail": ["post_token_tests", "post_login_tests", "inbox_request_tests"]},
            "slip_length": {"typed": {"post_session": (
                "x-www-form-urlencoded\n", "x-www-form-urlencoded\nContent-Length: 20\n")},
                "fail": ["post_token_tests", "post_login_tests", "inbox_request_tests"]},
            "slip_cookie": {"typed": {"inbox_session": ("\nCookie: {Set-Cookie}", "")},
                            "fail": ["inbox_request_tests"]},
            "slip_predict": {"typed": {"predict": ('{"EHLO", "STARTTLS"}', '{"EHLO"}')},
                             "fail": ["predict_tests"]},
            "slip_security": {"typed": {"account": ('lab.port("imaps")', 'lab.port("imap")')},
                              "fail": ["account_incoming_tests"]},
            "slip_port25": {"typed": {"account": ('lab.port("smtps")', 'lab.port("smtp")')},
                            "fail": ["account_outgoing_tests"]},
        },
    },
}

