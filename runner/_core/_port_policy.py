"""Which port a login's listener leases, and what to do when it is taken. Pure.

``plan_port`` decides; the supervisor (``runner._parent._supervisor``) carries the plan out against
the registry. Invariants:

- a configured port (``redirect_port``) is the only choice: the login waits behind another
  lease of it until its own deadline, and a port still taken then is ``CallbackPortBusy``
  (the authorization server knows only that redirect URI; another port would be refused);
- else the port a stored dynamic registration pins (its redirect URI on this spec's host and
  callback path) is tried at once, without waiting, and if it is taken the login falls back
  to any port and registers again (defect 10: an old registration must not pin a port the
  login cannot have), saying so in a progress sentence;
- else, for a login that presents a Client ID Metadata Document, the ports its redirect
  URIs name, as a set (the first free one; hermes-agent's are 27890-27894), without
  waiting; if all are taken, any port, and the client registers dynamically (a document
  names no other port);
- else any port (0: the system picks one that is free, so nothing waits and nothing falls
  back; should even that fail, out of descriptors or ports, the registry's own error stands:
  it is not a port someone else holds);
- a statically configured client (``client_id``) is never re-registered, so its stored
  registration pins nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field

from mcp.shared.auth import OAuthClientInformationFull

from runner._core._events import PortTaken
from runner._core._spec import ServerSpec

__all__ = ["IfTaken", "PortPlan", "plan_port", "registered_port"]


class IfTaken(enum.Enum):
    """What a plan does when its first choice is taken (``PortBusy``, ``LeaseTimeout``)."""

    FAIL = "fail"  # CallbackPortBusy: the configured port is the only one that works
    FALL_BACK = "fall back"  # lease any port and register the client again
    RAISE = "raise"  # any port was asked for: the registry's error is the answer


@dataclass(frozen=True)
class PortPlan:
    """How to lease a login's port.

    ``port`` is the first choice (0: any; a set: the first free of them), ``wait`` how long
    to wait behind another live lease of it, ``if_taken`` what follows if it is still
    taken then. ``document_ports`` are the ports of a Client ID Metadata Document: the
    document is presented only on a lease of one of them.
    """

    port: int | frozenset[int]
    wait: float
    if_taken: IfTaken
    document_ports: frozenset[int] = field(default=frozenset())

    def taken(self, name: str, why: object) -> PortTaken:
        """The progress event for falling back, ``why`` being the registry's error."""
        if isinstance(self.port, frozenset):
            return PortTaken(name, tuple(sorted(self.port)), str(why), document=True)
        return PortTaken(name, (self.port,), str(why))


def plan_port(
    spec: ServerSpec,
    client_info: OAuthClientInformationFull | None,
    time_left: float,
    *,
    document_ports: Collection[int] = frozenset(),
) -> PortPlan:
    """The plan for ``spec``, given the registration the login may reuse, the seconds left
    before the login's deadline, and the ports of the document it would present (none:
    it presents none)."""
    ports = frozenset(document_ports)
    if spec.redirect_port:
        return PortPlan(
            port=spec.redirect_port,
            wait=max(0.0, time_left),
            if_taken=IfTaken.FAIL,
            document_ports=ports,
        )
    pinned = registered_port(client_info, spec)
    if pinned:
        return PortPlan(port=pinned, wait=0.0, if_taken=IfTaken.FALL_BACK)
    if ports:
        return PortPlan(port=ports, wait=0.0, if_taken=IfTaken.FALL_BACK, document_ports=ports)
    return PortPlan(port=0, wait=0.0, if_taken=IfTaken.RAISE)


def registered_port(client_info: OAuthClientInformationFull | None, spec: ServerSpec) -> int | None:
    """The port of the redirect URI a stored dynamic registration pins, if any."""
    if client_info is None or spec.client_id is not None:
        return None
    for uri in client_info.redirect_uris or ():
        if (
            uri.host in (spec.redirect_host, f"[{spec.redirect_host}]")
            and uri.path == spec.callback_path
        ):
            return uri.port
    return None
