"""Peers for the benchmarks: bare servers on their own loop thread, measured beside maillab."""

from __future__ import annotations

import asyncio
import threading
from typing import Callable


def serve_in_thread(make_protocol: Callable[[asyncio.AbstractEventLoop], Callable], *,
                    ssl=None) -> tuple[int, Callable[[], None]]:
    """Start ``loop.create_server(make_protocol(loop), "127.0.0.1", 0, ssl=ssl)`` in a new thread.

    Returns the port and a function that stops the server and the thread.
    """
    loop = asyncio.new_event_loop()
    box, ready = {}, threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            loop.create_server(make_protocol(loop), "127.0.0.1", 0, ssl=ssl))
        box["server"], box["port"] = server, server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()

    def stop():
        box["server"].close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    return box["port"], stop
