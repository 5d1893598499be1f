"""Refreshing a stored login in the parent: the POST to the token endpoint.

The renewal policy (``runner._core._renewal``) decides when; ``runner._core._refresh`` writes
the request and reads the answer; this module sends it, bounded.

Invariants:

- ``refresh_login`` sends the refresh token again only where the server used nothing up:
  once more after a first ``invalid_client`` (hermes-agent #109852: one is not proof),
  and after a 429 whose ``Retry-After`` ends within the timeout (at most
  ``MAX_REFRESH_SENDS`` sends in all); never after a 5xx, a network error or an unreadable
  answer, which may have rotated it;
- ``refresh_login`` is bounded by its ``timeout`` as a whole, reads at most
  ``MAX_TOKEN_RESPONSE_BYTES``, never follows a redirect, ignores proxy and certificate
  settings from the environment (``trust_env=False``), and raises only ``RefreshRefused``
  or ``RefreshFailed`` (and cancellation);
- one TLS context per ``SharedTlsContext``, built off the event loop at the first refresh.
"""

from __future__ import annotations

import ssl
import time
from typing import Final

import anyio

from runner._core._refresh import (
    MAX_TOKEN_RESPONSE_BYTES,
    refresh_request,
    refreshed_login,
    retry_delay,
)
from runner._core._stored import StoredLogin
from runner._io import _http as sdk
from runner._io._threads import in_daemon_thread
from runner.errors import OAuthProtocolError, RefreshFailed, RefreshRefused

__all__ = ["MAX_REFRESH_SENDS", "SharedTlsContext", "refresh_login"]

#: The most times one refresh sends its refresh token: after a first ``invalid_client`` and
#: after a 429, when the server has used nothing up.
MAX_REFRESH_SENDS: Final = 3
#: The pause before sending again after a first ``invalid_client``, at most.
_INVALID_CLIENT_PAUSE: Final = 1.0


class SharedTlsContext:
    """One TLS context for many refreshes (of a ``Runner``, or of a provider), built at
    the first one and reused.

    Building the HTTP client's default context parses its whole trust store: 17-75 ms of
    CPU here, which a new client per refresh paid every time, on the event loop. It is
    built in a daemon thread instead, once. It is ``runner._child._sdk.tls_context()``: the trust
    store and ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as they are at that first refresh.
    """

    def __init__(self) -> None:
        self._context: ssl.SSLContext | None = None
        self._building = anyio.Lock()

    async def get(self) -> ssl.SSLContext:
        async with self._building:
            if self._context is None:
                self._context = await in_daemon_thread("runner-tls-context", sdk.tls_context)
            return self._context


async def refresh_login(
    stored: StoredLogin, *, timeout: float, tls: SharedTlsContext | None = None
) -> StoredLogin:
    """Refresh ``stored`` at its token endpoint; the new login (not saved: the caller
    saves it).

    POSTs with the SDK's own HTTP client module (``runner._child._sdk.http_client_module``), bounded
    by ``timeout`` seconds as a whole, no redirects followed, no environment proxies; over
    ``tls``'s context when given (else the client builds its own). The refresh token is sent
    again only after a first ``invalid_client`` and after a 429 (see the module docstring).

    Raises:
        RefreshRefused: the server said the refresh token is dead (a new login is needed).
        RefreshFailed: the refresh did not work and nothing was condemned (``temporary``:
            try again later); also when ``stored`` cannot be refreshed at all.
    """
    try:
        request = refresh_request(stored)
    except OAuthProtocolError as exc:
        raise RefreshFailed(exc.message, temporary=False) from None
    http = sdk.http_client_module()
    where = stored.server_url
    deadline = time.monotonic() + timeout
    invalid_client_seen = False
    try:
        with anyio.fail_after(timeout):
            verify: ssl.SSLContext | bool = True if tls is None else await tls.get()
            async with http.AsyncClient(
                timeout=timeout, follow_redirects=False, trust_env=False, verify=verify
            ) as client:
                for sends in range(1, MAX_REFRESH_SENDS + 1):
                    now = time.time()  # before sending: the lifetime counts from no later
                    status, body, retry_after = await sdk.post_form_bounded(
                        client, request.url, request.form, request.headers, MAX_TOKEN_RESPONSE_BYTES
                    )
                    try:
                        return refreshed_login(stored, status, body, now=now)
                    except RefreshRefused as exc:
                        if exc.code != "invalid_client" or invalid_client_seen:
                            raise
                        invalid_client_seen = True
                        pause: float | None = _INVALID_CLIENT_PAUSE
                        failure: Exception = exc
                    except RefreshFailed as exc:
                        pause = retry_delay(status, retry_after, now=time.time())
                        failure = exc
                    left = deadline - time.monotonic()
                    if pause is None or sends == MAX_REFRESH_SENDS or pause >= left:
                        raise failure
                    await anyio.sleep(pause)
    except TimeoutError:
        raise RefreshFailed(
            f"{where}: the token endpoint did not answer a refresh within {timeout:g} s; "
            "the stored login was kept",
            temporary=True,
        ) from None
    except http.TimeoutException:
        raise RefreshFailed(
            f"{where}: the token endpoint did not answer a refresh in time; "
            "the stored login was kept",
            temporary=True,
        ) from None
    except (http.HTTPError, OSError, ValueError) as exc:  # ValueError: httpx's InvalidURL
        raise RefreshFailed(
            f"{where}: the refresh request failed ({type(exc).__name__}); "
            "the stored login was kept",
            temporary=True,
        ) from None
    raise AssertionError("unreachable: the last send returns or raises")  # pragma: no cover
