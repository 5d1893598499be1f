"""Local OAuth authorization servers with protected MCP servers, on loopback, for tests and demos.

What it is:
    ``Sandbox(servers=N)`` starts N independent MCP servers (the SDK's ``MCPServer``, or
    ``FastMCP`` on mcp 1.x; streamable HTTP at ``/mcp``, one tool ``whoami``). Each one embeds
    its own in-memory OAuth 2.1 authorization server at the same origin: dynamic client
    registration, PKCE (verified by the SDK's token handler), refresh tokens with rotation,
    access tokens with a TTL bound to the server's resource URL (RFC 8707), RFC 9207 ``iss`` in
    the authorization response, advertised in its metadata. Consent is automatic: ``/authorize``
    redirects straight back to the client's ``redirect_uri``, so any browser (a real headless
    one, or :meth:`Sandbox.browser`) completes a login by following redirects. Knobs
    (:class:`Behaviour`; sandbox-wide keyword arguments of :class:`Sandbox`, per-server
    ``overrides``) make a server behave as real ones do:

    - consent and ``/authorize``: ``consent`` (deny), ``authorize_delay``; RFC 9207:
      ``send_iss``, ``advertise_iss``, ``wrong_iss``;
    - the token endpoint: ``hang`` (code exchanges), ``access_token_ttl``; refresh grants
      only: ``refresh_fault`` (``server_error``, ``invalid_request``, ``html``,
      ``rate_limited``, ``garbled_after_rotation``, ``early_refusal``) and ``refresh_delay``;
    - the MCP endpoint: ``open_initialize`` (``initialize`` and notifications without a
      token), ``step_up_scope`` (``tools/call`` needs another scope: 403
      ``insufficient_scope``);
    - client identification: ``auth_methods`` (advertised and enforced), ``registration``
      (dynamic registration on or off), ``preregistered`` (a client known from the start,
      any loopback callback port), ``cimd`` and ``cimd_ports`` (client ID metadata document
      URLs accepted as client IDs, or refused at the token endpoint).

    What a server did is readable from any thread: :meth:`Sandbox.issued_tokens`,
    :meth:`Sandbox.grant_counts`, :meth:`Sandbox.refresh_presentations` (each refresh token
    presented, and how often), :meth:`Sandbox.authorized_client_ids`::

        with Sandbox(servers=3, overrides={"sandbox-2": {"consent": "deny"}}) as sb:
            sb.config()     # {"sandbox-1": {"url": "http://127.0.0.1:P/mcp"}, ...}
            authorize_many(sb.config(), browser=sb.browser, ...)
            sb.issued_tokens("sandbox-1")   # the access tokens that server issued

One concept per module:
    - :mod:`~runner.sandbox.sandbox`: :class:`Sandbox`, the façade (knobs, start/stop, what
      the caller sees).
    - :mod:`~runner.sandbox.behaviour`: :class:`Behaviour`, the fault modes.
    - :mod:`~runner.sandbox.settings`: the host spelling, paths, scope and ``AuthSettings``.
    - :mod:`~runner.sandbox.provider`: the in-memory authorization server of one server.
    - :mod:`~runner.sandbox.app`: the ASGI app of one server (the SDK's ``MCPServer``).
    - :mod:`~runner.sandbox.resource_gate`: in front of the MCP endpoint (``open_initialize``,
      ``step_up_scope``).
    - :mod:`~runner.sandbox.token_gate`: in front of the token endpoint (refresh faults and
      presentations, accepted auth methods, CIMD refusal).
    - :mod:`~runner.sandbox.asgi`: the gates' bounded body reading and replay.
    - :mod:`~runner.sandbox.serving`: sockets, uvicorn, the event loop thread;
      :class:`SandboxServer`.
    - :mod:`~runner.sandbox.browser`: the automated consent browser.
    - :mod:`~runner.sandbox.client`: using a token (:func:`list_tools_with_token`,
      :func:`whoami_with_token`).
    - :mod:`~runner.sandbox.errors`: the error tree under :class:`SandboxError`.
    - :mod:`~runner.sandbox.compat`: the one switch between the SDK's majors (1.x ``FastMCP``
      and ``httpx``, 2.x ``MCPServer`` and ``httpx2``).

Invariants (each module states its own):
    - Loopback only: every server listens on 127.0.0.1 on a socket the sandbox binds itself;
      the browser refuses any other host. Tokens and codes are never logged; error messages
      drop query strings.
    - Servers share nothing; a token of one server is unknown to every other.
    - The SDK's handlers do the OAuth work; the gates only answer what a knob says and hand
      everything else on, bodies replayed unchanged.
    - The caller's thread and event loop are never used; a sandbox starts once, and
      :meth:`Sandbox.stop` ends everything within a bound.
    - No module-level mutable state.

What it is not:
    Not a production authorization server and not a model of one: no users, no login page,
    no persistence, no TLS, no client secrets worth the name, opaque random tokens held in
    memory until the sandbox stops; a client ID metadata document is never fetched. It must
    not import the rest of ``runner`` beyond pure modules, and nothing in ``runner``'s runtime
    imports it (only ``runner.cli``, lazily, for the demo): it is the fixture that ``runner``
    is tested against.
"""

from __future__ import annotations

from runner.sandbox.behaviour import Behaviour
from runner.sandbox.client import list_tools_with_token, whoami_with_token
from runner.sandbox.errors import BrowserError, CallbackUnreachable, SandboxError, TokenRejected
from runner.sandbox.sandbox import Sandbox
from runner.sandbox.serving import SandboxServer

__all__ = [
    "Behaviour",
    "BrowserError",
    "CallbackUnreachable",
    "Sandbox",
    "SandboxError",
    "SandboxServer",
    "TokenRejected",
    "list_tools_with_token",
    "whoami_with_token",
]
