"""Serve an ASGI app over real HTTP on loopback for the length of a ``with`` block.

Each server runs uvicorn in its own daemon thread with its own event loop (the pattern of httpx's
``tests/conftest.py``), on port 0 so the OS picks a free port; several can run at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

__all__ = ["serve_asgi"]


@contextmanager
def serve_asgi(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    ssl_certfile: str | os.PathLike[str] | None = None,
    ssl_keyfile: str | os.PathLike[str] | None = None,
) -> Iterator[str]:
    """Run ``app`` on ``host`` and yield its base URL, e.g. ``"http://127.0.0.1:54321"``; on
    ``port``, or a free one the OS picks (a fake that goes away and comes back keeps its address).
    With ``ssl_certfile`` and ``ssl_keyfile`` (PEM) it serves HTTPS and the URL says so.

    Raises ``RuntimeError`` if the server stops during start-up (port in use, a failing lifespan
    handler) and ``TimeoutError`` if it is not listening within ``startup_timeout`` seconds.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="auto",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        # uvicorn reports start-up failures with sys.exit(); keep it so the caller can raise it.
        try:
            server.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"asgi-server-{id(server):x}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            cause = failure[0] if failure else None
            raise RuntimeError(f"the ASGI server stopped during start-up ({cause!r})") from cause
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(shutdown_timeout)
            raise TimeoutError(f"the ASGI server was not listening after {startup_timeout} s")
        time.sleep(0.005)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"{'https' if ssl_certfile else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout)
