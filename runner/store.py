"""Where each server's tokens and client registration live between runs.

Guarantees:

- one file per server, ``<dir>/<name>.json``, mode 0600 in a 0700 directory, written
  to a temporary file in the same directory and ``os.replace``-d into place, so a reader
  sees the old file or the new one, never a torn one;
- only the parent process writes here (children report over their pipe);
- a file that cannot be read as a login record is moved aside to
  ``<name>.json.corrupt-<time>`` (kept, never deleted), a ``TokenStoreWarning`` says
  where, and the server is treated as never logged in;
- nothing here logs a token or a secret.

Not guaranteed: durability across a power cut (no fsync of the directory), or
coordination between two processes logging in to the same server at once (a later
issue adds single flight).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Final

from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from pydantic import ValidationError

__all__ = ["StoredLogin", "TokenStore", "TokenStoreWarning"]

logger = logging.getLogger(__name__)

STORE_VERSION: Final = 1


class TokenStoreWarning(UserWarning):
    """A token file was unreadable and has been moved aside."""


class StoredLogin:
    """A validated login record: tokens, when they expire, the client registration and the
    authorization server's metadata (needed to refresh without a new browser login)."""

    __slots__ = ("client_info", "expires_at", "oauth_metadata", "saved_at", "server_url", "tokens")

    def __init__(
        self,
        *,
        server_url: str,
        tokens: OAuthToken,
        expires_at: float | None,
        client_info: OAuthClientInformationFull | None,
        oauth_metadata: OAuthMetadata | None,
        saved_at: float | None = None,
    ) -> None:
        self.server_url = server_url
        self.tokens = tokens
        self.expires_at = expires_at
        self.client_info = client_info
        self.oauth_metadata = oauth_metadata
        self.saved_at = time.time() if saved_at is None else saved_at

    def __repr__(self) -> str:
        return f"StoredLogin(server_url={self.server_url!r}, expires_at={self.expires_at!r})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredLogin:
        """Validate a record; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict) or data.get("version") != STORE_VERSION:
            raise ValueError(f"not a version {STORE_VERSION} login record")
        server_url = data.get("server_url")
        if not isinstance(server_url, str):
            raise ValueError("server_url is missing")
        expires_at = data.get("expires_at")
        if expires_at is not None and not isinstance(expires_at, int | float):
            raise ValueError("expires_at is not a number")
        try:
            tokens = OAuthToken.model_validate(data.get("tokens"))
            client = data.get("client_info")
            meta = data.get("oauth_metadata")
            return cls(
                server_url=server_url,
                tokens=tokens,
                expires_at=expires_at,
                client_info=None
                if client is None
                else OAuthClientInformationFull.model_validate(client),
                oauth_metadata=None if meta is None else OAuthMetadata.model_validate(meta),
                saved_at=float(data.get("saved_at") or time.time()),
            )
        except ValidationError as exc:
            raise ValueError(f"invalid field: {exc.errors()[0]['loc']}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STORE_VERSION,
            "server_url": self.server_url,
            "tokens": self.tokens.model_dump(mode="json", exclude_none=True),
            "expires_at": self.expires_at,
            "client_info": None
            if self.client_info is None
            else self.client_info.model_dump(mode="json", exclude_none=True),
            "oauth_metadata": None
            if self.oauth_metadata is None
            else self.oauth_metadata.model_dump(mode="json", exclude_none=True),
            "saved_at": self.saved_at,
        }


def default_store_dir() -> Path:
    """``$MCP_OAUTH_DIR``, else the per-user state directory of the platform."""
    explicit = os.environ.get("MCP_OAUTH_DIR")
    if explicit:
        return Path(explicit)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "mcp-oauth-flows"


class TokenStore:
    """Token files of one user, one file per server name."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_store_dir()

    def __repr__(self) -> str:
        return f"TokenStore({str(self.directory)!r})"

    def path_for(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str) -> StoredLogin | None:
        """The stored login of ``name``, or None when there is none or it was unreadable
        (then moved aside, with a ``TokenStoreWarning``)."""
        path = self.path_for(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return StoredLogin.from_dict(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
            os.replace(path, aside)
            message = (
                f"token file {path} is unreadable ({exc}); kept as {aside}; "
                f"{name} will log in again"
            )
            logger.warning(message)
            warnings.warn(message, TokenStoreWarning, stacklevel=2)
            return None

    def save(self, name: str, login: StoredLogin) -> Path:
        """Write ``login`` atomically with mode 0600; returns the file's path."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path_for(name)
        data = json.dumps(login.to_dict(), indent=2, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp creates the file 0600
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path

    def delete(self, name: str) -> bool:
        """Forget ``name``'s login; returns whether there was one."""
        try:
            self.path_for(name).unlink()
        except FileNotFoundError:
            return False
        return True
