"""Using a token: an MCP client session at a sandbox server with a bearer token.

:func:`list_tools_with_token` and :func:`whoami_with_token` prove a token the way an agent
would use it: the MCP SDK's own client over streamable HTTP, with ``Authorization: Bearer``.

Invariants:
    - A 401 or 403 from the server becomes :class:`~runner.sandbox.errors.TokenRejected`,
      whatever the SDK's client raised on top of it; any other failure propagates as it is.
    - The environment's proxies are ignored (``trust_env=False``); every call has its own
      HTTP client and its own timeout.
    - Only the token's holder sees it: it goes in the header, never in a message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from runner.sandbox.compat import http
from runner.sandbox.errors import SandboxError, TokenRejected

__all__ = ["list_tools_with_token", "whoami_with_token"]


@contextlib.asynccontextmanager
async def _session_with_token(
    url: str, access_token: str, timeout: float
) -> AsyncIterator[ClientSession]:
    rejected: list[int] = []

    async def note_rejection(response: http.Response) -> None:
        if response.status_code in (401, 403):
            rejected.append(response.status_code)

    async with http.AsyncClient(
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=timeout,
        trust_env=False,
        event_hooks={"response": [note_rejection]},
    ) as client:
        try:
            async with (
                # mcp 1.x yields a third item (a session id getter); 2.x only the streams.
                streamable_http_client(url, http_client=client) as (read, write, *_),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                yield session
        except Exception as exc:
            if rejected:
                raise TokenRejected(url, rejected[0]) from exc
            raise


async def list_tools_with_token(url: str, access_token: str, *, timeout: float = 10.0) -> list[str]:
    """The names of the tools the MCP server at ``url`` lists to the bearer of ``access_token``.

    Raises:
        TokenRejected: The server answered 401 or 403.
    """
    async with _session_with_token(url, access_token, timeout) as session:
        result = await session.list_tools()
    return [tool.name for tool in result.tools]


async def whoami_with_token(url: str, access_token: str, *, timeout: float = 10.0) -> str:
    """Call the ``whoami`` tool with ``access_token``: the name of the server that answered.

    Raises:
        TokenRejected: The server answered 401 or 403.
        SandboxError: The tool did not answer with text.
    """
    async with _session_with_token(url, access_token, timeout) as session:
        result = await session.call_tool("whoami", {})
    for block in result.content:
        if isinstance(block, TextContent):
            return block.text
    raise SandboxError(f"whoami at {url} answered without text: {result!r}")
