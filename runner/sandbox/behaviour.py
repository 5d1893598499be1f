"""The fault modes of a sandbox authorization server: one frozen value per server.

A :class:`Behaviour` says how one authorization server deviates from a well-behaved one: it
denies consent, drops or falsifies the RFC 9207 ``iss`` parameter, stops advertising it,
answers ``/authorize`` slowly, hangs at the token endpoint, or issues short-lived tokens.

Invariants:
    - The defaults are a well-behaved server; every field is checked at construction, so a
      :class:`Behaviour` that exists is in range.
    - Frozen: a server's behaviour is fixed from the moment the sandbox is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Behaviour"]


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
    """

    consent: Literal["approve", "deny"] = "approve"
    send_iss: bool = True
    advertise_iss: bool = True
    wrong_iss: bool = False
    authorize_delay: float = 0.0
    hang: bool = False
    access_token_ttl: int = 3600

    def __post_init__(self) -> None:
        if self.consent not in ("approve", "deny"):
            raise ValueError(f"consent must be 'approve' or 'deny', not {self.consent!r}")
        if not self.authorize_delay >= 0:
            raise ValueError(f"authorize_delay must be >= 0, not {self.authorize_delay!r}")
        if self.access_token_ttl < 1:
            raise ValueError(f"access_token_ttl must be >= 1 second, not {self.access_token_ttl!r}")
