"""The session magics inside IPython: a real kernel runs a notebook of session cells (as nbconvert
and nbgrader do), and ``%load_ext maillab`` works in a plain IPython shell."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import nbformat
from nbclient import NotebookClient

CELLS = [
    "import maillab\nlab = maillab.start(ports='any')",
    textwrap.dedent("""\
        %%smtp example.com
        EHLO desk.example.com
        MAIL FROM:<bob@example.com>
        RCPT TO:<alice@example.com>
        DATA
        Subject: My first message
        From: Bob <bob@example.com>

        Hello Alice!
        .
        QUIT
        """),
    "%%pop3 --session inbox\nUSER alice\nPASS wonderland\n",
    "%%pop3 --session inbox\nRETR 1\nQUIT\n",
    "m = lab.mailbox('alice')[0].message\nprint(repr(m['Subject']), repr(m.get_content()))",
    "%%smtp --bogus\nEHLO me",
    "%imap --help",
    "%pop3 --session inbox --close\n%smtp example.com",
    "%%imap --session box\na1 LOGIN alice wonderland\na2 SELECT INBOX\na3 IDLE",
    "import smtplib\nwith smtplib.SMTP(lab.host, lab.smtp_port) as s:\n"
    "    s.sendmail('bob@example.com', ['alice@example.com'], 'Subject: news\\r\\n\\r\\nhi')\n"
    "import time; time.sleep(0.3)",
    "%imap --session box",
    "lab.stop()",
    "%%imap\na1 NOOP",
]


def run_notebook(cells: list[str]) -> list:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    return [cell.outputs for cell in notebook.cells]


def shown(outputs, kind: str = "text/plain") -> str:
    return "\n".join(o.get("data", {}).get(kind, "") if o.output_type != "stream" else o.text
                     for o in outputs)


def test_session_cells_in_a_real_kernel():
    outputs = run_notebook(CELLS)
    assert not [o for cell in outputs for o in cell if o.output_type == "error"]
    smtp = shown(outputs[1])
    assert smtp.startswith("-- connected to mail.example.com port ")
    for line in ("C: EHLO desk.example.com", "S: 250-mail.example.com", "C: Subject: My first message",
                 "C:\nC: Hello Alice!\nC: .", "S: 221 Bye", "   = Go ahead: send the message now"):
        assert line in smtp
    html = shown(outputs[1], "text/html")
    assert 'class="maillab-session"' in html and "background:#eaf2fb" in html  # client lines coloured
    assert "PASS wonderland" in shown(outputs[2]) and "+OK" in shown(outputs[2])
    assert "-- session inbox goes on" in shown(outputs[3]) and "S: Hello Alice!" in shown(outputs[3])
    assert shown(outputs[4]).strip() == "'My first message' 'Hello Alice!\\r\\n'"
    assert shown(outputs[5]) == ("!! %%smtp: unrecognized arguments: --bogus "
                                 "(%%smtp --help lists the options)")
    assert "usage: %%imap [-h] [--tls] [--host HOST]" in shown(outputs[6])
    assert shown(outputs[7]) == ("-- There is no open session inbox: nothing to show or close.\n!! A session is a cell: %%smtp (two %) "
                                 "on its first line, the lines to send below it.")
    assert "S: a3 OK" not in shown(outputs[8]) and "S: + idling" in shown(outputs[8])
    assert "S: * 2 EXISTS" in shown(outputs[10])  # news while idling, shown by the line magic
    assert shown(outputs[12]) == ("!! The lab is stopped: run the first cell again "
                                  "(lab = maillab.start()).")


def test_import_maillab_in_ipython_registers_the_magics_lazily():
    program = textwrap.dedent("""\
        import json, sys
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        import maillab
        print(json.dumps([sorted(m for m in ("smtp", "pop3", "imap", "http")
                                 if m in shell.magics_manager.magics["cell"]),
                          "maillab.magics" in sys.modules]))
        """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    # the magics are there, but their code is imported only when a session cell runs
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [["http", "imap", "pop3", "smtp"], False]


def test_load_ext_in_a_plain_ipython_shell():
    program = textwrap.dedent("""\
        import json
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        before = sorted(shell.magics_manager.magics["cell"])
        shell.run_cell("%load_ext maillab")
        after = sorted(shell.magics_manager.magics["cell"])
        print(json.dumps([[m for m in ("smtp", "pop3", "imap", "http") if m in before],
                          [m for m in ("smtp", "pop3", "imap", "http") if m in after]]))
        """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], ["smtp", "pop3", "imap", "http"]]
