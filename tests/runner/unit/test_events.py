"""The typed progress events: their sentences, what their repr hides, and how a host's
``progress`` is taken (one argument; or, deprecated, a name and a sentence)."""

from __future__ import annotations

import functools
import io
import re
import warnings
from typing import Any

import pytest
from mcp.shared.auth import OAuthToken

from runner import FlowResult, events
from runner._cli._authorize import Live as _Live
from runner._parent._progress import event_progress, log_progress
from runner.errors import ClientMetadataRefused, FlowTimeout, RefreshFailed

REFRESH_DOWN = RefreshFailed("srv: the token endpoint is unreachable", temporary=True)
TOKENS = OAuthToken(access_token="secret-access", token_type="Bearer")
LOGGED_IN = FlowResult(name="srv", ok=True, tokens=TOKENS)

# Each event and the sentence progress(name, sentence) was told before events existed.
SENTENCES: list[tuple[events.Event, str]] = [
    (
        events.StoredLoginNotReused("srv", "http://a.test/mcp"),
        "stored login is for http://a.test/mcp; not reused",
    ),
    (events.UsingStoredLogin("srv", "using its stored login"), "using its stored login"),
    (events.Refreshing("srv"), "refreshing its stored login"),
    (events.RefreshNotDone("srv", REFRESH_DOWN), "srv: the token endpoint is unreachable"),
    (
        events.LookingUpMetadata("srv"),
        "its stored login lacks the server's metadata; looking it up",
    ),
    (events.MetadataLookupFailed("srv", REFRESH_DOWN), "srv: the token endpoint is unreachable"),
    (events.LoggingIn("srv", "nothing usable is stored"), "nothing usable is stored; logging in"),
    (
        events.PortTaken("srv", (6000,), "held by pid 7"),
        "port 6000 is taken (held by pid 7); registering again",
    ),
    (
        events.PortTaken("srv", (1, 2), "taken", document=True),
        "the client metadata document's ports (1, 2) are taken (taken); registering",
    ),
    (
        events.Listening("srv", "http://127.0.0.1:5000/callback"),
        "listening on http://127.0.0.1:5000/callback",
    ),
    (
        events.NotChallenged("srv", 200),
        "the server let initialize through (HTTP 200): no login yet",
    ),
    (events.WaitingForBrowser("srv"), "waiting for the login in the browser"),
    (
        events.BrowserFailed("srv", "OSError: no display", "https://as.test/authorize?state=s"),
        "could not open a browser (OSError: no display); open this address yourself: "
        "https://as.test/authorize?state=s",
    ),
    (
        events.PasteRefused("srv", "the server said access_denied"),
        "pasted callback not accepted: the server said access_denied",
    ),
    (events.PasteNotUsed(None, "that is not a callback URL"), "that is not a callback URL"),
    (events.CallbackReceived("srv", "paste"), "callback received (paste); getting tokens"),
    (
        events.DeviceCodeIssued("srv", "WDJB-MJHT", "https://as.test/device", None, 600.0),
        "open https://as.test/device on any device and enter the code WDJB-MJHT",
    ),
    (
        events.RegisteringDynamically("srv", ClientMetadataRefused("srv: refused the document")),
        "srv: refused the document; registering dynamically instead",
    ),
    (events.Finished("srv", LOGGED_IN), "logged in"),
    (events.Finished("srv", FlowResult(name="srv", ok=True, deferred=True)), "no login needed yet"),
    (
        events.Finished(
            "srv", FlowResult(name="srv", ok=False, error=FlowTimeout("srv: timed out"))
        ),
        "srv: timed out",
    ),
]


@pytest.mark.parametrize(("event", "sentence"), SENTENCES, ids=lambda v: type(v).__name__)
def test_each_event_says_the_sentence_progress_was_told_before(
    event: events.Event, sentence: str
) -> None:
    assert str(event) == sentence


def test_every_public_event_has_a_sentence_here() -> None:
    public = {getattr(events, name) for name in events.__all__} - {events.Event}
    assert public == {type(event) for event, _ in SENTENCES}


