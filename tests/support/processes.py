"""Running the ``connections-bot`` command as an operator would: a real process with a clean
environment, served on a free loopback port until it answers ``/healthz``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import keyring.backends.fail

__all__ = ["EXE", "clean_env", "free_port", "refused_port", "serving"]

EXE = shutil.which("connections-bot", path=os.path.dirname(sys.executable)) or "connections-bot"


def clean_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """A minimal environment: no inherited bot settings, an isolated config dir and keyring."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PYTHON_KEYRING_BACKEND": f"{keyring.backends.fail.__name__}.Keyring",
        "LANG": "C.UTF-8",
    }
    env.update(values)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses every connection while the block runs: bound, so no other
    test worker can start a server on it, but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


BIND_ATTEMPTS = 3


class _PortTaken(Exception):
    """Another process bound the free port between our pick and the server's bind."""


@contextmanager
def serving(
    env: dict[str, str], cwd: Path, *, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``connections-bot serve`` until the block ends (then SIGTERM). Its output goes to pipes, or
    to the file ``log`` for a process that logs a lot (a full pipe would stall it)."""
    for attempt in range(1, BIND_ATTEMPTS + 1):
        # A port picked free can be taken by another test worker before the server binds it.
        try:
            with _serving(env, cwd, log, retry_bind=attempt < BIND_ATTEMPTS) as served:
                yield served
            return
        except _PortTaken:
            continue


@contextmanager
def _serving(
    env: dict[str, str], cwd: Path, log: Path | None, *, retry_bind: bool
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    sink = log.open("w") if log is not None else None
    process = subprocess.Popen(
        [EXE, "serve"],
        env={**env, "HOST": "127.0.0.1", "PORT": str(port)},
        cwd=cwd,
        stdout=sink or subprocess.PIPE,
        stderr=subprocess.STDOUT if sink else subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = (
                    log.read_text() if log is not None else process.stderr.read() if process.stderr else ""
                )
                if retry_bind and "address already in use" in output.lower():
                    raise _PortTaken(port)
                raise AssertionError(f"serve exited with {process.returncode}: {output}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve did not become healthy within 30 s")
            time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if sink is not None:
            sink.close()
