"""The authorization server of one sandbox server: its in-memory clients, codes and tokens.

:class:`Provider` is the SDK's ``OAuthAuthorizationServerProvider`` for one server: dynamic
client registration, single-use authorization codes (PKCE is verified by the SDK's token
handler), refresh tokens with rotation, access tokens with a TTL bound to the server's
resource URL (RFC 8707), and the RFC 9207 ``iss`` parameter in authorization responses. Its
:class:`~runner.sandbox.behaviour.Behaviour` makes it deny, delay, hang or falsify ``iss``,
grant a step-up scope (only when asked for), refuse early refreshes, know a pre-registered
client (redirect URIs on any loopback port at ``/callback``), or take client ID metadata
document URLs as client IDs (public clients; nothing is fetched).

Invariants:
    - Servers share nothing: each has its own provider instance, so a token of one server is
      unknown to every other.
    - It runs on the sandbox loop only, and nothing awaits between a check and its update, so
      single-use codes and refresh rotation hold under concurrent requests. The set of issued
      access tokens, the grant counters, the refresh-token presentations and the authorized
      client IDs are the only things read from other threads, under a lock, as copies;
      :meth:`Provider.forget_refresh_tokens` runs on the loop too (``ServerLoop.call``).
    - Counters (:meth:`Provider.grant_counts`): ``authorize`` counts ``/authorize``
      requests that issued a code; ``authorization_code`` and ``refresh_token`` count the
      token grants served (tokens issued). :meth:`Provider.refresh_presentations` counts what
      the token endpoint was shown (:meth:`Provider.note_refresh_presentation`, called by the
      token gate for every refresh grant, whatever the answer).
    - With a step-up scope, every client's scope is :data:`~runner.sandbox.settings.SCOPE`
      plus the step-up scope, whatever it registered with, so it can ask for the step-up
      scope later; a code carries the step-up scope only when the authorization request
      asked for it. Without one, a client's scope is what it registered.
    - Whatever a knob holds back (a delayed ``/authorize``, a hung token exchange) is
      released when the sandbox's ``stopping`` event is set.
    - Tokens are opaque random strings held in memory until the sandbox stops; they are
      never logged.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.shared.auth import InvalidRedirectUriError, OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, AnyUrl

from runner.sandbox.behaviour import Behaviour
from runner.sandbox.compat import INVALID_TARGET
from runner.sandbox.settings import HOST, SCOPE

__all__ = ["DEVICE_GRANT", "Provider", "is_cimd_client_id"]

_CODE_TTL: Final = 300.0
#: The counters :meth:`Provider.grant_counts` reports, all present from the start.
COUNTERS: Final = ("authorize", "authorization_code", "refresh_token")
_SUBJECT: Final = "sandbox-user"
_GRANT_TYPES: Final = ("authorization_code", "refresh_token")
_CALLBACK_PATH: Final = "/callback"
#: The device code grant type (RFC 8628 §3.4).
DEVICE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
#: What ``slow_down`` adds to a device code's interval (RFC 8628 §3.5).
_SLOW_DOWN_STEP: Final = 5
# User codes: RFC 8628 §6.1's consonants, no vowels (no words), no look-alikes.
_USER_CODE_CHARS: Final = "BCDFGHJKLMNPQRSTVWXZ"


@dataclass
class _DeviceGrant:
    """One device authorization, until it is answered with tokens or an error."""

    device_code: str
    user_code: str
    client_id: str
    scopes: list[str]
    resource: str
    expires_at: float  # time.monotonic()
    interval: float
    last_poll: float  # time.monotonic() of the last poll (or of the authorization)
    polls: int = 0
    decision: str | None = None  # "approve" or "deny", once the person acted


# The SDK's token models gained their RFC 8707 ``resource`` and ``subject`` fields at
# different releases (measured: mcp 1.26 has neither ``subject`` nor ``claims`` and
# ``AuthorizationCode`` has no ``subject``; mcp 2.0.0's ``RefreshToken`` has no ``resource``;
# 2.3 has all of them). Pydantic drops unknown keyword arguments, so the sandbox declares
# every field it reads on its own subclasses: the same models on every supported SDK.
class _AuthorizationCode(AuthorizationCode):
    subject: str | None = None


class _AccessToken(AccessToken):
    resource: str | None = None
    subject: str | None = None
    claims: dict[str, Any] | None = None
    refresh_token: str | None = None


class _RefreshToken(RefreshToken):
    resource: str | None = None
    subject: str | None = None
    access_token: str | None = None
    access_expires_at: int | None = None  # of the access token issued with it


class _LoopbackClient(OAuthClientInformationFull):
    """A pre-registered client: any ``http://127.0.0.1:<port>/callback`` is its redirect URI
    (RFC 8252 section 7.3: a native client's loopback port is not known in advance)."""

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is None:
            raise InvalidRedirectUriError("redirect_uri is required for this client")
        parts = urlsplit(str(redirect_uri))
        try:
            port = parts.port
        except ValueError:
            port = None
        if (
            parts.scheme != "http"
            or parts.hostname != HOST
            or port is None
            or parts.path != _CALLBACK_PATH
            or parts.query
            or parts.fragment
        ):
            raise InvalidRedirectUriError(
                f"redirect_uri must be http://{HOST}:<port>{_CALLBACK_PATH} for this client"
            )
        return redirect_uri


def is_cimd_client_id(client_id: str) -> bool:
    """Whether ``client_id`` is a client ID metadata document URL: https, a host, a path
    other than ``/``."""
    parts = urlsplit(client_id)
    return parts.scheme == "https" and bool(parts.hostname) and parts.path not in ("", "/")


def _same_resource(a: str, b: str) -> bool:
    """Compare resource URLs as the SDK's bearer check does: normalized, trailing slash aside."""
    try:
        return str(AnyHttpUrl(a)).removesuffix("/") == str(AnyHttpUrl(b)).removesuffix("/")
    except ValueError:
        return False


class Provider(OAuthAuthorizationServerProvider[_AuthorizationCode, _RefreshToken, _AccessToken]):
    """In-memory authorization server of one sandbox server.

    Runs on the sandbox loop only; nothing awaits between a check and its update, so
    single-use codes and refresh rotation hold under concurrent requests. The set of issued
    access tokens is also read from other threads, under ``_issued_lock``.
    """

    def __init__(
        self, *, issuer: str, resource: str, behaviour: Behaviour, stopping: asyncio.Event
    ) -> None:
        self._issuer = issuer
        self._resource = resource
        self._behaviour = behaviour
        self._stopping = stopping
        step_up = behaviour.step_up_scope
        self._step_up = step_up
        self._client_scope = f"{SCOPE} {step_up}" if step_up else SCOPE
        self._clients: dict[str, OAuthClientInformationFull] = {}
        self._codes: dict[str, _AuthorizationCode] = {}
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._issued_lock = threading.Lock()
        # Under _issued_lock:
        self._issued: set[str] = set()
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._presentations: dict[str, int] = {}
        self._authorized: list[str] = []
        self._device_polls: list[tuple[float, str]] = []
        self._device_codes: set[str] = set()
        # Loop thread only:
        self._devices: dict[str, _DeviceGrant] = {}
        self._user_codes: dict[str, str] = {}
        if behaviour.preregistered is not None:
            client_id, secret, method = behaviour.preregistered
            self._clients[client_id] = _LoopbackClient(
                client_id=client_id,
                client_secret=secret if method != "none" else None,
                token_endpoint_auth_method=method,
                redirect_uris=[AnyUrl(f"http://{HOST}{_CALLBACK_PATH}")],  # see the class
                grant_types=[*_GRANT_TYPES, *([DEVICE_GRANT] if behaviour.device else [])],
                response_types=["code"],
                scope=self._client_scope,
                client_name="sandbox pre-registered client",
            )

    def issued(self) -> set[str]:
        with self._issued_lock:
            return set(self._issued)

    def grant_counts(self) -> Mapping[str, int]:
        """A copy of the counters (any thread)."""
        with self._issued_lock:
            return types.MappingProxyType(dict(self._counts))

    def refresh_presentations(self) -> Mapping[str, int]:
        """A copy of how many times each refresh token was presented (any thread)."""
        with self._issued_lock:
            return types.MappingProxyType(dict(self._presentations))

    def note_refresh_presentation(self, refresh_token: str) -> int:
        """Record one presentation of ``refresh_token`` at the token endpoint; how many
        there have been, this one included."""
        with self._issued_lock:
            seen = self._presentations.get(refresh_token, 0) + 1
            self._presentations[refresh_token] = seen
            return seen

    def authorized_client_ids(self) -> list[str]:
        """The client ID of every authorization request that issued a code, in order (a copy;
        any thread)."""
        with self._issued_lock:
            return list(self._authorized)

    def _count(self, counter: str) -> None:
        with self._issued_lock:
            self._counts[counter] += 1

    def lookup_client(self, client_id: str) -> OAuthClientInformationFull | None:
        """The client called ``client_id``: registered, pre-registered, or (when the behaviour
        takes them) described by a client ID metadata document at that URL."""
        client = self._clients.get(client_id)
        if client is None and self._behaviour.cimd != "off" and is_cimd_client_id(client_id):
            client = self._cimd_client(client_id)
        return client

    def _cimd_client(self, client_id: str) -> OAuthClientInformationFull:
        """The public client a metadata document URL stands for (the document is not fetched)."""
        ports = self._behaviour.cimd_ports
        return OAuthClientInformationFull(
            client_id=client_id,
            token_endpoint_auth_method="none",  # noqa: S106 - a method name
            redirect_uris=[
                AnyUrl(f"http://{host}:{port}{_CALLBACK_PATH}")
                for port in ports
                for host in (HOST, "localhost")
            ],
            grant_types=list(_GRANT_TYPES),
            response_types=["code"],
            scope=self._client_scope,
        )

    # -- the device authorization grant (RFC 8628; ``runner.sandbox.device``) -----------------

    def valid_scopes(self) -> set[str]:
        """The scopes a client may register and ask for."""
        return {SCOPE, *([self._step_up] if self._step_up else [])}

    def new_client(self, request: Mapping[str, Any], method: str) -> OAuthClientInformationFull:
        """A client for a device registration ``request`` (a JSON object), with a new id
        and, unless ``method`` is ``"none"``, a new secret. Raises ``ValidationError``."""
        secret = None if method == "none" else secrets.token_urlsafe(32)
        return OAuthClientInformationFull.model_validate(
            {
                **request,
                "client_id": secrets.token_urlsafe(16),
                "client_secret": secret,
                "client_id_issued_at": int(time.time()),
                "token_endpoint_auth_method": method,
            }
        )

    def start_device(
        self, client: OAuthClientInformationFull, scope: str | None, resource: str | None
    ) -> tuple[int, dict[str, Any]]:
        """The device authorization endpoint's answer to ``client`` (loop thread only)."""
        if DEVICE_GRANT not in (client.grant_types or []):
            return 400, {"error": "unauthorized_client"}
        if resource is not None and not _same_resource(resource, self._resource):
            return 400, {"error": INVALID_TARGET}
        scopes = scope.split() if scope else self._default_scopes(client)
        if not set(scopes) <= self.valid_scopes():
            return 400, {"error": "invalid_scope"}
        behaviour = self._behaviour
        device_code = secrets.token_urlsafe(32)
        letters = "".join(secrets.choice(_USER_CODE_CHARS) for _ in range(8))
        user_code = f"{letters[:4]}-{letters[4:]}"
        now = time.monotonic()
        self._devices[device_code] = _DeviceGrant(
            device_code=device_code,
            user_code=user_code,
            client_id=client.client_id or "",
            scopes=scopes,
            resource=resource or self._resource,
            expires_at=now + behaviour.device_expires_in,
            interval=behaviour.device_interval,
            last_poll=now,
        )
        self._user_codes[user_code] = device_code
        with self._issued_lock:
            self._device_codes.add(device_code)
        page = f"{self._issuer}/device"
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": page,
            "verification_uri_complete": f"{page}?user_code={user_code}",
            "expires_in": behaviour.device_expires_in,
            "interval": behaviour.device_interval,
        }

    def decide_device(self, user_code: str) -> bool:
        """The simulated person enters ``user_code`` and approves (or, with ``consent``
        ``"deny"``, denies) it; False if no pending device login has that code (loop
        thread only)."""
        grant = self._devices.get(self._user_codes.get(user_code, ""))
        if grant is None or grant.decision is not None:
            return False
        grant.decision = self._behaviour.consent
        return True

    def device_polls(self) -> list[tuple[float, str]]:
        """``(time.monotonic(), answer)`` of every device code poll, in order (a copy; any
        thread). ``answer`` is the error code sent, or ``"tokens"``."""
        with self._issued_lock:
            return list(self._device_polls)

    def issued_device_codes(self) -> set[str]:
        """Every device code issued so far (a copy; any thread; held in memory only)."""
        with self._issued_lock:
            return set(self._device_codes)

    def poll_device(
        self, client: OAuthClientInformationFull, device_code: str
    ) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer to one ``device_code`` grant (loop thread only)."""
        status, answer = self._poll_device(client, device_code)
        with self._issued_lock:
            self._device_polls.append((time.monotonic(), str(answer.get("error", "tokens"))))
        return status, answer

    def _poll_device(
        self, client: OAuthClientInformationFull, device_code: str
    ) -> tuple[int, dict[str, Any]]:
        grant = self._devices.get(device_code)
        if grant is None or grant.client_id != client.client_id:
            return 400, {"error": "invalid_grant"}
        now = time.monotonic()
        if now >= grant.expires_at:
            self._forget_device(grant)
            return 400, {"error": "expired_token"}
        grant.polls += 1
        too_fast = now - grant.last_poll < grant.interval * 0.9  # some slack for the clocks
        grant.last_poll = now
        if too_fast or grant.polls <= self._behaviour.device_slow_down:
            grant.interval += _SLOW_DOWN_STEP
            return 400, {"error": "slow_down"}
        if grant.decision is None:
            return 400, {"error": "authorization_pending"}
        self._forget_device(grant)
        if grant.decision == "deny":
            return 400, {"error": "access_denied"}
        tokens = self._issue(grant.client_id, grant.scopes, grant.resource, _SUBJECT)
        return 200, tokens.model_dump(mode="json", exclude_none=True)

    def _forget_device(self, grant: _DeviceGrant) -> None:
        self._devices.pop(grant.device_code, None)
        self._user_codes.pop(grant.user_code, None)

    def forget_refresh_tokens(self) -> None:
        """Forget every refresh token issued so far, as when the user revokes access (loop
        thread only). Access tokens stay valid until they expire."""
        self._refresh.clear()
        for access in self._access.values():
            access.refresh_token = None

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.lookup_client(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        if client_info.client_id is None:  # the SDK's handler always sets one
            raise ValueError("client_id missing")
        if self._step_up is not None:
            # The client may ask for the step-up scope later (MCP's step-up authorization),
            # whatever it registered with; the registration response still says what it
            # asked for.
            client_info = client_info.model_copy(update={"scope": self._client_scope})
        self._clients[client_info.client_id] = client_info

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        behaviour = self._behaviour
        if behaviour.authorize_delay > 0 and await self.stopped_within(behaviour.authorize_delay):
            raise AuthorizeError("temporarily_unavailable", "the sandbox is stopping")
        if params.resource is not None and not _same_resource(params.resource, self._resource):
            raise AuthorizeError(INVALID_TARGET, f"this server issues tokens for {self._resource}")
        redirect_uri = str(params.redirect_uri)
        iss = self._iss_parameter()
        if behaviour.consent == "deny":
            return construct_redirect_uri(
                redirect_uri,
                error="access_denied",
                error_description="the sandbox user denied access",
                state=params.state,
                iss=iss,
            )
        code = secrets.token_urlsafe(32)
        with self._issued_lock:
            self._counts["authorize"] += 1
            self._authorized.append(client.client_id or "")
        self._codes[code] = _AuthorizationCode(
            code=code,
            scopes=params.scopes or self._default_scopes(client),
            expires_at=time.time() + _CODE_TTL,
            client_id=client.client_id or "",
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource or self._resource,
            subject=_SUBJECT,
        )
        return construct_redirect_uri(redirect_uri, code=code, state=params.state, iss=iss)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> _AuthorizationCode | None:
        code = self._codes.get(authorization_code)
        if code is None or code.client_id != client.client_id:
            return None
        return code

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: _AuthorizationCode
    ) -> OAuthToken:
        if self._behaviour.hang:
            await self._stopping.wait()
            raise TokenError("invalid_grant", "the sandbox is stopping")
        if self._codes.pop(authorization_code.code, None) is None:
            raise TokenError("invalid_grant", "authorization code was already used")
        self._count("authorization_code")
        return self._issue(
            authorization_code.client_id,
            authorization_code.scopes,
            authorization_code.resource,
            authorization_code.subject,
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> _RefreshToken | None:
        token = self._refresh.get(refresh_token)
        if token is None or token.client_id != client.client_id:
            return None
        return token

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: _RefreshToken,
        scopes: list[str],
    ) -> OAuthToken:
        if (
            self._behaviour.refresh_fault == "early_refusal"
            and refresh_token.access_expires_at is not None
            and time.time() <= refresh_token.access_expires_at
        ):
            raise TokenError("invalid_grant", "the access token has not expired yet")
        # Rotation: a refresh token works once. The access token it came with stays valid
        # until it expires.
        if self._refresh.pop(refresh_token.token, None) is None:
            raise TokenError("invalid_grant", "refresh token was already used")
        self._count("refresh_token")
        return self._issue(
            refresh_token.client_id, scopes, refresh_token.resource, refresh_token.subject
        )

    async def load_access_token(self, token: str) -> _AccessToken | None:
        access = self._access.get(token)
        if access is None:
            return None
        if access.expires_at is not None and access.expires_at < time.time():
            del self._access[token]
            return None
        return access

    async def revoke_token(self, token: _AccessToken | _RefreshToken) -> None:
        if isinstance(token, _AccessToken):
            self._access.pop(token.token, None)
            if token.refresh_token is not None:
                self._refresh.pop(token.refresh_token, None)
        else:
            self._refresh.pop(token.token, None)
            if token.access_token is not None:
                self._access.pop(token.access_token, None)

    def _issue(
        self, client_id: str, scopes: list[str], resource: str | None, subject: str | None
    ) -> OAuthToken:
        ttl = self._behaviour.access_token_ttl
        access = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        resource = resource or self._resource
        expires_at = int(time.time()) + ttl
        self._access[access] = _AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=expires_at,
            resource=resource,
            subject=subject,
            claims={"iss": self._issuer},
            refresh_token=refresh,
        )
        self._refresh[refresh] = _RefreshToken(
            token=refresh,
            client_id=client_id,
            scopes=scopes,
            resource=resource,
            subject=subject,
            access_token=access,
            access_expires_at=expires_at,
        )
        with self._issued_lock:
            self._issued.add(access)
        return OAuthToken(
            access_token=access,
            expires_in=ttl,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    def _iss_parameter(self) -> str | None:
        if not self._behaviour.send_iss:
            return None
        if self._behaviour.wrong_iss:
            return f"{self._issuer}/not-this-issuer"
        return self._issuer

    def _default_scopes(self, client: OAuthClientInformationFull) -> list[str]:
        """What a code grants when the request named no scope: the client's scope, without
        the step-up scope (which is granted only when asked for)."""
        scopes = [s for s in (client.scope or "").split() if s != self._step_up]
        return scopes or [SCOPE]

    async def stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds`` or until the sandbox stops; True if it stopped."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
