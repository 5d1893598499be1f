"""A validated login record (``StoredLogin``) and its one decoder. Pure: no file I/O.

The token store (``runner._stores._token_store``) keeps these records in files, and a
login's child sends one to the parent over its pipe (``TokensIssued.record``); both sides
decode them here and only here, so a record is either a valid ``StoredLogin`` or an
``InvalidLoginRecord``.

Guarantees:

- ``StoredLogin.from_dict`` and ``StoredLogin.from_json`` raise only ``InvalidLoginRecord``
  (a ``ValueError``), whatever the input: wrong types in any field, NaN or infinite numbers,
  integers beyond 64 bits, nesting deeper than ``MAX_RECORD_DEPTH``, lone surrogates, bad
  UTF-8 or bad JSON. The shape is checked iteratively before the SDK's models see it, so no
  ``RecursionError`` can come from a deep record;
- a record that decodes also encodes: ``to_dict`` of a decoded record is plain JSON
  (``json.dumps(..., allow_nan=False)`` accepts it) and decodes to an equal record;
- error messages name the field and what is wrong with it, never its value (a value may be
  a token);
- ``expires_at`` is always None or within ``[0, MAX_EXPIRES_AT]`` (clamped, not refused: a
  far-future expiry is a token that does not expire in practice), however the record was
  made, so any expiry formats as a date;
- no ``repr`` shows a token, a client secret or an authorization server's answer.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from pydantic import ValidationError

__all__ = [
    "MAX_EXPIRES_AT",
    "MAX_RECORD_DEPTH",
    "STORE_VERSION",
    "InvalidLoginRecord",
    "StoredLogin",
    "clamp_expiry",
    "issuer_of",
]

STORE_VERSION: Final = 1
#: The deepest nesting a record may have. A real one is 4-5 levels deep (a client
#: registration's ``jwks`` is the deepest part); anything far deeper is not a login record.
MAX_RECORD_DEPTH: Final = 32
#: Integers in a record are timestamps and lifetimes; 64 bits hold any of them, and a bound
#: keeps ``float()`` and ``json.dumps`` from failing on a huge one.
_INT_BOUND: Final = 2**63
#: The longest ``server_url`` accepted; a URL longer than a browser's limit is not one.
_MAX_URL_CHARS: Final = 8192
#: The latest expiry a record keeps: 2100-01-01T00:00:00Z. A token endpoint may answer
#: ``expires_in: 10**12`` and a file may say ``expires_at: 1e308``; neither is a date any
#: calendar (``datetime`` stops at year 9999) or person can use, and both mean "does not
#: expire in practice", which this still says. The earliest is the epoch: a time before it
#: is as expired as the epoch itself.
MAX_EXPIRES_AT: Final = 4102444800.0


class InvalidLoginRecord(ValueError):
    """Raised when data is not a valid login record; ``str(err)`` names what is wrong (a field
    and the kind of problem, never a value)."""


def _check_json_shape(value: object) -> None:
    """Refuse anything but finite, bounded JSON data of at most ``MAX_RECORD_DEPTH`` levels.

    Iterative (an explicit stack), so the check itself cannot hit the recursion limit.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_RECORD_DEPTH:
            raise InvalidLoginRecord(f"nested more than {MAX_RECORD_DEPTH} levels deep")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidLoginRecord("a string holds a lone surrogate") from None
        elif isinstance(item, int):
            if not -_INT_BOUND < item < _INT_BOUND:
                raise InvalidLoginRecord("an integer is out of range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidLoginRecord("a number is NaN or infinite")
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidLoginRecord("an object has a key that is not a string")
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        else:
            raise InvalidLoginRecord(f"holds a {type(item).__name__}, which is not JSON data")


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidLoginRecord(f"{key} is not a number ({type(value).__name__})")
    return float(value)  # finite and in range: _check_json_shape ran first


def _check_server_url(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidLoginRecord("server_url is missing or not a string")
    if len(value) > _MAX_URL_CHARS or not value.isprintable():
        raise InvalidLoginRecord("server_url is too long or holds control characters")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise InvalidLoginRecord("server_url is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidLoginRecord("server_url is not an http(s) URL")
    return value


def _check_finite(key: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidLoginRecord(f"{key} must be a finite number or None")
    return float(value)


def clamp_expiry(expires_at: float | None) -> float | None:
    """``expires_at`` within ``[0, MAX_EXPIRES_AT]`` (None stays None: no expiry known).

    Every record is clamped when it is made, read or stored, so whatever formats an expiry
    (``status``) gets a date ``datetime`` can represent."""
    if expires_at is None:
        return None
    return min(max(expires_at, 0.0), MAX_EXPIRES_AT)


class StoredLogin:
    """A validated login record: tokens, when they expire, the client registration and the
    authorization server's metadata (needed to refresh without a new browser login).

    ``granted_by`` is the issuer of the authorization server that granted the tokens (hermes
    calls it ``hermes_issuer``): a refresh token goes to that server's token endpoint and to
    no other (``runner._core._renewal``). None for records written before it was kept; such a
    record trusts its stored metadata, whose issuer is written with the next save.

    Raises:
        InvalidLoginRecord: a field has the wrong type, or a time is not a finite number.
    """

    __slots__ = (
        "client_info",
        "expires_at",
        "granted_by",
        "oauth_metadata",
        "saved_at",
        "server_url",
        "tokens",
    )

    def __init__(
        self,
        *,
        server_url: str,
        tokens: OAuthToken,
        expires_at: float | None,
        client_info: OAuthClientInformationFull | None,
        oauth_metadata: OAuthMetadata | None,
        saved_at: float | None = None,
        granted_by: str | None = None,
    ) -> None:
        if not isinstance(server_url, str):
            raise InvalidLoginRecord("server_url must be a string")
        if not isinstance(tokens, OAuthToken):
            raise InvalidLoginRecord("tokens must be an OAuthToken")
        if client_info is not None and not isinstance(client_info, OAuthClientInformationFull):
            raise InvalidLoginRecord("client_info must be an OAuthClientInformationFull or None")
        if oauth_metadata is not None and not isinstance(oauth_metadata, OAuthMetadata):
            raise InvalidLoginRecord("oauth_metadata must be an OAuthMetadata or None")
        self.server_url = server_url
        self.tokens = tokens
        self.expires_at = clamp_expiry(_check_finite("expires_at", expires_at))
        self.client_info = client_info
        self.oauth_metadata = oauth_metadata
        if granted_by is None and oauth_metadata is not None:
            granted_by = issuer_of(oauth_metadata)
        if granted_by is not None and (not isinstance(granted_by, str) or not granted_by):
            raise InvalidLoginRecord("granted_by must be a non-empty string or None")
        self.granted_by = granted_by
        checked = _check_finite("saved_at", saved_at)
        self.saved_at = time.time() if checked is None else checked

    def __repr__(self) -> str:
        return f"StoredLogin(server_url={self.server_url!r}, expires_at={self.expires_at!r})"

    @classmethod
    def from_json(cls, data: bytes) -> StoredLogin:
        """Decode a record from UTF-8 JSON bytes (a token file's content).

        Raises:
            InvalidLoginRecord: the bytes are not UTF-8 JSON, or not a valid record.
        """
        # Decoded here, not with statefiles.decode_json: the pure core imports no I/O
        # library (the import contracts in .importlinter).
        try:
            decoded = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidLoginRecord("not UTF-8 text") from None
        except RecursionError:
            raise InvalidLoginRecord("JSON nested too deeply") from None
        except ValueError as exc:  # json.JSONDecodeError, and int-string conversion limits
            raise InvalidLoginRecord(f"not JSON ({exc})") from None
        return cls.from_dict(decoded)

    @classmethod
    def from_dict(cls, data: object) -> StoredLogin:
        """Validate a decoded record (a token file's JSON, or ``TokensIssued.record``).

        Raises:
            InvalidLoginRecord: anything but a valid version-1 record; never another error.
        """
        if not isinstance(data, dict):
            raise InvalidLoginRecord(f"a login record is a JSON object, not {type(data).__name__}")
        version = data.get("version")
        if isinstance(version, bool) or version != STORE_VERSION:
            raise InvalidLoginRecord(f"not a version {STORE_VERSION} login record")
        _check_json_shape(data)
        server_url = _check_server_url(data.get("server_url"))
        expires_at = _number(data, "expires_at")
        saved_at = _number(data, "saved_at")
        tokens = data.get("tokens")
        if not isinstance(tokens, dict):
            raise InvalidLoginRecord("tokens is missing or not an object")
        client = data.get("client_info")
        meta = data.get("oauth_metadata")
        granted_by = data.get("granted_by")
        if granted_by is not None and (not isinstance(granted_by, str) or not granted_by):
            raise InvalidLoginRecord("granted_by is not a non-empty string")
        if client is not None and not isinstance(client, dict):
            raise InvalidLoginRecord("client_info is not an object")
        if meta is not None and not isinstance(meta, dict):
            raise InvalidLoginRecord("oauth_metadata is not an object")
        try:
            return cls(
                server_url=server_url,
                tokens=_model(OAuthToken, "tokens", tokens),
                expires_at=expires_at,
                client_info=None
                if client is None
                else _model(OAuthClientInformationFull, "client_info", client),
                oauth_metadata=None
                if meta is None
                else _model(OAuthMetadata, "oauth_metadata", meta),
                saved_at=saved_at,
                granted_by=granted_by,
            )
        except InvalidLoginRecord:
            raise
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # The SDK's models are not ours: whatever else they raise is still a bad record.
            raise InvalidLoginRecord(f"not a valid login record ({type(exc).__name__})") from None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON data (what ``from_dict`` reads back)."""
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
            "granted_by": self.granted_by,
        }

    def replace(self, **changes: Any) -> StoredLogin:
        """A copy with ``changes`` (the constructor's keywords) applied, checked again."""
        fields: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return StoredLogin(**fields)


def issuer_of(metadata: OAuthMetadata) -> str:
    """An authorization server's issuer as records compare it: without a trailing ``/``
    (hermes writes ``hermes_issuer`` so; mcp 1.x's model appends one to a bare origin)."""
    return str(metadata.issuer).rstrip("/")


_M = TypeVar("_M", OAuthToken, OAuthClientInformationFull, OAuthMetadata)


def _model(model: type[_M], key: str, value: dict[str, Any]) -> _M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        # Only the location: pydantic's message quotes the input, which may be a token.
        errors = exc.errors()
        where = ".".join(str(part) for part in errors[0]["loc"]) if errors else ""
        raise InvalidLoginRecord(f"invalid field {key}{'.' + where if where else ''}") from None
