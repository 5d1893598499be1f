"""The automated consent browser: carries an authorization URL to the client's callback.

The sandbox's ``/authorize`` consents at once by redirecting, so a browser completes a login
by following redirects. :class:`ConsentBrowser` does that by hand, the way a person's browser
would: it GETs the authorization URL, follows redirects while they stay on a sandbox server,
then GETs the first loopback URL that is not a sandbox server (the client's callback
listener) once and returns its HTTP status.

Invariants:
    - No network besides loopback: a URL whose host is not loopback is refused before any
      request is made (``localhost`` or a loopback IP address).
    - At most ``_MAX_HOPS`` redirects; every request has the browser's timeout; the
      environment's proxies are ignored (``trust_env=False``).
    - Thread-safe: every visit has its own HTTP client; the call count and the one shared
      SSL context are guarded by a lock.
    - Error messages drop query strings (they carry codes and states).
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx

from runner.sandbox.errors import BrowserError, CallbackUnreachable
from runner.sandbox.settings import HOST

__all__ = ["ConsentBrowser"]

_MAX_HOPS: Final = 10
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


class ConsentBrowser:
    """Follows a sandbox's consent redirects to the callback (see the module docstring).

    Args:
        timeout: Per-request timeout, in seconds.
    """

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._calls = 0
        self._ssl: ssl.SSLContext | None = None

    @property
    def calls(self) -> int:
        """How many times :meth:`visit` has been called."""
        with self._lock:
            return self._calls

    def visit(self, url: str, sandbox_ports: frozenset[int]) -> int:
        """Carry the authorization URL ``url`` to its callback; the callback's HTTP status.

        Args:
            url: The authorization URL.
            sandbox_ports: The ports of the sandbox's servers on :data:`HOST`; a redirect to
                any other loopback URL is the callback.

        Raises:
            CallbackUnreachable: Nothing accepts connections at the callback URL.
            BrowserError: The authorization server answered without a redirect, a URL is not on
                loopback, there were more than 10 redirects, or a request failed or timed out.
        """
        with self._lock:
            self._calls += 1
            # httpx builds an SSL context (about 50 ms of CPU) per client unless given one.
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        timeout = httpx.Timeout(self._timeout)
        with httpx.Client(
            follow_redirects=False, timeout=timeout, trust_env=False, verify=context
        ) as client:
            target = url
            for _hop in range(_MAX_HOPS):
                if not _on_sandbox(target, sandbox_ports):
                    break
                response = _get(client, target, "the authorization server")
                if response.status_code not in _REDIRECT_STATUSES:
                    raise BrowserError(
                        f"{_without_query(target)} answered HTTP {response.status_code} "
                        f"instead of a redirect: {response.text[:300]}"
                    )
                location = response.headers.get("location")
                if not location:
                    raise BrowserError(f"{_without_query(target)} redirected without a Location")
                target = urljoin(target, location)
            else:
                raise BrowserError(f"more than {_MAX_HOPS} redirects from {_without_query(url)}")
            try:
                response = client.get(target)
            except httpx.ConnectError as exc:
                raise CallbackUnreachable(
                    f"the callback listener at {_without_query(target)} is not reachable: {exc}"
                ) from exc
            except httpx.HTTPError as exc:
                raise BrowserError(
                    f"the callback request to {_without_query(target)} failed: {exc!r}"
                ) from exc
            return response.status_code


def _on_sandbox(url: str, sandbox_ports: frozenset[int]) -> bool:
    """Whether ``url`` is on a sandbox server; BrowserError if it is not on loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not _is_loopback(parts.hostname):
        raise BrowserError(f"refusing to leave loopback: {_without_query(url)}")
    try:
        port = parts.port
    except ValueError as exc:
        raise BrowserError(f"bad port in {_without_query(url)}") from exc
    return parts.hostname == HOST and port in sandbox_ports


def _get(client: httpx.Client, url: str, what: str) -> httpx.Response:
    try:
        return client.get(url)
    except httpx.HTTPError as exc:
        raise BrowserError(f"{what} at {_without_query(url)} failed: {exc!r}") from exc


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
