"""Logging out: revoke the stored tokens at the server (RFC 7009), then remove the files.

``runner._core._revocation`` decides which requests go where and reads the answers; this
module holds the server's login lock, sends the POSTs and removes the files.

Guarantees:

- everything happens under the server's login lock (``holding``; the store's ``hold``), so
  a refresh in flight in another process finishes first, its rotated refresh token is the
  one revoked, and nothing is written back after the files are gone;
- a file is removed only once it has been read back as a login of the store
  (``TokenStore.read_own``): anything else there is left alone (``NotALoginFile``); a token
  directory that is a symlink is refused, never followed;
- the files are removed whatever the revocation endpoint answered (logout is the user's
  word): what could not be revoked is in the result and in one ``RevocationWarning``
  naming each token that may still be alive at the server and why; a server that offers no
  revocation endpoint is said in the result, without a warning (its tokens expire);
- each token is sent once, or twice when the first answer was a 400 ``invalid_request`` to a
  body without ``client_secret`` (``second_try``: the MCP SDK's endpoint needs the field);
- a token goes only to the revocation endpoint of the issuer that granted it
  (``StoredLogin.granted_by``); on a mismatch nothing is sent;
- the POSTs are bounded by ``timeout`` as a whole, read at most
  ``MAX_REVOCATION_RESPONSE_BYTES``, never follow a redirect and ignore proxy and
  certificate settings from the environment (``trust_env=False``), as a refresh does; the
  event loop never waits on a file or on the lock (daemon threads, ``_offloop``);
- no message shows a token or a secret.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import types
import warnings
from typing import Final

import anyio

from runner._core._revocation import (
    MAX_REVOCATION_RESPONSE_BYTES,
    LogoutResult,
    RevocationRequest,
    TokenOutcome,
    read_answer,
    revocation_plan,
    second_try,
)
from runner._core._spec import ServerSpec, check_server_name
from runner._core._stored import StoredLogin
from runner._io import _http as sdk
from runner._io._threads import in_daemon_thread
from runner._parent._offloop import holding
from runner._parent._refresher import SharedTlsContext
from runner._stores._token_store import TokenStore
from runner.errors import RevocationWarning

__all__ = ["DEFAULT_LOCK_TIMEOUT", "LogoutResult", "logout", "logout_sync", "revoke"]

logger = logging.getLogger("runner")

#: How long ``logout`` waits, by default, for another process's login or refresh of the
#: server to finish (it holds the server's login lock meanwhile).
DEFAULT_LOCK_TIMEOUT: Final = 60.0


async def logout(
    server: str | ServerSpec,
    *,
    store: TokenStore | None = None,
    timeout: float = 30.0,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    tls: SharedTlsContext | None = None,
) -> LogoutResult:
    """Log out of ``server``: revoke its stored tokens at its authorization server, refresh
    token first (when the stored metadata advertises a ``revocation_endpoint``), then
    remove its files, all under the server's login lock.

    Args:
        server: The server's name, or its ``ServerSpec`` (only the name is used).
        store: Where its login is kept (``TokenStore`` or ``HermesTokenStore``; default:
            the per-user ``TokenStore()``).
        timeout: Seconds for the revocation requests, all of them together.
        lock_timeout: Seconds to wait for the server's login lock.
        tls: A TLS context to share across calls (default: one built off the loop).

    Returns:
        What was revoked and what was not (``LogoutResult``); ``had_login`` is False when
        nothing was stored. When a revocation failed, a ``RevocationWarning`` is warned too.

    Raises:
        InvalidServerSpec: ``server`` is not a valid server name.
        NotALoginFile: the file where its login would be is not one; it was left alone.
        LoginLockTimeout: another process held the server's login lock past
            ``lock_timeout``.
        TokenStoreError: the token directory is a symlink or unsafe, the lock cannot be
            taken, or a file could not be read now or removed.
    """
    name = check_server_name(server.name if isinstance(server, ServerSpec) else server)
    store = store if store is not None else TokenStore()
    thread = f"runner-logout-{name}"
    await in_daemon_thread(thread, store.check_own_directory)
    async with holding(store, name, lock_timeout):
        stored = await in_daemon_thread(thread, functools.partial(store.read_own, name))
        if stored is None:
            # No login; a leftover mark of a refused client metadata document goes anyway.
            await in_daemon_thread(thread, functools.partial(store.delete, name))
            return LogoutResult(name, had_login=False, removed=False)
        tokens, endpoint = await revoke(stored, timeout=timeout, tls=tls)
        removed = await in_daemon_thread(thread, functools.partial(store.delete, name))
    result = LogoutResult(name, had_login=True, removed=removed, tokens=tokens, endpoint=endpoint)
    warning = result.warning()
    if warning is not None:
        logger.warning(warning)
        warnings.warn(warning, RevocationWarning, stacklevel=2)
    return result


def logout_sync(server: str | ServerSpec, **kwargs: object) -> LogoutResult:
    """``logout`` for hosts without an event loop (same arguments).

    Raises:
        RuntimeError: called from a running event loop (await ``logout`` there).
        whatever ``logout`` raises.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("logout_sync() was called from a running event loop; await logout()")
    return anyio.run(functools.partial(logout, server, **kwargs))  # type: ignore[arg-type]


async def revoke(
    stored: StoredLogin, *, timeout: float, tls: SharedTlsContext | None = None
) -> tuple[tuple[TokenOutcome, ...], str | None]:
    """Revoke ``stored``'s tokens as ``revocation_plan`` says; each token's outcome, and the
    endpoint (None when there is none). Never raises but for cancellation: a network
    failure or a timeout is an outcome (``temporary``)."""
    plan = revocation_plan(stored)
    if not plan.requests:
        return plan.unsent, plan.endpoint
    http = sdk.http_client_module()
    outcomes: list[TokenOutcome] = []
    deadline = time.monotonic() + timeout
    shared = tls if tls is not None else SharedTlsContext()
    with anyio.move_on_after(timeout):
        verify = await shared.get()
        async with http.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False, verify=verify
        ) as client:
            for request in plan.requests:
                outcome = await _send(client, http, request, deadline, timeout)
                again = second_try(request, outcome)
                if again is not None:
                    outcome = await _send(client, http, again, deadline, timeout)
                outcomes.append(outcome)
    for request in plan.requests[len(outcomes) :]:  # the deadline came first
        outcomes.append(_late(request, timeout))
    return tuple(outcomes), plan.endpoint


async def _send(
    client: object,
    http: types.ModuleType,
    request: RevocationRequest,
    deadline: float,
    timeout: float,
) -> TokenOutcome:
    """One POST of ``request`` within ``deadline``; its outcome, never an exception."""
    left = deadline - time.monotonic()
    with anyio.move_on_after(max(0.0, left)):
        try:
            status, body, retry_after = await sdk.post_form_bounded(
                client, request.url, request.form, request.headers, MAX_REVOCATION_RESPONSE_BYTES
            )
        except http.TimeoutException:
            return _late(request, timeout)
        except (http.HTTPError, OSError, ValueError) as exc:
            # ValueError: the client's InvalidURL. Connection refused lands here: down.
            return TokenOutcome(
                request.token,
                revoked=False,
                why=f"the revocation request failed ({type(exc).__name__}): is the server down?",
                temporary=True,
            )
        return read_answer(request.token, status, body, retry_after, now=time.time())
    return _late(request, timeout)


def _late(request: RevocationRequest, timeout: float) -> TokenOutcome:
    return TokenOutcome(
        request.token,
        revoked=False,
        why=f"the revocation endpoint did not answer within {timeout:g} s",
        temporary=True,
    )
