"""Logging in from a machine reached over SSH with no display: the tunnel a person needs. Pure.

A login's listener is on this machine's loopback (``127.0.0.1:PORT``); the browser that the
authorization server redirects runs on the person's own machine, where ``127.0.0.1:PORT`` is
nothing. ``ssh -L PORT:127.0.0.1:PORT USER@HOST`` from their machine makes that address reach
this listener, and the login finishes by itself; without it, they paste the address the
browser lands on.

Invariants:
    * Everything is computed from the values given (an environment mapping, a URL, a user
      name): no I/O, standard library only, never raises for any input.
    * ``remote_without_display``: SSH is known only from ``SSH_CONNECTION`` or ``SSH_CLIENT``
      (non-empty); a display from a non-empty ``DISPLAY`` or ``WAYLAND_DISPLAY`` (X11
      forwarding sets ``DISPLAY``: a browser can open then, so no hint is given).
    * ``tunnel_hint`` names the port of the authorization URL's ``redirect_uri`` (the port
      the login leased), on both sides, and the listener's loopback host as the target. The
      host to reach is ``SSH_CONNECTION``'s server address only when it is a valid IP address
      that is not loopback (a loopback one means the session itself came through a tunnel
      or a jump host); otherwise the line says ``the address you used``. A non-standard
      server port adds ``-p PORT``. The user name is shell-quoted: the line is meant to be
      pasted into a shell.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs, urlsplit

from runner._core._loopback import LOOPBACK_HOSTS, canonical_host

__all__ = ["UNSURE_HOST", "redirect_address", "remote_without_display", "tunnel_hint"]

#: What the ssh line says for the host when SSH_CONNECTION does not tell it reliably.
UNSURE_HOST: Final = "<the address you used>"
#: The longest URL read for its redirect URI (authorization URLs are some hundred bytes).
_MAX_URL: Final = 16384


def remote_without_display(env: Mapping[str, str]) -> bool:
    """Whether this process runs in an SSH session without a display to open a browser on."""
    over_ssh = bool(env.get("SSH_CONNECTION") or env.get("SSH_CLIENT"))
    display = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return over_ssh and not display


def redirect_address(authorization_url: str) -> tuple[str, int] | None:
    """``(loopback host, port)`` of the authorization URL's ``redirect_uri``, canonical
    (``"::1"``, not ``"[::1]"``); ``None`` when it names no loopback listener with a port."""
    if len(authorization_url) > _MAX_URL:
        return None
    try:
        query = parse_qs(urlsplit(authorization_url).query)
        redirect = query.get("redirect_uri", [""])[0]
        parts = urlsplit(redirect)
        port = parts.port
        host = canonical_host(parts.hostname or "")
    except ValueError:  # a port out of range or not a number, a malformed netloc
        return None
    if parts.scheme != "http" or port is None or host not in LOOPBACK_HOSTS:
        return None
    return host, port


def _server_address(env: Mapping[str, str]) -> tuple[str, int] | None:
    """SSH_CONNECTION's ``server_ip server_port`` when both are valid and not loopback."""
    fields = (env.get("SSH_CONNECTION") or "").split()
    if len(fields) != 4:
        return None
    try:
        address = ipaddress.ip_address(fields[2].split("%", 1)[0])
        port = int(fields[3])
    except ValueError:
        return None
    if address.is_loopback or address.is_unspecified or not 0 < port < 65536:
        return None
    return str(address), port


def tunnel_hint(env: Mapping[str, str], authorization_url: str, user: str) -> list[str] | None:
    """The lines to print before a login's URL when over SSH with no display, else ``None``.

    ``user`` is the local user (the one to log in as over SSH). The first line is the exact
    ``ssh -L`` command to run on the person's own machine; the others say what it does and
    that pasting the address the browser lands on works too.
    """
    if not remote_without_display(env):
        return None
    found = redirect_address(authorization_url)
    if found is None:
        return None
    host, port = found
    # portlease binds "localhost" as 127.0.0.1; an IPv6 literal goes in brackets in -L.
    target = "[::1]" if host == "::1" else "127.0.0.1"
    server = _server_address(env)
    where = UNSURE_HOST if server is None else server[0]
    login = shlex.quote(user) if user else "$USER"
    ssh_port = "" if server is None or server[1] == 22 else f" -p {server[1]}"
    command = f"ssh -L {port}:{target}:{port}{ssh_port} {login}@{where}"
    lines = [
        "this machine is reached over SSH and has no display: on your own machine, run",
        f"    {command}",
        f"  (it carries 127.0.0.1:{port} there to this login's listener), then open the URL "
        "below in your browser there; or, without the tunnel, paste here the address the "
        "browser lands on",
    ]
    if server is None:
        lines.insert(2, "  (the address: the one you reached this machine at with ssh)")
    return lines
