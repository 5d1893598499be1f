"""The fault modes of a sandbox authorization server: one frozen value per server.

A :class:`Behaviour` says how one authorization server deviates from a well-behaved one: it
denies consent, drops or falsifies the RFC 9207 ``iss`` parameter, stops advertising it,
answers ``/authorize`` slowly, hangs at the token endpoint, issues short-lived tokens, lets
``initialize`` through without a token, asks for a step-up scope on ``tools/call``, fails
refresh grants in the ways real servers and their proxies do, restricts how clients identify
themselves (authentication methods, dynamic registration, a pre-registered client, client ID
metadata documents).

Invariants:
    - The defaults are a well-behaved server; every field is checked at construction, so a
      :class:`Behaviour` that exists is in range.
    - Frozen and hashable: a server's behaviour is fixed from the moment the sandbox is built
      (sequence fields are stored as tuples, whatever sequence was given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from runner.sandbox.settings import SCOPE

__all__ = ["AUTH_METHODS", "CIMD_PORTS", "REFRESH_FAULTS", "Behaviour", "CimdMode", "RefreshFault"]

RefreshFault = Literal[
    "none",
    "server_error",
    "invalid_request",
    "html",
    "rate_limited",
    "garbled_after_rotation",
    "early_refusal",
]
"""The values of :attr:`Behaviour.refresh_fault`."""
CimdMode = Literal["off", "accept", "refuse"]
"""The values of :attr:`Behaviour.cimd`."""
RevocationMode = Literal["on", "off", "unavailable"]
"""The values of :attr:`Behaviour.revocation`."""

#: The token endpoint authentication methods the SDK's token endpoint implements.
AUTH_METHODS: Final = ("none", "client_secret_post", "client_secret_basic")
#: The default callback ports of a client ID metadata document client.
CIMD_PORTS: Final = (27890, 27891, 27892, 27893, 27894)
REFRESH_FAULTS: Final[tuple[str, ...]] = get_args(RefreshFault)
_CIMD_MODES: Final[tuple[str, ...]] = get_args(CimdMode)
_REVOCATION_MODES: Final[tuple[str, ...]] = get_args(RevocationMode)
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN_CHARS: Final = frozenset(chr(c) for c in range(0x21, 0x7F) if c not in (0x22, 0x5C))


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How one sandbox authorization server behaves (the defaults are a well-behaved one).

    Attributes:
        consent: ``"approve"`` redirects with a code; ``"deny"`` redirects with
            ``error=access_denied``.
        send_iss: Put the RFC 9207 ``iss`` parameter in authorization responses.
        advertise_iss: Advertise ``authorization_response_iss_parameter_supported`` in the
            authorization server metadata.
        wrong_iss: Send an ``iss`` that differs from the issuer (when ``send_iss``).
        authorize_delay: Seconds ``/authorize`` waits before it redirects.
        hang: The token endpoint never answers an authorization-code exchange until the
            sandbox stops (then it answers ``invalid_grant``).
        access_token_ttl: Lifetime of access tokens, in seconds.
        open_initialize: The MCP endpoint serves ``initialize`` and ``notifications/*``
            JSON-RPC messages without a token (a POST whose messages are all of those); every
            other request without a valid token gets the 401 challenge, which then also
            carries ``scope="<SCOPE>"``. A session opened without a token may go on with one.
        step_up_scope: ``tools/call`` needs this scope as well as the normal one: a valid
            token without it gets HTTP 403 with ``WWW-Authenticate: Bearer
            error="insufficient_scope", scope="<SCOPE> <step_up_scope>",
            resource_metadata="..."``. The authorization server grants it to any client that
            asks (registered, pre-registered or CIMD), never unasked.
        refresh_fault: How the token endpoint answers refresh grants (authorization-code
            exchanges stay normal): ``"none"``; ``"server_error"`` (HTTP 500),
            ``"invalid_request"`` (HTTP 400 ``{"error": "invalid_request"}``), ``"html"``
            (HTTP 400, a proxy's ``text/html`` page), all three rotating nothing;
            ``"rate_limited"`` (HTTP 429 with ``Retry-After: 1`` to the first presentation of
            each refresh token, later ones served); ``"garbled_after_rotation"`` (served and
            rotated, but answered HTTP 200 with a body that is not JSON);
            ``"early_refusal"`` (HTTP 400 ``invalid_grant`` while the access token issued with
            that refresh token is unexpired, nothing rotated; served once it has expired).
        refresh_delay: Seconds the token endpoint waits before answering a refresh grant
            (when the sandbox stops meanwhile: HTTP 503 ``temporarily_unavailable``).
        revocation: The token revocation endpoint (RFC 7009, the SDK's ``/revoke``):
            ``"on"`` advertised and served (a revoked refresh token is then refused
            ``invalid_grant``, a revoked access token 401); ``"off"``: neither advertised
            nor routed; ``"unavailable"``: advertised, but every request is answered HTTP 503
            ``temporarily_unavailable`` with ``Retry-After: 30`` and nothing is revoked.
        auth_methods: The client authentication methods the metadata advertises
            (``token_endpoint_auth_methods_supported``) and the token endpoint accepts: a
            client registered with another one is refused (HTTP 401 ``invalid_client``).
        registration: Dynamic client registration; False: no ``registration_endpoint`` in the
            metadata and no ``/register`` route.
        preregistered: ``(client_id, client_secret, token_endpoint_auth_method)`` of a client
            the authorization server knows from the start (the secret is ignored, and may be
            empty, for ``"none"``); its redirect URIs are ``http://127.0.0.1:<any
            port>/callback``.
        cimd: Client ID metadata documents. ``"accept"`` or ``"refuse"``: the metadata says
            ``client_id_metadata_document_supported`` and ``/authorize`` takes a ``client_id``
            that is an https URL with a non-root path, without fetching it, as a public client
            (auth method ``"none"``) whose redirect URIs are ``http://127.0.0.1:<p>/callback``
            and ``http://localhost:<p>/callback`` for ``p`` in ``cimd_ports``. ``"refuse"``:
            the code exchange of such a client is then answered HTTP 401 ``invalid_client``.
        cimd_ports: The callback ports of a CIMD client (see ``cimd``).
        device: The device authorization grant (RFC 8628): the metadata advertises
            ``device_authorization_endpoint`` (``/device_authorization``) and the device
            code grant, registration takes clients with that grant, and the token endpoint
            answers it: ``authorization_pending`` until the simulated person decides
            (``Sandbox.approve_device``; ``consent`` says approve or deny, ``"deny"``
            answers ``access_denied``), ``slow_down`` (and 5 s more interval) to a poll
            sooner than the interval, ``expired_token`` after ``device_expires_in``.
        device_interval: The polling interval the device authorization response names,
            in seconds (RFC 8628's default is 5; 1 keeps tests quick).
        device_expires_in: Seconds a device code lives (named in the response too).
        device_slow_down: Answer ``slow_down`` to this many first polls of each device code,
            however slowly they come.
    """

    consent: Literal["approve", "deny"] = "approve"
    send_iss: bool = True
    advertise_iss: bool = True
    wrong_iss: bool = False
    authorize_delay: float = 0.0
    hang: bool = False
    access_token_ttl: int = 3600
    open_initialize: bool = False
    step_up_scope: str | None = None
    refresh_fault: RefreshFault = "none"
    refresh_delay: float = 0.0
    revocation: RevocationMode = "on"
    auth_methods: tuple[str, ...] = AUTH_METHODS
    registration: bool = True
    preregistered: tuple[str, str, str] | None = None
    cimd: CimdMode = "off"
    cimd_ports: tuple[int, ...] = CIMD_PORTS
    device: bool = False
    device_interval: int = 1
    device_expires_in: int = 600
    device_slow_down: int = 0

    def __post_init__(self) -> None:
        if self.consent not in ("approve", "deny"):
            raise ValueError(f"consent must be 'approve' or 'deny', not {self.consent!r}")
        if not self.authorize_delay >= 0:
            raise ValueError(f"authorize_delay must be >= 0, not {self.authorize_delay!r}")
        if self.access_token_ttl < 1:
            raise ValueError(f"access_token_ttl must be >= 1 second, not {self.access_token_ttl!r}")
        if self.step_up_scope is not None and (
            not self.step_up_scope
            or not set(self.step_up_scope) <= _SCOPE_TOKEN_CHARS
            or self.step_up_scope == SCOPE
        ):
            raise ValueError(
                f"step_up_scope must be one scope token other than {SCOPE!r}, "
                f"not {self.step_up_scope!r}"
            )
        if self.refresh_fault not in REFRESH_FAULTS:
            raise ValueError(
                f"refresh_fault must be one of {REFRESH_FAULTS}, not {self.refresh_fault!r}"
            )
        if not self.refresh_delay >= 0:
            raise ValueError(f"refresh_delay must be >= 0, not {self.refresh_delay!r}")
        if self.revocation not in _REVOCATION_MODES:
            raise ValueError(
                f"revocation must be one of {_REVOCATION_MODES}, not {self.revocation!r}"
            )
        self._set_tuple("auth_methods")
        if (
            not self.auth_methods
            or not set(self.auth_methods) <= set(AUTH_METHODS)
            or len(set(self.auth_methods)) != len(self.auth_methods)
        ):
            raise ValueError(
                f"auth_methods must be distinct methods of {AUTH_METHODS}, "
                f"not {self.auth_methods!r}"
            )
        if self.preregistered is not None:
            self._set_tuple("preregistered")
            self._check_preregistered(self.preregistered)
        if self.cimd not in _CIMD_MODES:
            raise ValueError(f"cimd must be one of {_CIMD_MODES}, not {self.cimd!r}")
        self._set_tuple("cimd_ports")
        if (
            not self.cimd_ports
            or not all(type(port) is int and 0 < port < 65536 for port in self.cimd_ports)
            or len(set(self.cimd_ports)) != len(self.cimd_ports)
        ):
            raise ValueError(f"cimd_ports must be distinct TCP ports, not {self.cimd_ports!r}")
        for name in ("device_interval", "device_expires_in"):
            value = getattr(self, name)
            if type(value) is not int or value < 0 or (name == "device_expires_in" and value < 1):
                raise ValueError(f"{name} must be a whole number of seconds, not {value!r}")
        if type(self.device_slow_down) is not int or self.device_slow_down < 0:
            raise ValueError(f"device_slow_down must be >= 0, not {self.device_slow_down!r}")

    def _set_tuple(self, field: str) -> None:
        value = getattr(self, field)
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ValueError(f"{field} must be a tuple, not {value!r}")
        object.__setattr__(self, field, tuple(value))

    @staticmethod
    def _check_preregistered(preregistered: tuple[str, ...]) -> None:
        if len(preregistered) != 3 or not all(isinstance(part, str) for part in preregistered):
            raise ValueError(
                "preregistered must be (client_id, client_secret, token_endpoint_auth_method)"
            )
        client_id, secret, method = preregistered
        if not client_id:
            raise ValueError("preregistered: the client_id must not be empty")
        if method not in AUTH_METHODS:
            raise ValueError(f"preregistered: the auth method must be one of {AUTH_METHODS}")
        if method != "none" and not secret:
            raise ValueError(f"preregistered: {method} needs a client_secret")
