"""POP3 (RFC 1939, RFC 2449 CAPA): a sans-IO protocol core and a thin asyncio server."""

from .core import Pop3Session, State
from .server import start_pop3

__all__ = ["Pop3Session", "State", "start_pop3"]
