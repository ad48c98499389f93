"""Issue 10 item 16: what the lab's server threads log goes to lab.log(), never into a cell.

tests/test_lab.py covers asyncio's "Task exception was never retrieved" and aiosmtpd's
"unrecognised" warnings; this covers the third source the issue names, aiohttp (the webmail):
an exception in a request handler is logged by aiohttp's server from the lab's loop thread.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import maillab

MAILLAB_SRC = str(Path(maillab.__file__).resolve().parent.parent)

WEBMAIL_ERROR = textwrap.dedent("""
    import sys, urllib.error, urllib.request
    sys.path.insert(0, {src!r})
    import maillab
    from maillab.webmail import app

    async def broken(self, request):
        raise RuntimeError("a webmail handler failed")
    app.Webmail.login_form = broken  # GET /login now fails inside aiohttp's request handling
    lab = maillab.MailLab(ports="any").start()
    try:
        urllib.request.urlopen(lab.webmail_url + "login", timeout=30).read()
    except urllib.error.HTTPError as e:
        print("status", e.code, flush=True)
    lab.stop()
    print(repr(str(lab.log())), flush=True)
""")


def test_a_webmail_traceback_goes_to_the_lab_log_not_to_the_cell():
    done = subprocess.run([sys.executable, "-c", WEBMAIL_ERROR.format(src=MAILLAB_SRC)],
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert lines and lines[0] == "status 500", (done.stdout, done.stderr)
    log = eval(lines[-1])
    assert "RuntimeError: a webmail handler failed" in log  # kept, with its traceback
    # A kernel shows the process's stderr in the running cell: nothing may land there.
    assert "a webmail handler failed" not in done.stderr and "Traceback" not in done.stderr, \
        done.stderr


def test_a_record_of_no_lab_reaches_each_handler_once(caplog):
    """Routed loggers do not propagate; their records that belong to no lab go to the root's
    handlers, but not again to a handler the record met already (caplog sits on both)."""
    import logging
    lab = maillab.start(ports="any", tls=False)  # installs the routing
    try:
        seen = []

        class Counting(logging.Handler):
            def emit(self, record):
                seen.append(record.getMessage())
        counting = Counting()
        logging.getLogger("maillab").addHandler(counting)
        logging.getLogger().addHandler(counting)
        try:
            logging.getLogger("maillab.imap.core").warning("no lab's record")
        finally:
            logging.getLogger("maillab").removeHandler(counting)
            logging.getLogger().removeHandler(counting)
        assert seen == ["no lab's record"]
        assert [r.getMessage() for r in caplog.records] == ["no lab's record"]
    finally:
        lab.stop()
