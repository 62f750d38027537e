"""HashiCorp Vault (or OpenBao) KV version 2 as the secret store: ``CONNECTIONS_SECRET_STORE=vault``.

Settings (read from the environment, as the Vault CLI names them):

* ``VAULT_ADDR`` (required): ``https://…``; ``http://`` only for a Vault on this machine (the dev
  server listens on ``http://127.0.0.1:8200``).
* ``VAULT_TOKEN``, or ``VAULT_ROLE_ID`` with ``VAULT_SECRET_ID`` (AppRole: the bot logs in at its
  first call, logs in again before the token's lease ends, and once more if Vault refuses a token
  that has stopped working).
* ``VAULT_NAMESPACE`` (Vault Enterprise / HCP), ``VAULT_CACERT`` (a PEM file of the CA that signed
  Vault's certificate; without it, the system's trust store). TLS is always verified:
  ``VAULT_SKIP_VERIFY`` is refused.
* ``CONNECTIONS_VAULT_MOUNT``: the KV version 2 mount, ``secret`` by default.

Writes are check-and-set, so that a write is exactly one version even when it is retried after a
lost answer, and a change someone made meanwhile is reported instead of overwritten. A first write
(``replaces=None``) sends ``cas=0``: it succeeds only if the path holds nothing. A rotation sends
``cas=<the version the bot wrote last>``. When Vault answers that the version did not match, the
store looks at what is there:

* the latest version is deleted or destroyed and ``replaces`` is None: the path is free (a removed
  connection registered again), so the store writes over it with ``cas=<that version>``;
* the current version holds exactly the fields being written, and it is the next version after
  ``replaces`` (or, with ``replaces=None``, the path held nothing live before it): it is the
  version a lost write made, and the store answers with it instead of writing a second one;
* anything else: :attr:`StoreFailure.CONFLICT`, and nothing is written.

Vault has no write tokens, so the ``token`` argument of :meth:`VaultKV2.write` is not sent: the
fields themselves tell a retry from another writer. The metadata (provider, connection id, owner,
approver, time) becomes the secret's ``custom_metadata`` after each write.

hvac is synchronous: every call runs in the store's own threads with short timeouts, and every
failure becomes a :class:`StoreError` whose message names the path and Vault's status, never a
response body or a value that was sent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import hvac.utils
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bot.redaction import Secret
from bot.settings import ConfigError
from bot.stores.base import SecretStore, StoreCheck, StoredSecret, StoreError, StoreFailure, Written

__all__ = ["AppRoleAuth", "TokenAuth", "VaultKV2"]

log = logging.getLogger(__name__)

DEFAULT_MOUNT: Final = "secret"
CONNECT_TIMEOUT: Final = 3.0
READ_TIMEOUT: Final = 5.0
THREADS: Final = 16
RELOGIN_MARGIN: Final = 60.0
"""Seconds before an AppRole token's lease ends that the bot logs in again (at most a quarter of
the lease, so that a short lease is not renewed at every call)."""

_T = TypeVar("_T")
_CAS_MISMATCH: Final = "check-and-set parameter did not match the current version"
_MOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)*")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_STATUS: Final[dict[type[hvac.exceptions.VaultError], int]] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.UnsupportedOperation: 405,
    hvac.exceptions.PreconditionFailed: 412,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}


@dataclass(frozen=True)
class TokenAuth:
    """A Vault token the bot uses as it is (``VAULT_TOKEN``)."""

    token: Secret


@dataclass(frozen=True)
class AppRoleAuth:
    """An AppRole the bot logs in with (``VAULT_ROLE_ID``, ``VAULT_SECRET_ID``)."""

    role_id: str
    secret_id: Secret
    mount: str = "approle"


class _LoginRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class VaultKV2(SecretStore):
    """Secrets as KV version 2 entries: one path per connection, one version per approved credential."""

    key = "vault"
    title = "Vault"

    def __init__(
        self,
        address: str,
        auth: TokenAuth | AppRoleAuth,
        *,
        namespace: str = "",
        ca_file: str | None = None,
        mount: str = DEFAULT_MOUNT,
        clock: Callable[[], float] = time.monotonic,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self._address = _checked_address(address)
        self._auth = auth
        self._namespace = namespace.strip("/")
        self._mount = mount.strip("/")
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="vault-store")
        session = requests.Session()
        # A connection that could not be opened is tried once more (nothing was sent); a request
        # that was sent is never repeated here, so a write is never sent twice behind our back.
        retries = Retry(total=1, connect=1, read=False, status=0, other=0, backoff_factor=0.1)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=THREADS, max_retries=retries)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        verify: str | bool = ca_file or _system_trust()
        session.verify = verify
        self._client = hvac.Client(
            url=self._address,
            # "" (not None): hvac would otherwise read VAULT_TOKEN or ~/.vault-token by itself.
            token=auth.token.reveal() if isinstance(auth, TokenAuth) else "",
            cert=False,  # likewise VAULT_CLIENT_CERT: the bot reads its settings, not hvac
            verify=verify,
            timeout=(connect_timeout, read_timeout),
            session=session,
            namespace=self._namespace or None,
        )
        self._auth_lock = threading.Lock()
        self._renew_at = math.inf if isinstance(auth, TokenAuth) else -math.inf
        self._login_token: Secret | None = None
        """The token the last AppRole login issued: held as a Secret so that logs mask it."""

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> VaultKV2:
        """The store as the environment configures it; raises :class:`ConfigError`."""

        def get(name: str) -> str:
            return (env.get(name) or "").strip()

        address = get("VAULT_ADDR")
        if not address:
            raise ConfigError(
                "VAULT_ADDR is required with CONNECTIONS_SECRET_STORE=vault "
                "(Vault's address, e.g. https://vault.example.com:8200)"
            )
        if get("VAULT_SKIP_VERIFY").lower() not in ("", "0", "false", "no", "off"):
            raise ConfigError(
                "the bot always verifies Vault's TLS certificate: unset VAULT_SKIP_VERIFY, "
                "and set VAULT_CACERT to the CA that signed the certificate if it is a private one"
            )
        token, role_id, secret_id = get("VAULT_TOKEN"), get("VAULT_ROLE_ID"), get("VAULT_SECRET_ID")
        auth: TokenAuth | AppRoleAuth
        if token and (role_id or secret_id):
            raise ConfigError("set VAULT_TOKEN, or VAULT_ROLE_ID with VAULT_SECRET_ID (AppRole), not both")
        if token:
            auth = TokenAuth(Secret(token))
        elif role_id and secret_id:
            auth = AppRoleAuth(role_id, Secret(secret_id))
        elif role_id or secret_id:
            raise ConfigError("VAULT_ROLE_ID and VAULT_SECRET_ID go together: the bot logs in with AppRole")
        else:
            raise ConfigError(
                "the bot needs an identity in Vault: VAULT_TOKEN, "
                "or VAULT_ROLE_ID and VAULT_SECRET_ID (AppRole)"
            )
        ca_file = get("VAULT_CACERT") or None
        if ca_file is not None:
            _check_ca_file(ca_file)
        mount = get("CONNECTIONS_VAULT_MOUNT").strip("/") or DEFAULT_MOUNT
        if not _MOUNT.fullmatch(mount):
            raise ConfigError(f"CONNECTIONS_VAULT_MOUNT must be a mount path like `secret`, not {mount!r}")
        return cls(address, auth, namespace=get("VAULT_NAMESPACE"), ca_file=ca_file, mount=mount)

    def __repr__(self) -> str:
        method = "token" if isinstance(self._auth, TokenAuth) else "approle"
        return (
            f"VaultKV2(address={self._address!r}, mount={self._mount!r}, "
            f"namespace={self._namespace!r}, auth={method!r})"
        )

    def where(self, path: str) -> str:
        # As the Vault CLI takes it: `vault kv get secret/connections/…` (with -namespace if any).
        place = f"Vault `{self._mount}/{path}`"
        return f"{place} in namespace `{self._namespace}`" if self._namespace else place

    # --- the interface ---------------------------------------------------------------------------

    async def write(
        self,
        path: str,
        fields: Mapping[str, str | Secret],
        *,
        token: str,
        replaces: str | None,
        metadata: Mapping[str, str],
    ) -> Written:
        return await self._run("write", path, lambda: self._write(path, fields, replaces, metadata))

    async def read(self, path: str) -> StoredSecret:
        return await self._run("read", path, lambda: self._read(path))

    async def delete(self, path: str) -> None:
        await self._run("delete", path, lambda: self._delete(path))

    async def check(self) -> StoreCheck:
        try:
            await self._run("check", "", self._client.auth.token.lookup_self)
        except StoreError as exc:
            return StoreCheck(
                reachable=exc.failure is not StoreFailure.UNREACHABLE, authenticated=False, detail=str(exc)
            )
        return StoreCheck(reachable=True, authenticated=True)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._client.adapter.close()

    # --- the calls, in a store thread -------------------------------------------------------------

    def _write(
        self, path: str, fields: Mapping[str, str | Secret], replaces: str | None, metadata: Mapping[str, str]
    ) -> Written:
        data = {
            name: value.reveal() if isinstance(value, Secret) else value for name, value in fields.items()
        }
        data = {name: value for name, value in data.items() if value != ""}
        if replaces is None:
            version = self._put(path, data, cas=0)
        else:
            expected = _version_number(replaces)
            if expected is None:
                raise StoreError(
                    StoreFailure.CONFLICT,
                    f"`{path}` changed outside the bot: Vault has no version {replaces!r} to replace",
                    code="cas",
                )
            version = self._put(path, data, cas=expected)
        if version is None:
            version = self._settle(path, data, replaces)
        self._annotate(path, metadata)
        log.debug("wrote version %s of %s in Vault", version, path)
        return Written(str(version))

    def _put(self, path: str, data: dict[str, str], *, cas: int) -> int | None:
        """The version written, or None when ``cas`` did not match the current version."""
        try:
            answer = self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, cas=cas, mount_point=self._mount
            )
        except hvac.exceptions.InvalidRequest as exc:
            if any(_CAS_MISMATCH in str(error) for error in exc.errors or ()):
                return None
            raise
        return int(answer["data"]["version"])

    def _settle(self, path: str, data: dict[str, str], replaces: str | None) -> int:
        """After a check-and-set mismatch: the version a lost write made, a free path written over,
        or CONFLICT (see the module docstring)."""
        metadata = self._key_metadata(path)
        if metadata is None:  # deleted between the write and now
            if replaces is None and (version := self._put(path, data, cas=0)) is not None:
                return version
            raise _changed(path)
        current = int(metadata["current_version"])
        versions: Mapping[str, Any] = metadata.get("versions") or {}
        latest = versions.get(str(current)) or {}
        if replaces is None:
            if _gone(latest):
                if (version := self._put(path, data, cas=current)) is not None:
                    return version
                raise _taken(path)
            if _free_before(versions, current) and self._holds(path, current, data):
                return current
            raise _taken(path)
        if current == int(replaces) + 1 and not _gone(latest) and self._holds(path, current, data):
            return current
        raise _changed(path)

    def _key_metadata(self, path: str) -> Mapping[str, Any] | None:
        try:
            answer = self._client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=self._mount)
        except hvac.exceptions.InvalidPath:
            return None
        metadata: Mapping[str, Any] = answer["data"]
        return metadata

    def _holds(self, path: str, version: int, data: dict[str, str]) -> bool:
        try:
            answer = self._client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=self._mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return False
        return bool(answer["data"]["data"] == data)

    def _annotate(self, path: str, metadata: Mapping[str, str]) -> None:
        # Only custom_metadata: hvac's update_metadata would also reset delete_version_after.
        url = hvac.utils.format_url("/v1/{mount}/metadata/{path}", mount=self._mount, path=path)
        custom = {name: value for name, value in metadata.items() if value}
        self._client.adapter.post(url=url, json={"custom_metadata": custom})

    def _read(self, path: str) -> StoredSecret:
        answer = self._client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=self._mount, raise_on_deleted_version=True
        )
        body = answer["data"]
        values = body.get("data")
        if not isinstance(values, dict):
            raise StoreError(
                StoreFailure.NOT_FOUND, f"Vault holds no current version at `{path}`", code="404"
            )
        fields = {
            name: Secret(value if isinstance(value, str) else json.dumps(value))
            for name, value in values.items()
        }
        return StoredSecret(version=str(body["metadata"]["version"]), fields=fields)

    def _delete(self, path: str) -> None:
        try:
            self._client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=self._mount)
        except hvac.exceptions.InvalidPath:
            return

    # --- identity, threads and failures ------------------------------------------------------------

    async def _run(self, verb: str, path: str, operation: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._call(verb, path, operation))

    def _call(self, verb: str, path: str, operation: Callable[[], _T]) -> _T:
        """Run ``operation`` with a working token; every failure becomes a :class:`StoreError`,
        raised outside the handler so that it carries no trace of hvac's exception (whose text
        holds Vault's answer)."""
        what = "look up its own token" if verb == "check" else f"{verb} `{path}`"
        try:
            return self._authorized(operation)
        except StoreError:
            raise
        except _LoginRefused as exc:
            error = StoreError(
                StoreFailure.DENIED,
                f"the bot could not {what}: Vault refused its AppRole login ({exc.status}); "
                "check VAULT_ROLE_ID and VAULT_SECRET_ID",
                code=str(exc.status),
            )
        except hvac.exceptions.VaultError as exc:
            error = self._vault_error(exc, verb, path, what)
        except requests.RequestException as exc:
            error = self._connection_error(exc, what)
        except (KeyError, TypeError, ValueError):
            error = StoreError(
                StoreFailure.REFUSED, f"Vault gave an unexpected answer to {what}", code="answer"
            )
        raise error from None

    def _authorized(self, operation: Callable[[], _T]) -> _T:
        sent = self._token()
        try:
            return operation()
        except hvac.exceptions.Forbidden:
            if not isinstance(self._auth, AppRoleAuth) or not self._token_stopped(sent):
                raise
        # The token stopped working before its lease said (revoked, or the clocks disagree).
        self._token(replacing=sent)
        return operation()

    def _token(self, *, replacing: str | None = None) -> str:
        """The token to send: an AppRole login first if there is none yet, if its lease nears its
        end, or if it is ``replacing`` (and no other thread has replaced it already)."""
        with self._auth_lock:
            current: str = self._client.token or ""
            if isinstance(self._auth, AppRoleAuth) and (
                not current or self._clock() >= self._renew_at or current == replacing
            ):
                current = self._login(self._auth)
            return current

    def _login(self, auth: AppRoleAuth) -> str:
        try:
            answer = self._client.auth.approle.login(
                role_id=auth.role_id,
                secret_id=auth.secret_id.reveal(),
                use_token=False,
                mount_point=auth.mount,
            )
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as exc:
            raise _LoginRefused(_STATUS[type(exc)]) from None
        token = str(answer["auth"]["client_token"])
        lease = float(answer["auth"]["lease_duration"])
        self._login_token = Secret(token)
        self._client.token = token
        self._renew_at = self._clock() + lease - min(RELOGIN_MARGIN, lease / 4) if lease > 0 else math.inf
        log.info("logged in to Vault with AppRole; the token's lease is %d s", lease)
        return token

    def _token_stopped(self, sent: str) -> bool:
        """Whether a 403 came from the token itself rather than from its policy."""
        if self._client.token != sent:
            return True  # another thread logged in again meanwhile
        try:
            self._client.auth.token.lookup_self()
        except hvac.exceptions.Forbidden:
            return True
        return False

    def _vault_error(self, exc: hvac.exceptions.VaultError, verb: str, path: str, what: str) -> StoreError:
        status = _STATUS.get(type(exc), 0)
        code = str(status) if status else type(exc).__name__
        if status == 403:
            return StoreError(
                StoreFailure.DENIED, f"the bot may not {what} in Vault: 403 permission denied", code=code
            )
        if status == 404 and verb == "read":
            return StoreError(
                StoreFailure.NOT_FOUND, f"Vault holds no current version at `{path}` (404)", code=code
            )
        if status == 404:
            return StoreError(
                StoreFailure.REFUSED,
                f"Vault has no KV mount `{self._mount}` to {what} (404): check CONNECTIONS_VAULT_MOUNT",
                code=code,
            )
        if status == 503:
            return StoreError(
                StoreFailure.UNREACHABLE, f"Vault is sealed or unavailable (503): could not {what}", code=code
            )
        if status == 502:
            return StoreError(
                StoreFailure.UNREACHABLE, f"Vault could not be reached to {what} (502)", code=code
            )
        if status == 429:
            return StoreError(
                StoreFailure.REFUSED,
                f"Vault refused to {what}: 429 rate limit exceeded, try again later",
                code=code,
            )
        if status == 400:
            return StoreError(
                StoreFailure.REFUSED, f"Vault refused to {what}: 400 invalid request", code=code
            )
        if status >= 500:
            return StoreError(
                StoreFailure.REFUSED, f"Vault failed to {what}: {status} server error", code=code
            )
        return StoreError(StoreFailure.REFUSED, f"Vault refused to {what} ({code})", code=code)

    def _connection_error(self, exc: requests.RequestException, what: str) -> StoreError:
        where = f"Vault at {self._address}"
        if isinstance(exc, requests.exceptions.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                reason = "its TLS certificate is not trusted (set VAULT_CACERT to the CA that signed it)"
            else:
                reason = "the TLS handshake failed"
            return StoreError(
                StoreFailure.UNREACHABLE, f"could not {what}: {where}: {reason}", code="SSLError"
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return StoreError(
                StoreFailure.UNREACHABLE, f"could not {what}: {where} did not answer in time", code="Timeout"
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = (
                "the connection was refused" if "refused" in str(exc).lower() else "the connection failed"
            )
            return StoreError(
                StoreFailure.UNREACHABLE, f"could not {what}: {where}: {reason}", code="ConnectionError"
            )
        return StoreError(
            StoreFailure.UNREACHABLE,
            f"could not {what}: the connection to {where} broke ({type(exc).__name__})",
            code=type(exc).__name__,
        )


# --- helpers -------------------------------------------------------------------------------------------


def _checked_address(address: str) -> str:
    """``VAULT_ADDR`` as scheme://host[:port]; raises :class:`ConfigError`."""
    parts = urlsplit(address.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError("VAULT_ADDR has a port that is not a number") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("VAULT_ADDR must be a URL like https://vault.example.com:8200")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("VAULT_ADDR must not hold credentials: use VAULT_TOKEN or AppRole")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            "VAULT_ADDR must be Vault's address without a path, e.g. https://vault.example.com:8200"
        )
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigError(
            "VAULT_ADDR must start with https://: plain http:// is accepted only for a Vault on this "
            "machine (127.0.0.1, ::1, localhost), like the dev server"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_ca_file(path: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"VAULT_CACERT={path} is not a file")
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError):
        raise ConfigError(f"VAULT_CACERT={path} holds no readable PEM certificate") from None


def _system_trust() -> str | bool:
    """The system's trust store (as OpenSSL finds it, SSL_CERT_FILE included), where requests would
    otherwise use certifi's bundle, which lacks the private CAs companies add to their machines."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return paths.cafile
    if paths.capath and os.path.isdir(paths.capath):
        return paths.capath
    return True


def _version_number(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


def _gone(version: Mapping[str, Any]) -> bool:
    """Whether a version (from the key's metadata) is destroyed or deleted by now."""
    if version.get("destroyed") is True:
        return True
    deletion = str(version.get("deletion_time") or "")
    if not deletion:
        return False
    moment = datetime.fromisoformat(_FRACTION.sub(r"\1", deletion).replace("Z", "+00:00"))
    return moment <= datetime.now(UTC)


def _free_before(versions: Mapping[str, Any], current: int) -> bool:
    """Whether the path held nothing live before ``current``: it is the first version, or the one
    before it is deleted or destroyed (a version dropped by max_versions leaves it unknown: no)."""
    if current <= 1:
        return True
    previous = versions.get(str(current - 1))
    return previous is not None and _gone(previous)


def _changed(path: str) -> StoreError:
    return StoreError(
        StoreFailure.CONFLICT,
        f"`{path}` changed outside the bot: its current version in Vault is not the one the bot wrote",
        code="cas",
    )


def _taken(path: str) -> StoreError:
    return StoreError(
        StoreFailure.CONFLICT,
        f"`{path}` holds a secret the bot did not write for this connection",
        code="cas",
    )
