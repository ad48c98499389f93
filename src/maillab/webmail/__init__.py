"""The lab's webmail: mail in the browser over HTTP, speaking IMAP and SMTP like Roundcube.

``maillab.start()`` serves it on the lab's loop (port 8025 when free); ``lab.webmail_url`` is its
address (through jupyter-server-proxy inside a notebook) and ``lab.show_webmail()`` embeds it.

The application (``app.py``: aiohttp and Jinja2) takes longer to load than all the mail servers
together take to start, and many lessons never open it. So a lab binds the webmail's port at
once and loads the application only when a browser first connects (or ``show_webmail()`` asks
for it), in a worker thread: until it is ready, browsers wait in the port's queue of pending
connections and are answered then. Importing this package loads nothing of the application
either; its names (``Webmail``, ``Backend``, ...) are looked up in ``app`` when first used.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
from typing import Callable

__all__ = ["Backend", "Webmail", "WebmailServer", "start_webmail", "webmail_url", "LazyWebmail",
           "serve_lazily", "missing_dependencies"]

log = logging.getLogger("maillab.webmail")

# name -> the module of this package that defines it (PEP 562: imported when first asked for)
_LAZY = {"Backend": "app", "Webmail": "app", "WebmailServer": "app", "start_webmail": "app",
         "webmail_url": "location"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def missing_dependencies() -> list[str]:
    """The third-party packages the application needs that are not installed (found without
    importing them)."""
    import importlib.util
    return [name for name in ("aiohttp", "jinja2", "nh3") if importlib.util.find_spec(name) is None]


def _load_webmail(backend, kwargs: dict):
    """The webmail application, ready to serve (runs in a worker thread: imports take long)."""
    from .app import Webmail
    return Webmail(backend, **kwargs)


class LazyWebmail:
    """A webmail whose port listens already and whose application loads on first use.

    It has the ``close()``/``wait_closed()`` of the servers a lab keeps; ``webmail`` is the
    application once loaded (None before). ``load()`` starts loading without waiting for a
    browser; ``ready()`` waits until the application serves.
    """

    def __init__(self, sock: socket.socket, backend: Callable, kwargs: dict,
                 loader: Callable = _load_webmail):
        self.sockets = [sock]
        self.webmail = None
        self._backend, self._kwargs, self._loader = backend, kwargs, loader
        self._server = None  # the running WebmailServer
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self._closed = False
        # A pending connection makes the listening socket readable: that is the first use.
        self._loop.add_reader(sock.fileno(), self.load)

    def load(self) -> None:
        """Start loading the application (on the loop's thread; at most once)."""
        if self._task is not None or self._closed:
            return
        self._loop.remove_reader(self.sockets[0].fileno())
        self._task = self._loop.create_task(self._load_and_serve())

    def load_threadsafe(self) -> None:
        """``load()`` from any thread (``lab.show_webmail()`` asks before the browser does)."""
        self._loop.call_soon_threadsafe(self.load)

    async def _load_and_serve(self) -> None:
        sock = self.sockets[0]
        try:
            webmail = await self._loop.run_in_executor(None, self._loader, self._backend,
                                                       self._kwargs)
            if self._closed:
                return
            self.webmail = webmail
            self._server = await webmail.serve(sock)
        except asyncio.CancelledError:
            raise
        except Exception:  # the lab's log says why; browsers are refused rather than kept waiting
            log.exception("the webmail could not be started")
            sock.close()

    async def ready(self) -> None:
        """Wait until the application serves (loading it now if no browser has asked yet)."""
        self.load()
        if self._task is not None:
            await asyncio.shield(self._task)

    def close(self) -> None:
        """No new connections (as ``asyncio.Server.close``)."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        else:
            if self._task is None:
                self._loop.remove_reader(self.sockets[0].fileno())
            self.sockets[0].close()  # browsers still waiting in its queue are refused

    async def wait_closed(self) -> None:
        self.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._server is not None:
            await self._server.wait_closed()


async def serve_lazily(sock: socket.socket, backend: Callable, **kwargs) -> LazyWebmail:
    """A webmail on an already listening socket, its application loaded on first use (see
    the module's text). The keyword arguments are those of :class:`maillab.webmail.Webmail`."""
    return LazyWebmail(sock, backend, kwargs)
