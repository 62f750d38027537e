"""Key files: one is read only when it is private to this user, and a new one is published with
link(), which never replaces a file, then made durable with an fsync of its directory."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from bot.crypto import InvalidMasterKey, MasterKey
from bot.keys.errors import InsecureKeyFile, MalformedMasterKey, MasterKeyError

__all__ = ["fsync_directory", "link_key_file", "publish_key_file", "read_key_file"]


def read_key_file(path: Path) -> MasterKey | None:
    """The key in ``path``, or None if there is no such file; refuses unsafe files."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise MasterKeyError(f"the master key file {path} is not a regular file")
        if info.st_uid != os.getuid():
            raise InsecureKeyFile(
                f"the master key file {path} is owned by another user (uid {info.st_uid}); "
                f"it must belong to the user running the bot (uid {os.getuid()})"
            )
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InsecureKeyFile(
                f"the master key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 600 {path}`"
            )
        content = handle.read(4096)
    try:
        return MasterKey.from_base64(content.decode("ascii"))
    except (InvalidMasterKey, UnicodeDecodeError) as exc:
        problem = exc if isinstance(exc, InvalidMasterKey) else "it is not text"
        raise MalformedMasterKey(f"the master key file {path} is malformed: {problem}") from None


def link_key_file(path: Path, key: MasterKey) -> bool:
    """``key`` in a new file ``path`` (0600, directory 0700); False if ``path`` exists already: link()
    fails then, unlike rename(), so a racing start cannot replace a key."""
    tmp = _write_temporary_key_file(path, key)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        _remove(tmp)
    fsync_directory(path.parent)
    return True


def publish_key_file(path: Path, key: MasterKey) -> None:
    """``key`` under the new name ``path`` (0600), complete or not at all, never over a file."""
    taken = f"{path} already exists; choose a new file for the new key (nothing was changed)"
    if os.path.lexists(path):
        raise MasterKeyError(taken)
    try:
        tmp = _write_temporary_key_file(path, key)
    except OSError as exc:
        raise MasterKeyError(_cannot_write(path, exc)) from None
    try:
        # link() fails if the name exists, unlike rename(): nothing is ever replaced.
        os.link(tmp, path)
    except FileExistsError:
        raise MasterKeyError(taken) from None
    except OSError as exc:
        raise MasterKeyError(_cannot_write(path, exc)) from None
    finally:
        _remove(tmp)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make the names in ``directory`` durable; failures are ignored (not every file system can)."""
    # Losing the key after a crash would lose every credential.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cannot_write(path: Path, exc: OSError) -> str:
    return f"cannot write the new master key to {path}: {exc.strerror}; nothing was changed"


def _write_temporary_key_file(path: Path, key: MasterKey) -> Path:
    """``key`` in a new private file beside ``path``, flushed to disk, for a link to publish under
    ``path``: a reader never sees half a key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.to_base64().reveal().encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _remove(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
