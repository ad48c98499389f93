"""IMAP4rev1 (RFC 3501) with IDLE, NAMESPACE, UIDPLUS, MOVE, UNSELECT, LITERAL+, ID, SPECIAL-USE
and SASL-IR: a sans-IO core (``core.ImapSession``) and a thin asyncio server (``server.start_imap``).
"""

from .core import ImapSession, State

__all__ = ["ImapSession", "State", "start_imap"]


def __getattr__(name):
    if name == "start_imap":
        from .server import start_imap
        return start_imap
    raise AttributeError(name)
