"""A PostgreSQL server of the test session's own, with password (SCRAM) authentication.

The machine's PostgreSQL at 127.0.0.1:5432 trusts every connection, so it cannot show a wrong
password being turned down. This one is made with ``initdb --auth=scram-sha-256`` in a temporary
directory, listens on a free loopback port (and a socket in that directory), and is stopped and
removed at the end of the session. ``initdb`` refuses to run as root, so as root the server runs as
the ``postgres`` OS user.

Use it through the session fixture ``private_postgres`` (a :class:`PrivatePostgres`): import
``private_postgres_server`` into a test module (or a conftest) and ask for ``private_postgres``.
When no ``initdb`` is installed, or the server does not start, the tests that ask for it are
skipped, unless ``CONNECTIONS_TEST_REQUIRE_POSTGRES=1``, which makes them fail instead.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

__all__ = ["PrivatePostgres", "find_postgres_bin", "private_postgres_server", "start_private_postgres"]

_REQUIRE_POSTGRES = "CONNECTIONS_TEST_REQUIRE_POSTGRES"
SUPERUSER = "postgres"


@dataclass
class PrivatePostgres:
    """A running private server; ``password`` is the superuser's."""

    host: str
    port: int
    password: str = field(repr=False)
    superuser: str = SUPERUSER
    directory: Path = field(default_factory=Path)

    def connect(
        self, user: str | None = None, password: str | None = None, dbname: str = "postgres"
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """A synchronous autocommit connection, as the superuser unless told otherwise."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=user or self.superuser,
            password=self.password if password is None else password,
            dbname=dbname,
            sslmode="disable",
            connect_timeout=5,
            autocommit=True,
        )

    def create_role(self, name: str, password: str, *, connection_limit: int | None = None) -> None:
        """A login role (dropped with the server)."""
        statement = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(password)
        )
        if connection_limit is not None:
            statement = sql.SQL("{} CONNECTION LIMIT {}").format(statement, sql.Literal(connection_limit))
        with self.connect() as admin:
            admin.execute(statement)

    def create_database(self, name: str) -> None:
        with self.connect() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def execute(self, statement: sql.SQL | sql.Composed, dbname: str = "postgres") -> None:
        """Run one statement as the superuser, in ``dbname``."""
        with self.connect(dbname=dbname) as admin:
            admin.execute(statement)


def find_postgres_bin(name: str) -> Path | None:
    """``name`` (initdb, pg_ctl) from the newest /usr/lib/postgresql/<version>/bin, or on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name)) or (0,)

    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=version)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    return Path(on_path) if on_path else None


_BIND_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    # PGHOST, PGPORT and the like would point the server tools somewhere else.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


class _StartFailed(Exception):
    """The server could not be made or started; the message says why."""


@dataclass
class _Runner:
    """Runs the server tools, as the postgres OS user when we are root (initdb refuses root)."""

    prefix: list[str]

    @classmethod
    def for_this_user(cls) -> _Runner:
        if os.geteuid() != 0:
            return cls([])
        runuser = shutil.which("runuser")
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise _StartFailed(
                "running as root and there is no 'postgres' OS user to run initdb as"
            ) from None
        if runuser is None:
            raise _StartFailed("running as root and runuser is missing, so initdb can't run as 'postgres'")
        return cls([runuser, "-u", SUPERUSER, "--"])

    def run(self, *command: str | Path, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self.prefix, *map(str, command)],
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-2000:]
            raise _StartFailed(f"{Path(str(command[0])).name} exited with {result.returncode}: {output}")


def start_private_postgres() -> Generator[PrivatePostgres, None, None]:
    """Make, start, yield and finally stop and remove a private server; raises ``_StartFailed``."""
    initdb, pg_ctl = find_postgres_bin("initdb"), find_postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise _StartFailed("no initdb/pg_ctl found (looked in /usr/lib/postgresql/*/bin and on PATH)")
    runner = _Runner.for_this_user()
    # Not pytest's tmp_path: its parents are private to root, and the server may run as postgres.
    directory = Path(tempfile.mkdtemp(prefix="cb-pg-"))
    data, log, pwfile = directory / "data", directory / "server.log", directory / "pwfile"
    password = secrets.token_urlsafe(18)
    pwfile.write_text(password + "\n")
    if runner.prefix:
        account = pwd.getpwnam(SUPERUSER)
        for path in (directory, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = _free_port()
    started = False
    try:
        runner.run(
            initdb,
            "-D",
            data,
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            options = (
                f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=30"
            )
            try:
                runner.run(pg_ctl, "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start")
                break
            except _StartFailed as failure:
                tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
                # Another test worker may have bound the port between our pick and the server's.
                if attempt < _BIND_ATTEMPTS and "address already in use" in tail.lower():
                    port = _free_port()
                    continue
                raise _StartFailed(f"{failure}\n{tail}") from None
        started = True
        yield PrivatePostgres(host="127.0.0.1", port=port, password=password, directory=directory)
    finally:
        if started:
            runner.run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session", name="private_postgres")
def private_postgres_server() -> Iterator[PrivatePostgres]:
    """The session's private PostgreSQL (see the module docstring)."""
    server = start_private_postgres()
    try:
        started = next(server)
    except _StartFailed as failure:
        reason = f"no private PostgreSQL for these tests: {failure}"
        if os.environ.get(_REQUIRE_POSTGRES) == "1":
            pytest.fail(f"{reason}; {_REQUIRE_POSTGRES}=1 requires them", pytrace=False)
        pytest.skip(reason)
    try:
        yield started
    finally:
        server.close()
