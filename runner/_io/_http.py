"""The MCP SDK's HTTP client and its two majors: the one switch, for the child and the parent.

The SDK's majors differ in the HTTP client they are built on (``httpx2`` on mcp 2.x,
``httpx`` on 1.x) and in what a login's ``callback_handler`` returns
(``AuthorizationCodeResult`` with ``iss`` on 2.x, a ``(code, state)`` tuple on 1.x). Every
request this project makes itself (a refresh, a metadata lookup, a login's ``initialize``)
and every type it names goes through this module, so the difference lives here only.

Guarantees: importing it loads nothing the SDK's OAuth client does not load itself; no
module state beyond the constants below; ``tls_context`` builds a context and does no I/O
but reading the trust store.
"""

from __future__ import annotations

import ssl
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import mcp.shared.auth

__all__ = [
    "MCP_HEADERS",
    "MCP_INITIALIZE",
    "MCP_V2",
    "SDK_CHECKS_ISS",
    "CodeResult",
    "code_result",
    "http",
    "http_client_module",
    "post_form_bounded",
    "tls_context",
]

#: The one switch between the SDK's majors, by feature rather than by version number:
#: ``AuthorizationCodeResult`` came with 2.0 (and with it ``httpx2`` and the SDK's own RFC 9207
#: ``iss`` check). True on mcp 2.x, False on 1.x.
MCP_V2: Final[bool] = hasattr(mcp.shared.auth, "AuthorizationCodeResult")

if TYPE_CHECKING or MCP_V2:  # mypy runs on the newest SDK only: it sees the 2.x names
    import httpx2 as http
    from mcp.shared.auth import AuthorizationCodeResult as CodeResult
else:  # mcp 1.x
    import httpx as http

    CodeResult = tuple[str, str | None]  # (code, state): what 1.x's callback_handler returns

#: Whether the SDK itself refuses a callback whose ``iss`` is wrong or missing (RFC 9207).
SDK_CHECKS_ISS: Final[bool] = MCP_V2


def http_client_module() -> types.ModuleType:
    """The HTTP client module the installed SDK is built on (``httpx2`` on mcp 2.x; mcp 1.x
    uses ``httpx``), for requests the runner makes itself."""
    return http


def code_result(code: str, state: str, iss: str | None) -> CodeResult:
    """What this SDK's ``callback_handler`` returns (on 1.x without ``iss``, which the
    listener has already checked)."""
    if not MCP_V2:
        return cast("CodeResult", (code, state))
    return CodeResult(code=code, state=state, iss=iss)


def tls_context() -> ssl.SSLContext:
    """The HTTP client's default TLS context (what ``verify=True`` builds: verification on,
    its trust store, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` from the environment).

    Building it also loads the client's transport (``httpcore``), which some versions
    import only when a first client is made: a throwaway transport is made here for that,
    without any I/O."""
    context = http.create_ssl_context()
    http.AsyncHTTPTransport(verify=context)  # never opened, so nothing to close
    return context


#: An MCP ``initialize``, as a real client's first request (the one a login starts from, and
#: the one that checks new tokens), and the headers a streamable HTTP server wants with it.
MCP_INITIALIZE: Final = types.MappingProxyType(
    {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "mcp-oauth-flows", "version": "0.1"},
        },
    }
)
MCP_HEADERS: Final = types.MappingProxyType({"Accept": "application/json, text/event-stream"})


async def post_form_bounded(
    client: Any, url: str, form: Mapping[str, str], headers: Mapping[str, str], limit: int
) -> tuple[int, bytes, str | None]:
    """One form POST: the status, at most ``limit + 1`` bytes of the body (so a caller can
    tell "too large" from "exactly the limit"), and the ``Retry-After`` header. The body is
    never read past that, whatever the server sends."""
    body = bytearray()
    async with client.stream("POST", url, data=dict(form), headers=dict(headers)) as response:
        status = int(response.status_code)
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                break
        retry_after = response.headers.get("retry-after")
    return status, bytes(body), retry_after
