"""What to log in to (``ServerSpec``) and what came of it (``FlowResult``). Pure.

A ``ServerSpec`` checks every field when it is made: an invalid one is an
``InvalidServerSpec`` naming the server and the field, never silently ignored. Reading a
hermes-style entry into one is ``runner._core._entries``'s.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mcp.shared.auth import OAuthToken

from runner._core._identity import AUTH_METHODS, document_url_problem
from runner._core._loopback import DEFAULT_LOOPBACK_HOST, LOOPBACK_HOSTS
from runner._core._messages import FLOWS
from runner.errors import FlowError, InvalidServerSpec

__all__ = ["MAX_URL_CHARS", "FlowResult", "ServerSpec", "check_server_name", "url_problem"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: The longest server URL accepted (what a stored login's ``server_url`` may be).
MAX_URL_CHARS = 8192


@dataclass(frozen=True)
class ServerSpec:
    """One MCP server to log in to.

    Attributes:
        name: A short identifier (letters, digits, ``.``, ``_``, ``-``); it names the
            token file and the lease owner.
        url: The MCP server's URL (http or https).
        scope: Scopes to ask for, always as configured (never replaced by the SDK's choice);
            None asks for what the server's challenge names, else what it advertises.
        client_id: A pre-registered client; None identifies by ``client_metadata_url`` or
            registers dynamically.
        client_secret: The pre-registered client's secret, if it has one.
        client_name: The name shown on the consent screen.
        redirect_port: 0 for any free port, else exactly this one (a pre-registered
            redirect URI pins its port).
        redirect_host: ``127.0.0.1`` (default), ``::1`` or ``localhost``.
        callback_path: The redirect URI's path.
        timeout: Seconds this login may take; None uses ``authorize_many``'s timeout.
        token_endpoint_auth_method: How the client authenticates at the token endpoint:
            ``none``, ``client_secret_basic`` or ``client_secret_post``; None chooses
            (``none`` without a secret, else what the server supports: ``runner._core._identity``).
        client_metadata_url: A Client ID Metadata Document (an https URL whose document
            declares this client's redirect URIs), presented as the client id when the
            server supports it; else the client registers dynamically.
        client_metadata_ports: The loopback ports the document's redirect URIs name; a
            login leases the first free one (required with ``client_metadata_url``).
        flow: ``"browser"`` (default): the authorization code grant, a browser redirected
            to the loopback listener. ``"device"``: the device authorization grant (RFC
            8628): the person opens the server's verification address on any device and
            enters a code (``runner.events.DeviceCodeIssued``); no browser is opened and no
            callback is needed, so it works where the browser cannot reach this machine.
            The server must advertise a ``device_authorization_endpoint``.
    """

    name: str
    url: str
    scope: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    client_name: str = "MCP client"
    redirect_port: int = 0
    redirect_host: str = DEFAULT_LOOPBACK_HOST
    callback_path: str = "/callback"
    timeout: float | None = None
    token_endpoint_auth_method: str | None = None
    client_metadata_url: str | None = None
    client_metadata_ports: frozenset[int] = frozenset()
    flow: str = "browser"

    def __post_init__(self) -> None:
        if isinstance(self.client_metadata_ports, list | tuple | set):
            ports = self.client_metadata_ports
            with contextlib.suppress(TypeError):  # an unhashable item: said by _check_spec
                object.__setattr__(self, "client_metadata_ports", frozenset(ports))
        _check_spec(self)


def check_server_name(name: object) -> str:
    """``name`` if it is a valid server name, else ``InvalidServerSpec``.

    A name is 1-64 ASCII letters, digits, ``.``, ``_`` or ``-``, starting with a letter or a
    digit. It names the server's token file (``<name>.json``) and its lease owner, so the rule
    is also what keeps a name inside the token store's directory: no ``/``, no NUL, no ``.``
    or ``..``, nothing a filesystem could read as a path.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidServerSpec(
            f"server {_shown(name)}: a name is 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _shown(value: object) -> str:
    """``repr(value)``, cut short: a message is one readable line, whatever it quotes."""
    text = repr(value) if isinstance(value, str) else f"of type {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as an MCP server's address, or None when it is usable.

    Usable: at most ``MAX_URL_CHARS`` characters, none of them whitespace, a control
    character or a lone surrogate (``urlsplit`` would silently drop a tab or a newline that
    the HTTP client then refuses mid-login); scheme http or https; a host; a port, when one
    is written, from 1 to 65535; no user info (a password in a URL ends up in logs and
    process listings, and the SDK does not send it anyway).
    """
    if len(url) > MAX_URL_CHARS:
        return f"is longer than {MAX_URL_CHARS} characters"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "holds whitespace, a control character or a lone surrogate"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        port = parts.port
    except ValueError:  # an unclosed "[", a port out of range or not a number
        return "is not a valid URL (its host or port cannot be read)"
    if parts.scheme not in ("http", "https") or not hostname:
        return "is not an http(s) URL with a host"
    if port == 0:
        return "names port 0; a server's port is 1-65535"
    if parts.username is not None or parts.password is not None:
        return "holds user info (user@ or user:password@); leave credentials out of the URL"
    return None


def _check_spec(spec: ServerSpec) -> None:
    check_server_name(spec.name)
    where = f"server {spec.name!r}"
    _expect_type(where, "url", spec.url, str)
    problem = url_problem(spec.url)
    if problem is not None:
        # A URL with user info may carry a password: it is not quoted.
        shown = "(not shown)" if "user info" in problem else _shown(spec.url)
        raise InvalidServerSpec(f"{where}: url {shown} {problem}")
    for key in ("scope", "client_id", "client_secret"):
        _expect_type(where, key, getattr(spec, key), (str, type(None)))
    _expect_type(where, "client_name", spec.client_name, str)
    method = spec.token_endpoint_auth_method
    _expect_type(where, "token_endpoint_auth_method", method, (str, type(None)))
    if spec.client_secret is not None and spec.client_id is None:
        raise InvalidServerSpec(f"{where}: client_secret is set but client_id is not")
    if (
        not isinstance(spec.redirect_port, int)
        or isinstance(spec.redirect_port, bool)
        or not 0 <= spec.redirect_port <= 65535
    ):
        raise InvalidServerSpec(f"{where}: redirect_port must be 0 (any) or a port number")
    # The canonical spelling only (no "[::1]", no "LOCALHOST"): runner._core._port_policy
    # compares it with stored redirect URIs and hands it to portlease as written.
    if spec.redirect_host not in LOOPBACK_HOSTS:
        raise InvalidServerSpec(
            f"{where}: redirect_host {spec.redirect_host!r} is not loopback; "
            f"use one of {', '.join(LOOPBACK_HOSTS)} (RFC 8252 §7.3)"
        )
    _expect_type(where, "callback_path", spec.callback_path, str)
    if not spec.callback_path.startswith("/") or any(c in spec.callback_path for c in "?#% "):
        raise InvalidServerSpec(f"{where}: callback_path must be a plain path such as /callback")
    if method is not None and method not in AUTH_METHODS:
        raise InvalidServerSpec(
            f"{where}: token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}"
        )
    secret_method = method in ("client_secret_basic", "client_secret_post")
    if secret_method and spec.client_id is not None and spec.client_secret is None:
        raise InvalidServerSpec(
            f"{where}: token_endpoint_auth_method {method} needs a client_secret"
        )
    _check_client_metadata(spec, where)
    if spec.flow not in FLOWS:
        raise InvalidServerSpec(
            f"{where}: flow must be 'browser' or 'device', not {_shown(spec.flow)}"
        )
    if spec.timeout is not None and (
        not isinstance(spec.timeout, int | float)
        or isinstance(spec.timeout, bool)
        or not 0 < spec.timeout < math.inf  # inf cannot cross the pipe (JSON has no inf)
    ):
        raise InvalidServerSpec(f"{where}: timeout must be a positive, finite number of seconds")


def _check_client_metadata(spec: ServerSpec, where: str) -> None:
    url = spec.client_metadata_url
    ports = spec.client_metadata_ports
    _expect_type(where, "client_metadata_url", url, (str, type(None)))
    if not isinstance(ports, frozenset) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p <= 65535 for p in ports
    ):
        raise InvalidServerSpec(f"{where}: client_metadata_ports must be a set of port numbers")
    if url is None:
        if ports:
            raise InvalidServerSpec(f"{where}: client_metadata_ports needs a client_metadata_url")
        return
    problem = document_url_problem(url)
    if problem is not None:
        raise InvalidServerSpec(f"{where}: client_metadata_url {_shown(url)}: {problem}")
    if not ports or len(ports) > 64:
        raise InvalidServerSpec(
            f"{where}: client_metadata_url needs client_metadata_ports, the 1-64 loopback "
            "ports its document's redirect URIs name"
        )


def _expect_type(where: str, key: str, value: object, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind):
        raise InvalidServerSpec(f"{where}: {key} has the wrong type ({type(value).__name__})")


@dataclass(frozen=True)
class FlowResult:
    """The outcome of one login; ``authorize_many`` returns one per server, always.

    Attributes:
        name: The server's name.
        ok: True when the server can be used now: ``tokens`` holds fresh tokens, or the
            server did not ask for a login (``deferred``).
        tokens: The SDK's ``OAuthToken`` (never shown in ``repr``); None when deferred.
        error: The ``FlowError`` that ended the login, when ``ok`` is False.
        port: The loopback port the login listened on, if it got that far.
        interactive: Whether a person had to act in a browser.
        elapsed: Seconds from start to outcome.
        deferred: The server answered ``initialize`` without asking for a login: no login is
            needed yet (``ok`` and no ``tokens``). ``runner.provider`` logs in when the
            server first challenges a request.
    """

    name: str
    ok: bool
    tokens: OAuthToken | None = field(default=None, repr=False)
    error: FlowError | None = None
    port: int | None = None
    interactive: bool = False
    elapsed: float = 0.0
    deferred: bool = False
