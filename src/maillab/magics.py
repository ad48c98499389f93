"""The session cell magics ``%%smtp``, ``%%pop3``, ``%%imap`` and ``%%http``.

The cell's body is the session: exactly the lines a person types after connecting with telnet::

    %%smtp example.com
    EHLO laptop.example.com
    MAIL FROM:<bob@example.com>
    RCPT TO:<alice@example.com>
    DATA
    Subject: My first message

    Hello Alice!
    .
    QUIT

The magic line: ``%%smtp [DOMAIN] [--submission | --tls] [--host HOST] [--port PORT]
[--session NAME] [--close] [--timeout SECONDS]`` (``%%smtp --help`` prints it). The magics are
there after ``import maillab`` in IPython, or ``%load_ext maillab``. Without IPython, use
:func:`run_session` (the same engine; it returns the conversation).
"""

from __future__ import annotations

import argparse
import shlex

from .i18n import N_, _
from .sessions import DEFAULT_TIMEOUT, SessionResult, close_session, open_sessions, run_session

# The magics are registered by maillab.load_ipython_extension (on `import maillab` in IPython),
# which imports this module only when the first session cell runs.
__all__ = ["run_session", "session_cell", "parser", "open_sessions", "close_session", "PROTOCOLS"]

PROTOCOLS = ("smtp", "pop3", "imap", "http")
# The implicit-TLS port has a name of its own in each protocol: %%smtp --smtps, %%imap --imaps.
TLS_NAMES = {"smtp": "--smtps", "pop3": "--pop3s", "imap": "--imaps", "http": "--https"}
WHAT = {  # translated where shown (N_ only marks them for the catalog)
    "smtp": N_("SMTP: send mail (port 25; --submission: 587, STARTTLS then AUTH; --tls: 465)"),
    "pop3": N_("POP3: download mail (port 110; --tls: 995); type STLS to encrypt"),
    "imap": N_("IMAP: mail kept on the server (port 143; --tls: 993); tag every command: a1 ..."),
    "http": N_("HTTP: one request to the webmail (port 80): request line, headers, empty line, "
               "body"),
}


class UsageProblem(Exception):
    """The magic line could not be read (the message says why), or --help was shown."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageProblem(message)

    def exit(self, status: int = 0, message: str | None = None):
        raise UsageProblem(message or "")


def parser(protocol: str) -> argparse.ArgumentParser:
    """The options of ``%%<protocol>``."""
    p = _Parser(prog=f"%%{protocol}", add_help=True,
                description=_(WHAT[protocol]) + ". " + _("The cell's lines are the session."))
    p.add_argument("where", nargs="?", metavar="DOMAIN",
                   help=_("the lab's domain whose server to talk to (example.com, example.net)"))
    p.add_argument("--tls", TLS_NAMES[protocol], action="store_true", dest="tls",
                   help=_("use the port that is encrypted from the first byte"))
    if protocol == "smtp":
        p.add_argument("--submission", action="store_true",
                       help=_("use the submission port (587): mail clients send here"))
    p.add_argument("--host", help=_("any server, not only the lab's"))
    p.add_argument("--port", type=int, help=_("the port to connect to"))
    p.add_argument("--session", metavar="NAME",
                   help=_("keep the connection open: the next cell with the same name goes on"))
    p.add_argument("--close", action="store_true",
                   help=_("close the named session after this cell"))
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=_("the longest wait for one answer (default {0:g})").format(DEFAULT_TIMEOUT))
    return p


def session_cell(protocol: str, line: str, cell: str | None) -> None:
    """Run one session cell and show the conversation below it (the IPython magic's body).

    As a line magic (``cell`` None: ``%imap --session box``) it sends nothing: it shows what the
    named session's server said since the last cell, and ``--close`` ends the session.
    """
    from IPython.display import display
    try:
        args = parser(protocol).parse_args(shlex.split(line))
    except UsageProblem as e:
        if str(e):
            display(_problem(protocol, _("%%{0}: {1} (%%{0} --help lists the options)")
                             .format(protocol, str(e).strip())))
        return
    except ValueError as e:  # shlex: an unfinished quote
        display(_problem(protocol, f"%%{protocol}: {e}"))
        return
    if cell is None and not args.session:  # %smtp (one %): a line magic has no lines to send
        display(_problem(protocol, _("A session is a cell: %%{0} (two %) on its first line, the "
                                     "lines to send below it.").format(protocol)))
        return
    options = {"host": args.host, "port": args.port, "tls": args.tls,
               "submission": getattr(args, "submission", False), "session": args.session,
               "close": args.close, "timeout": args.timeout}
    try:
        result = run_session(protocol, args.where, cell or "", **options)
    except Exception as e:  # a bug of ours: one line, not a traceback wall over the learner's cell
        result = _problem(protocol, _("maillab could not run this session ({0}: {1}).")
                          .format(type(e).__name__, e))
    display(result)


def _problem(protocol: str, hint: str) -> SessionResult:
    result = SessionResult(protocol)
    result.fail(hint)
    return result
