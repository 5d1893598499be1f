"""hermes-agent's token files (``HERMES_HOME/mcp-tokens/``) behind ``TokenStore``'s interface.

A ``HermesTokenStore`` reads and writes exactly the files hermes-agent reads and writes
(``tools/mcp_oauth.py``, ``HermesTokenStorage``), so a login done here is one hermes uses, and
one hermes did is reused here:

- ``<safe>.json``: the SDK's ``OAuthToken`` as ``model_dump(mode="json", exclude_none=True)``,
  plus ``expires_at`` (absolute, seconds since the epoch; written when the expiry is known) and
  ``hermes_issuer`` (the authorization server that granted the tokens, without a trailing
  ``/`` as hermes writes it: ``StoredLogin.granted_by``; a refresh token goes to no other
  issuer). Reading, a file without ``expires_at`` but with ``expires_in`` expires
  ``expires_in`` seconds after its modification time, as hermes reads it;
- ``<safe>.client.json``: the client registration (``OAuthClientInformationFull``);
- ``<safe>.meta.json``: the authorization server's metadata (``OAuthMetadata``);
- ``<safe>.cimd-off``: hermes's marker that the server refused its Client ID Metadata
  Document: an empty file, written as hermes writes it (``mark_cimd_refused``), read by
  ``cimd_refused``, removed by ``delete`` (as hermes's own ``remove`` does);
- ``<safe>.json.refresh.lock``: hermes's refresh fence. ``hold`` takes it (see below);

where ``<safe>`` is ``runner._core._entries.hermes_safe_name(name)``.

Guarantees:

- every file is written 0600 to a temporary file in the same directory and ``os.replace``-d
  (a reader, hermes included, sees the old file or the new one); the directory is created
  0700 and must be this user's and writable by nobody else (else ``TokenStoreError``);
  ``save`` writes the registration and the metadata before the tokens, so whoever sees the
  new tokens also sees the client they belong to;
- every file is read without blocking and with a bound (``statefiles``,
  ``MAX_TOKEN_FILE_BYTES``): a FIFO, a symlink, a directory, an oversized file or one that
  does not decode is reported with a ``TokenStoreWarning`` and LEFT IN PLACE (it is hermes's
  file); ``load`` then returns None (unreadable tokens) or the login without the unreadable
  registration or metadata. A later successful login overwrites the token file, as hermes's
  own next login would;
- ``hold(name, timeout)`` takes the lock hermes takes around a refresh (its
  ``acquire_refresh_fence``): an exclusive ``flock`` on ``<safe>.json.refresh.lock``, created
  0600 and never deleted. hermes polls ``flock(LOCK_EX | LOCK_NB)`` for up to 60 s and holds it
  from the read of the refresh token through the POST to the write of the new tokens;
  ``flock`` locks of two processes on one file exclude each other however each one waits, so
  hermes and this library never refresh one token at once. The supervisor holds it for a
  whole login (a refresh, or a browser login): a hermes refresh of that server meanwhile
  waits, then fails closed (hermes's ``RefreshFenceTimeout``) and retries on its next request;
- names are checked at every door with ``ServerSpec``'s rule (``check_server_name``);
- nothing here logs a token or a secret.

``StoredLogin.server_url``: hermes's files do not record the server's URL (hermes keys a login
by the server's name alone, and keeps it when the URL in config.yaml changes). This store
therefore takes the URL from the configuration: ``server_urls`` (name -> url, built from the
specs being logged in to) or ``load(name, server_url=...)``. A record loaded for a name with
no known URL carries ``server_url=""``, which ``authorize_many`` never reuses (it compares the
stored URL with the spec's). Recording the URL in hermes's token file was rejected: hermes
rewrites that file from the SDK model on its next refresh and the field would vanish.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

from runner._core._entries import hermes_safe_name
from runner._core._spec import check_server_name
from runner._core._stored import MAX_EXPIRES_AT, STORE_VERSION, InvalidLoginRecord, StoredLogin
from runner._stores._token_store import (
    MAX_TOKEN_FILE_BYTES,
    Survey,
    TokenStore,
    TokenStoreError,
    TokenStoreWarning,
    _stranger,
    read_own_bytes,
)
from runner.errors import InvalidServerSpec, NotALoginFile
from statefiles import (
    UnreadableStateFile,
    decode_json,
    read_state_file,
)

__all__ = ["TOKEN_DIR_NAME", "HermesTokenStore", "default_hermes_home", "registered_port"]

logger = logging.getLogger(__name__)

#: The token directory inside a hermes home.
TOKEN_DIR_NAME: Final = "mcp-tokens"  # noqa: S105 - a directory name
_TOKENS: Final = ".json"
_CLIENT: Final = ".client.json"
_META: Final = ".meta.json"
_CIMD_OFF: Final = ".cimd-off"
_FENCE: Final = ".json.refresh.lock"
#: hermes bookkeeping in the token file, not fields of the SDK's ``OAuthToken``.
_EXTRA_KEYS: Final = ("expires_at", "hermes_issuer")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def default_hermes_home() -> Path:
    """``$HERMES_HOME``, else ``~/.hermes`` (hermes-agent's own default)."""
    explicit = os.environ.get("HERMES_HOME")
    return Path(explicit).expanduser() if explicit else Path.home() / ".hermes"


def registered_port(login: StoredLogin | None) -> int | None:
    """The loopback port the login's client registration names in its redirect URIs."""
    if login is None or login.client_info is None:
        return None
    for uri in login.client_info.redirect_uris or ():
        try:
            parts = urlsplit(str(uri))
            if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
                return parts.port
        except ValueError:
            continue
    return None


class HermesTokenStore(TokenStore):
    """hermes-agent's ``mcp-tokens`` directory, with ``TokenStore``'s interface.

    Args:
        hermes_home: The hermes home (``$HERMES_HOME``, else ``~/.hermes``); the files live
            in its ``mcp-tokens`` directory.
        server_urls: name -> MCP server URL, the ``server_url`` of each loaded record
            (hermes's files do not record it; see the module docstring).

    Raises:
        TokenStoreError: the token directory exists and is not private to this user.
    """

    def __init__(
        self,
        hermes_home: str | os.PathLike[str] | None = None,
        *,
        server_urls: Mapping[str, str] | None = None,
    ) -> None:
        # TokenStore.__init__ is not called: everything it sets up is replaced here.
        self.hermes_home = (
            Path(hermes_home).expanduser() if hermes_home is not None else default_hermes_home()
        )
        self.directory = self.hermes_home / TOKEN_DIR_NAME
        self.server_urls: dict[str, str] = dict(server_urls or {})
        self._check_directory(create=False)

    def __repr__(self) -> str:
        return f"HermesTokenStore({str(self.hermes_home)!r})"

    # --- paths ------------------------------------------------------------------------------

    def _stem(self, name: str) -> str:
        return hermes_safe_name(check_server_name(name))

    def path_for(self, name: str) -> Path:
        """``<mcp-tokens>/<safe>.json``, hermes's token file of ``name``.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
        """
        return self.directory / f"{self._stem(name)}{_TOKENS}"

    def paths_for(self, name: str) -> dict[str, Path]:
        """Every file hermes keeps for ``name``: tokens, client, meta, cimd-off, lock."""
        stem = self._stem(name)
        return {
            "tokens": self.directory / f"{stem}{_TOKENS}",
            "client": self.directory / f"{stem}{_CLIENT}",
            "meta": self.directory / f"{stem}{_META}",
            "cimd-off": self.directory / f"{stem}{_CIMD_OFF}",
            "lock": self.directory / f"{stem}{_FENCE}",
        }

    def lock_path_for(self, name: str) -> Path:
        """``<mcp-tokens>/<safe>.json.refresh.lock``, the lock hermes takes to refresh."""
        return self.directory / f"{self._stem(name)}{_FENCE}"

    def stored_stems(self) -> list[str]:
        """The ``<safe>`` stems that have a token file, sorted (``logout --all``)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TokenStoreError(
                self.directory, f"cannot list {self.directory} ({_why(exc)})"
            ) from exc
        suffixes = (_CLIENT, _META, _FENCE)
        return sorted(
            n[: -len(_TOKENS)]
            for n in names
            if n.endswith(_TOKENS) and not n.endswith(suffixes) and not n.startswith(".")
        )

    def read_own(self, name: str) -> StoredLogin | None:
        """``name``'s login as hermes stored it, read without moving anything, or None when
        it has no token file. The token file must be a JSON object whose fields (hermes's
        ``expires_at`` and ``hermes_issuer`` aside) are an ``OAuthToken``; its companions are
        read as ``load`` reads them (an unreadable one is a ``TokenStoreWarning``).

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            NotALoginFile: the token file is not hermes's token file; it is left alone.
            TokenStoreError: reading failed for a reason of the moment.
        """
        path = self.path_for(name)
        raw = read_own_bytes(path)
        if raw is None:
            return None
        try:
            data = decode_json(raw, path=path)
            if not isinstance(data, dict):
                raise InvalidLoginRecord("not a JSON object")
            tokens = {k: v for k, v in data.items() if k not in _EXTRA_KEYS}
            StoredLogin.from_dict(
                {
                    "version": STORE_VERSION,
                    "server_url": "http://unknown.invalid/",
                    "tokens": tokens,
                }
            )
        except (UnreadableStateFile, InvalidLoginRecord) as exc:
            why = exc.reason if isinstance(exc, UnreadableStateFile) else str(exc)
            raise _stranger(path, why) from None
        return self.load(name)

    def survey(self) -> Survey:
        """What ``logout --all`` may log out here: the names whose hermes token file
        (``<safe>.json``) reads as one, when the stem is a server name that
        ``hermes_safe_name`` keeps as it is; every other token file is a ``NotALoginFile``
        (never removed): hermes names it so, but no server name here maps to it (log it out
        in hermes), or it is not a token file. Companions (``.client.json``,
        ``.meta.json``) are not token files; dot files are not looked at.

        Raises:
            TokenStoreError: the directory is a symlink or unsafe, or cannot be listed.
        """
        self.check_own_directory()
        if not self._check_directory(create=False):
            return Survey((), ())
        logins: list[str] = []
        strangers: list[NotALoginFile] = []
        for entry in self._entries():
            if not entry.endswith(_TOKENS) or entry.endswith((_CLIENT, _META)):
                continue
            if entry.startswith("."):
                continue
            stem = entry[: -len(_TOKENS)]
            path = self.directory / entry
            try:
                name = check_server_name(stem)
                spellable = hermes_safe_name(name) == stem
            except InvalidServerSpec:
                spellable = False
            if not spellable:
                strangers.append(
                    NotALoginFile(
                        path,
                        f"{path}: no server name here maps to hermes's file name {stem!r}; "
                        "left alone: log it out in hermes, or remove its files yourself",
                    )
                )
                continue
            try:
                self.read_own(stem)
            except NotALoginFile as exc:
                strangers.append(exc)
            except TokenStoreError as exc:
                strangers.append(NotALoginFile(exc.path, exc.message))
            else:
                logins.append(stem)
        return Survey(tuple(logins), tuple(strangers))

    #: hermes takes the same lock to refresh: ``TokenStore.hold`` locks ``lock_path_for``.
    _LOCK_HOLDERS: ClassVar[str] = "hermes refreshing it, or another login (its refresh lock)"

    # --- reading ----------------------------------------------------------------------------

    def cimd_marker_for(self, name: str) -> Path:
        """``<mcp-tokens>/<safe>.cimd-off``, hermes's mark of a refused metadata document."""
        return self.paths_for(name)["cimd-off"]

    def load(self, name: str, server_url: str | None = None) -> StoredLogin | None:
        """``name``'s login as hermes stored it, or None (none, or unreadable tokens: then a
        ``TokenStoreWarning``, and the file is left where it is).

        Args:
            name: The server's name.
            server_url: The record's ``server_url``; default: ``server_urls[name]``, else "".

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            TokenStoreError: the directory is unsafe, or reading failed for a reason of the
                moment (every file is left in place).
        """
        paths = self.paths_for(name)
        if not self._check_directory(create=False):
            return None
        token_data = self._read(name, paths["tokens"])
        if token_data is None:
            return None
        client = self._read(name, paths["client"])
        meta = self._read(name, paths["meta"])
        tokens = {k: v for k, v in token_data.items() if k not in _EXTRA_KEYS}
        issuer = token_data.get("hermes_issuer")
        granted_by = issuer.rstrip("/") if isinstance(issuer, str) and issuer.strip("/") else None
        try:
            mtime = os.stat(paths["tokens"]).st_mtime
        except OSError:
            mtime = time.time()
        expires_at: Any = token_data.get("expires_at")
        lifetime = tokens.get("expires_in")
        if expires_at is None and isinstance(lifetime, int | float):
            # hermes's rule for older files. Bounded before the sum: an integer beyond a
            # float's range would raise OverflowError; the record clamps the result.
            lifetime = min(max(lifetime, -MAX_EXPIRES_AT), MAX_EXPIRES_AT)
            expires_at = mtime + lifetime
        if isinstance(client, dict):
            client = _coerce_secret_method(client)
        url = server_url if server_url is not None else self.server_urls.get(name, "")
        record = {
            "version": STORE_VERSION,
            "server_url": url or "http://unknown.invalid/",
            "tokens": tokens,
            "expires_at": expires_at,
            "client_info": None,
            "oauth_metadata": None,
            "saved_at": mtime,
        }
        try:
            login = StoredLogin.from_dict(record)
        except InvalidLoginRecord as exc:
            self._report(name, paths["tokens"], str(exc))
            return None
        parts: dict[str, Any] = {}
        for key, data, path in (
            ("client_info", client, paths["client"]),
            ("oauth_metadata", meta, paths["meta"]),
        ):
            if data is None:
                continue
            try:
                parts[key] = getattr(StoredLogin.from_dict({**record, key: data}), key)
            except InvalidLoginRecord as exc:
                self._report(name, path, str(exc))
        return StoredLogin(
            server_url=url,
            tokens=login.tokens,
            expires_at=login.expires_at,
            client_info=parts.get("client_info"),
            oauth_metadata=parts.get("oauth_metadata"),
            saved_at=login.saved_at,
            granted_by=granted_by,
        )

    def _read(self, name: str, path: Path) -> dict[str, Any] | None:
        """One file's JSON object; None when absent or unreadable (reported, left alone)."""
        try:
            raw = read_state_file(path, limit=MAX_TOKEN_FILE_BYTES)
        except UnreadableStateFile as exc:
            self._report(name, path, exc.reason)
            return None
        except OSError as exc:
            raise TokenStoreError(
                path,
                f"cannot read {path} now ({_why(exc)}); it was left in place; try again later",
            ) from exc
        if raw is None:
            return None
        try:
            data = decode_json(raw, path=path)
        except UnreadableStateFile as exc:
            self._report(name, path, exc.reason)
            return None
        if not isinstance(data, dict):
            self._report(name, path, f"a JSON object was expected, not {type(data).__name__}")
            return None
        return data

    def _report(self, name: str, path: Path, reason: str) -> None:
        message = (
            f"hermes file {path} is unreadable ({reason}); left in place; "
            f"{name} will log in again if it needs to"
        )
        logger.warning(message)
        warnings.warn(message, TokenStoreWarning, stacklevel=4)

    # --- writing ----------------------------------------------------------------------------

    def save(self, name: str, login: StoredLogin) -> Path:
        """Write ``login`` in hermes's layout (registration, metadata, then tokens; each
        atomic, 0600); returns the token file's path.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            TokenStoreError: the directory is unsafe or cannot be created, or writing failed
                (the file being written is unchanged; earlier ones may be new).
        """
        paths = self.paths_for(name)
        self._check_directory(create=True)
        if login.client_info is not None:
            self._write(name, paths["client"], _dump(login.client_info))
        if login.oauth_metadata is not None:
            self._write(name, paths["meta"], _dump(login.oauth_metadata))
        tokens = _dump(login.tokens)
        if login.expires_at is not None:
            tokens["expires_at"] = login.expires_at
        if login.granted_by is not None:
            tokens["hermes_issuer"] = login.granted_by
        self._write(name, paths["tokens"], tokens)
        if name not in self.server_urls and login.server_url:
            self.server_urls[name] = login.server_url
        return paths["tokens"]

    def _write(self, name: str, path: Path, data: dict[str, Any]) -> None:
        """One of hermes's JSON files, 0600 and atomic (``TokenStore._write_atomically``)."""
        self._write_atomically(name, path, json.dumps(data, indent=2, allow_nan=False).encode())

    def delete(self, name: str) -> bool:
        """Forget ``name``'s login as hermes's ``remove`` does: the token, client, meta and
        cimd-off files (never the lock file). Returns whether there was any of them.

        Raises:
            InvalidServerSpec: ``name`` is not a valid server name.
            TokenStoreError: the directory is unsafe, or a file could not be removed.
        """
        paths = self.paths_for(name)
        if not self._check_directory(create=False):
            return False
        removed = False
        for key in ("tokens", "client", "meta", "cimd-off"):
            path = paths[key]
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise TokenStoreError(
                    path, f"cannot remove {path} ({_why(exc)}); remove it by hand"
                ) from exc
            removed = True
        return removed


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return data


def _coerce_secret_method(client: dict[str, Any]) -> dict[str, Any]:
    """hermes's reading of a registration: a client secret with no auth method (or "none")
    is ``client_secret_post`` (some servers omit the method when they issue a secret)."""
    if client.get("client_secret") and client.get("token_endpoint_auth_method") in (
        None,
        "none",
        "",
    ):
        return {**client, "token_endpoint_auth_method": "client_secret_post"}
    return client
