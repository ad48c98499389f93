"""The lab's own log: what its server threads report, kept away from the notebook's cells.

A Jupyter kernel shows everything written to stderr in the output of the cell that is running,
from any thread. Without care, aiosmtpd's warnings, asyncio's "Task exception was never
retrieved" and aiohttp's tracebacks from the lab's loop thread would land in whatever cell a
learner happens to run. So the loggers the lab's servers use (``mail.log`` of aiosmtpd,
``asyncio``, ``aiohttp.*``, ``maillab.*``) send their records through :class:`_Router`, which
files a record under the lab whose thread made it (its loop thread, or a worker thread running
for it) and hands every other record on to the root logger as usual.

``lab.log()`` shows a lab's log; it keeps the last :attr:`LabLog.limit` records, each cut to
:attr:`LabLog.max_chars` characters.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback
from collections import deque
from typing import NamedTuple

__all__ = ["LabLog", "LogRecord", "install", "bind_thread", "current_log"]

# Loggers whose records from a lab's threads belong in that lab's log (children included).
ROUTED_LOGGERS = ("mail.log", "asyncio", "aiohttp", "maillab")

# The log of the lab the running code works for: set in the lab's loop thread and copied into
# its tasks and into asyncio.to_thread workers (they copy the context).
current_log: contextvars.ContextVar["LabLog | None"] = contextvars.ContextVar(
    "maillab_lab_log", default=None)
_by_thread: dict[int, "LabLog"] = {}
_by_thread_lock = threading.Lock()


class LogRecord(NamedTuple):
    time: float
    level: str  # "WARNING", "ERROR", ...
    logger: str  # e.g. "mail.log", "asyncio", "maillab.relay"
    message: str  # with the traceback, if there was one

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        return f"{stamp} {self.level:7} {self.logger}: {self.message}"


class LabLog:
    """The last ``limit`` records of one lab's servers (a bounded list, oldest dropped first)."""

    def __init__(self, limit: int = 2000, max_chars: int = 8000):
        self.limit, self.max_chars = limit, max_chars
        self._records: deque[LogRecord] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self.dropped = 0  # records pushed out by newer ones

    def add(self, level: str, logger: str, message: str, when: float | None = None) -> None:
        if len(message) > self.max_chars:
            cut = len(message) - self.max_chars
            message = message[: self.max_chars] + f"\n[... {cut} more characters not kept]"
        with self._lock:
            if len(self._records) == self.limit:
                self.dropped += 1
            self._records.append(LogRecord(when or time.time(), level, logger, message))

    def add_record(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in someone's log call must not break ours
            message = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[0] is not None:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            message += "\n" + record.exc_text
        self.add(record.levelname, record.name, message, record.created)

    def records(self, level: str | int = "DEBUG") -> list[LogRecord]:
        """The records at ``level`` or above, oldest first."""
        threshold = logging.getLevelName(level) if isinstance(level, str) else level
        with self._lock:
            return [r for r in self._records
                    if logging.getLevelName(r.level) >= threshold]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __str__(self) -> str:
        lines = [str(r) for r in self.records()]
        if self.dropped:
            lines.insert(0, f"[{self.dropped} older records not kept]")
        return "\n".join(lines) if lines else "(the lab's log is empty)"

    def __repr__(self) -> str:
        return f"<LabLog {len(self)} records>"


def bind_thread(log: LabLog | None) -> None:
    """File this thread's records (of the routed loggers) under ``log``; None unbinds it."""
    current_log.set(log)
    ident = threading.get_ident()
    with _by_thread_lock:
        if log is None:
            _by_thread.pop(ident, None)
        else:
            _by_thread[ident] = log


def _log_of_this_thread() -> LabLog | None:
    log = current_log.get()
    if log is None:
        with _by_thread_lock:
            log = _by_thread.get(threading.get_ident())
    return log


class _Router(logging.Handler):
    """Files records made for a lab under its log; everything else goes on as if we were absent."""

    def emit(self, record: logging.LogRecord) -> None:
        log = _log_of_this_thread()
        if log is not None:
            log.add_record(record)
            return
        # Not the lab's: what propagation to the root logger would have done, but for the
        # handlers the record met already on its way here (pytest's caplog, say, attaches its
        # handler to non-propagating loggers and to the root alike: it got each record twice)
        met: set[int] = set()
        logger = logging.getLogger(record.name)
        while logger is not None:
            met.update(map(id, logger.handlers))
            if self in logger.handlers or not logger.propagate:
                break
            logger = logger.parent
        root = logging.getLogger()
        if root.disabled or not root.filter(record):
            return
        for handler in root.handlers:
            if id(handler) not in met and record.levelno >= handler.level:
                handler.handle(record)
        if not root.handlers and logging.lastResort is not None and \
                record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)  # as Logger.callHandlers does: no logging set up


_router = _Router()
_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Route the servers' loggers through the lab logs (idempotent; done when a lab starts)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        for name in ROUTED_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(_router)
            # Records reach the root's handlers through _Router when they are not a lab's,
            # so nothing is printed twice and nothing from a lab reaches stderr.
            logger.propagate = False
        _installed = True


def exception_handler(log: LabLog):
    """An asyncio exception handler that writes what the loop reports into ``log``."""
    def handle(loop, context: dict) -> None:
        message = context.get("message") or "unhandled exception in the event loop"
        details = [f"{key}: {value!r}" for key, value in context.items()
                   if key not in ("message", "exception")]
        exc = context.get("exception")
        text = "\n".join([message, *details])
        if exc is not None:
            text += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        log.add("ERROR", "asyncio", text)
    return handle
