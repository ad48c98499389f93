"""A sealed lab (maillab.grader.sealed) and what `maillab.start()` returns beside it.

While `maillab grade` runs a notebook, its `maillab.start()` connects to a lab the grader runs
(MAILLAB_SEALED). These tests use that client in this process, as the notebook's visible tests
do: same ports, accounts, transcripts, stored messages and logins, read-only; a TLS lab's
certificate authority; and a control socket that answers nonsense with an error, tells the
answer process (evidence=False) nothing but ports and accounts, and lets nothing be recorded.
"""

from __future__ import annotations

import json
import smtplib
import socket

import pytest

import maillab
from maillab import grading
from maillab.grader import client
from maillab.grader.sealed import SealedLab


@pytest.fixture
def sealed(tmp_path, monkeypatch):
    labs = []

    def make(evidence=True, **options):
        control = tmp_path / f"control{len(labs)}"
        control.mkdir()
        lab = SealedLab(tmp_path / f"private{len(labs)}", control / "lab.sock", options,
                        evidence=evidence)
        labs.append(lab)
        monkeypatch.setenv("MAILLAB_SEALED", str(control / "lab.sock"))
        return lab
    yield make
    client._clients.clear()
    for lab in labs:
        lab.close()


def test_start_connects_to_the_graders_lab_and_reads_copies_of_its_evidence(sealed):
    grader = sealed(tls=False)
    lab = maillab.start(ports="any", tls=False)
    assert isinstance(lab, client.SealedLabClient) and maillab.start() is lab
    assert lab.smtp_port == grader.lab.smtp_port and lab.mx == grader.lab.mx
    # the lab's table as the notebook shows it: each port's login rule included
    assert [(s.name, s.port, s.login_policy) for s in lab.services] == \
        [(s.name, s.port, s.login_policy) for s in grader.lab.services]
    assert all(s.login_policy for s in lab.services)
    assert [a.address for a in lab.accounts] == [a.address for a in grader.lab.accounts]
    grading.prepare(lab)
    user, password = grading.make_account(lab, [grading.sample(1)], flags=[("\\Seen",)])
    assert grader.lab.store.authenticate(user, password) is not None
    with grading.watch(lab) as ev:
        with smtplib.SMTP(lab.host, lab.smtp_port, local_hostname="pc.example.org") as c:
            c.sendmail("alice@example.com", ["bob@example.com"], "Subject: hi\r\n\r\nhello\r\n")
    s = ev.session("smtp:example.com")
    assert s.commands() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert [m.body for m in ev.delivered("bob", s)] == [b"Subject: hi\r\n\r\nhello\r\n"]
    assert [m.flags for m in map(grading.DiskMessage, grading.maildir(lab, user).values())] \
        == [{"S"}]
    assert lab.mailbox(user)[0].subject == "Message number 1"
    assert lab.transcript("smtp").client_lines()[0] == "ehlo pc.example.org"
    lab.stop()  # the grader's lab goes on
    assert grader.lab.running and lab.running


def test_a_tls_lab_gives_the_notebook_its_certificate_authority(sealed):
    grader = sealed()
    lab = maillab.start()
    with smtplib.SMTP_SSL(lab.host, lab.smtps_port, context=lab.client_context()) as c:
        c.login("alice", "wonderland")
    assert [a.secure for a in lab.logins() if a.user == "alice"] == [True]
    assert open(lab.ca_file).read() == grader.lab.ca.ca_file.read_text()


def test_the_control_socket_answers_nonsense_with_an_error_and_records_nothing(sealed):
    grader = sealed(tls=False)
    before = len(grader.lab.recorder.lines())
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(grader.control.server_address))
        f = sock.makefile("rb")
        for request in (b"not json\n", b"[1, 2]\n", b'{"op": "add_line"}\n',
                        b'{"op": "files", "user": "nobody"}\n',
                        json.dumps({"op": "account", "domain": "evil.example"}).encode() + b"\n"):
            sock.sendall(request)
            assert "error" in json.loads(f.readline())
    assert len(grader.lab.recorder.lines()) == before


def test_the_answer_process_gets_ports_and_accounts_only(sealed):
    sealed(tls=False, evidence=False)
    lab = maillab.start()
    assert lab.smtp_port > 0
    for read in (lab.transcript, lambda: lab.mailbox("bob"), lab.logins,
                 lambda: grading.make_account(lab)):
        with pytest.raises(RuntimeError, match="not while your work is graded"):
            read()


@pytest.mark.parametrize("setup, lang, options", [
    ('import maillab\nlab = maillab.start(ports="any", lang="el", tls=False)\n', "el", {"tls": False}),
    ('import maillab\nlab = maillab.start(ports="any")\n', "en", {}),
])
def test_the_grader_speaks_the_labs_language_and_keeps_it_out_of_the_lab_options(setup, lang,
                                                                                 options):
    """A Greek lab's feedback made by the grader (step checks, verdicts) is Greek: the grader
    reads lang= from the setup cell; it is no option of the sealed lab itself."""
    from maillab.grader.execute import MasterCells
    from maillab.i18n import _, language

    master = MasterCells(given={"setup": setup}, tests={})
    assert master.learner_language() == lang
    assert master.lab_options() == options
    with language(master.learner_language()):
        said = _("a check of this part failed")
    assert (said != "a check of this part failed") == (lang == "el")
