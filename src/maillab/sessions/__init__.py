"""Sessions typed by hand, as after ``telnet mail.example.com 25``: the engine of the cell magics.

``run_session("smtp", "example.com", text)`` connects to the lab's server, sends each typed line,
waits for each whole answer and returns a :class:`SessionResult` (the conversation, each answer
explained). The IPython side (``%%smtp``, ``%%pop3``, ``%%imap``, ``%%http``) is
:mod:`maillab.magics`; the protocols' rules live in :mod:`.drivers` and :mod:`.replies`, with no
sockets, and the socket work in :mod:`.run`. See docs/sessions.md.
"""

from .result import Event, Exchange, SessionResult
from .run import DEFAULT_TIMEOUT, close_session, open_sessions, run_session

__all__ = ["run_session", "SessionResult", "Exchange", "Event", "open_sessions", "close_session",
           "DEFAULT_TIMEOUT"]