def test_events_are_frozen_values() -> None:
    event = events.Listening("srv", "http://127.0.0.1:5000/callback")
    assert event == events.Listening("srv", "http://127.0.0.1:5000/callback")
    assert hash(event) == hash(events.Listening("srv", "http://127.0.0.1:5000/callback"))
    with pytest.raises(AttributeError):
        event.url = "elsewhere"  # type: ignore[misc]


def test_repr_leaves_out_tokens_and_a_logins_state() -> None:
    failed = events.BrowserFailed("srv", "OSError: x", "https://as.test/authorize?state=s3cr3t")
    assert "s3cr3t" not in repr(failed)
    assert "secret-access" not in repr(events.Finished("srv", LOGGED_IN))


# --- how the host's progress is taken ---------------------------------------------------------


def test_no_progress_is_logging() -> None:
    assert event_progress(None, stacklevel=1) is log_progress


class Collect:
    def __init__(self) -> None:
        self.told: list[Any] = []

    def __call__(self, event: events.Event) -> None:
        self.told.append(event)


def takes_anything(*args: object) -> None:
    pass


def takes_event_and_options(event: events.Event, verbose: bool = False) -> None:
    pass


@pytest.mark.parametrize(
    "progress",
    [Collect(), takes_anything, takes_event_and_options, print, lambda event: None],
    ids=["object", "varargs", "optional second", "builtin", "lambda"],
)
def test_a_one_argument_progress_is_taken_as_it_is(progress: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert event_progress(progress, stacklevel=1) is progress


def test_a_progress_of_name_and_sentence_is_wrapped_with_a_deprecation() -> None:
    said: list[tuple[str | None, str]] = []

    def legacy(name: str | None, sentence: str) -> None:
        said.append((name, sentence))

    for progress in (legacy, functools.partial(lambda tag, n, s: legacy(n, s), "tag")):
        said.clear()
        with pytest.warns(DeprecationWarning, match="runner.events.Event") as caught:
            told = event_progress(progress, stacklevel=1)
        assert caught[0].filename == __file__
        told(events.Refreshing("srv"))
        told(events.PasteNotUsed(None, "not a callback"))
        assert said == [("srv", "refreshing its stored login"), (None, "not a callback")]


# --- the command line matches on types, not on sentences -----------------------------------


LINE = re.compile(r"^ *\d+\.\ds  (\S+) +(.*)$")  # _Live.line: elapsed, name, text


def live_lines(*told: events.Event) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """What the command line's live view prints for these events (the paste prompt left
    out), and how it says each login was had."""
    out = io.StringIO()
    live = _Live(out=out, prompt=True)
    for event in told:
        live.progress(event)
    lines = [LINE.match(line) for line in out.getvalue().splitlines()]
    return [(m.group(1), m.group(2)) for m in lines if m is not None], live.how


def test_the_command_line_shows_phases_from_the_event_types() -> None:
    lines, how = live_lines(
        events.LoggingIn("srv", "nothing usable is stored"),
        events.Listening("srv", "http://127.0.0.1:5000/callback"),
        events.WaitingForBrowser("srv"),
        events.CallbackReceived("srv", "paste"),
        events.Finished("srv", LOGGED_IN),
    )
    assert lines == [
        ("srv", "nothing usable is stored; logging in"),
        ("srv", "waiting for the browser"),
        ("srv", "exchanging the code for tokens"),
        ("srv", "done"),
    ]
    assert how == {"srv": "pasted"}


def test_the_command_line_says_how_each_login_was_had() -> None:
    _, how = live_lines(
        events.UsingStoredLogin("a", "its refresh was refused; its token is used until it expires"),
        events.Refreshing("b"),
        events.CallbackReceived("c", "http"),
    )
    assert how == {"a": "stored login", "b": "refreshed", "c": "browser"}


def test_the_command_line_asks_for_another_paste_and_names_failures() -> None:
    failed = FlowResult(name="srv", ok=False, error=FlowTimeout("srv: timed out after 5 s"))
    lines, _ = live_lines(
        events.PasteNotUsed(None, "that is not a callback URL"),
        events.PasteRefused("srv", "the state is not this login's"),
        events.Finished("srv", failed),
    )
    assert lines == [
        ("paste", "that is not a callback URL; paste again"),
        ("srv", "pasted callback not accepted: the state is not this login's; paste again"),
        ("srv", "failed: timed out after 5 s"),
    ]
