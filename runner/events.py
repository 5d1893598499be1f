"""What a login is doing, as typed events: ``progress(event)``.

``authorize_many(..., progress=...)`` calls ``progress`` with one of these for each step of
each login, in order, from one daemon thread (never on the event loop). Like h11's events,
they are frozen dataclasses that carry data, not behaviour: match on the type, read the
fields. ``str(event)`` is a sentence for a person (the one ``progress(name, sentence)``
received before events existed), so a host that only prints loses nothing.

Every event has ``name``: the server's name, or None for the few that belong to no login
(a paste that matched none). A login's events come in this order, each one optional but
the last::

    StoredLoginNotReused?
    UsingStoredLogin                               (done: the stored tokens will do)
    | Refreshing, RefreshNotDone?                  (refreshed, or on to a login)
    | LookingUpMetadata, MetadataLookupFailed?
    ...
    LoggingIn, PortTaken?, Listening, NotChallenged | (WaitingForBrowser, BrowserFailed?,
        PasteRefused*, CallbackReceived), RegisteringDynamically?  (then once more)
        | (DeviceCodeIssued, CallbackReceived)     (a device login: flow "device")
    Finished                                       (always; exactly once per login)

Guaranteed: ``Finished`` comes once per server and last of that server's events; the
sentences may be reworded between releases, the types and fields only with a deprecation.
Not guaranteed: that every intermediate event comes (a login on stored tokens skips most).
Events carry no token; ``repr`` leaves out the URLs that carry a login's state.
"""

from __future__ import annotations

from runner._core._events import (
    BrowserFailed,
    CallbackReceived,
    DeviceCodeIssued,
    Event,
    Finished,
    Listening,
    LoggingIn,
    LookingUpMetadata,
    MetadataLookupFailed,
    NotChallenged,
    PasteNotUsed,
    PasteRefused,
    PortTaken,
    Refreshing,
    RefreshNotDone,
    RegisteringDynamically,
    StoredLoginNotReused,
    UsingStoredLogin,
    WaitingForBrowser,
)

__all__ = [
    "BrowserFailed",
    "CallbackReceived",
    "DeviceCodeIssued",
    "Event",
    "Finished",
    "Listening",
    "LoggingIn",
    "LookingUpMetadata",
    "MetadataLookupFailed",
    "NotChallenged",
    "PasteNotUsed",
    "PasteRefused",
    "PortTaken",
    "RefreshNotDone",
    "Refreshing",
    "RegisteringDynamically",
    "StoredLoginNotReused",
    "UsingStoredLogin",
    "WaitingForBrowser",
]
