"""runner._core._routing: pasted callbacks routed to waiting logins by state. Pure: no I/O."""

from __future__ import annotations

import dataclasses
import hmac
import urllib.parse

import pytest

from runner._core._callback import Accepted, Expectation, Rejected, judge_paste
from runner._core._routing import Deliver, NoSuchLogin, PasteRouter, Unparseable

STATES = {
    "linear": "st-linear-0123456789",
    "notion": "st-notion-abcdefghij",
    "slack": "st-slack-\u00e9\u00e8\u2603",  # non-ASCII: compared as bytes
}


def url(state: str, code: str = "the-code", path: str = "/callback", port: int = 5555) -> str:
    query = urllib.parse.urlencode({"code": code, "state": state})
    return f"http://127.0.0.1:{port}{path}?{query}"


@pytest.fixture
def router() -> PasteRouter:
    r = PasteRouter()
    for login, state in STATES.items():
        r.arm(login, state)
    return r


def test_each_paste_goes_to_its_own_login(router: PasteRouter) -> None:
    for login, state in STATES.items():
        decision = router.route(url(state))
        assert isinstance(decision, Deliver)
        assert decision.login == login
        assert decision.query == urllib.parse.urlencode({"code": "the-code", "state": state})
        assert decision.path == "/callback"


def test_garbage_then_wrong_state_then_right_state(router: PasteRouter) -> None:
    """A person's session: every mistake leaves them free to paste again."""
    assert isinstance(router.route("hello?"), Unparseable)
    assert isinstance(router.route(url("stale-state")), NoSuchLogin)
    assert isinstance(router.route("http://127.0.0.1:5555/callback?code=x"), Unparseable)
    decision = router.route(url(STATES["notion"]))
    assert isinstance(decision, Deliver)
    assert decision.login == "notion"
    assert router.waiting == ("linear", "notion", "slack")  # routing does not disarm


@pytest.mark.parametrize(
    "text",
    [
        f"?code=c&state={STATES['linear']}",
        f"code=c&state={STATES['linear']}",
        f"  '<{url(STATES['linear'])}>'  ",
        f"/callback?code=c&state={STATES['linear']}",
        f"127.0.0.1:5555/callback?code=c&state={STATES['linear']}",
        f"state={STATES['linear']}&error=access_denied",
    ],
)
def test_every_paste_form_is_routed(router: PasteRouter, text: str) -> None:
    decision = router.route(text)
    assert isinstance(decision, Deliver)
    assert decision.login == "linear"


@pytest.mark.parametrize(
    "state",
    [
        "",
        "st-linear-012345678",  # prefix
        "st-linear-01234567890",  # extension
        "ST-LINEAR-0123456789",  # case
        "st-slack-eeX",  # ASCII folding of a non-ASCII state
        "st-linear-0123456789 ",
    ],
)
def test_near_misses_never_match(router: PasteRouter, state: str) -> None:
    decision = router.route(url(state) if state else "code=c&state=")
    assert not isinstance(decision, Deliver)


def test_unknown_state_names_the_logins_still_waiting(router: PasteRouter) -> None:
    decision = router.route(url("from-an-earlier-attempt"))
    assert decision == NoSuchLogin(
        "this URL belongs to no login that is waiting (waiting: linear, notion, slack); "
        "it may be from an earlier attempt"
    )


def test_disarmed_login_no_longer_matches(router: PasteRouter) -> None:
    router.disarm("notion")
    decision = router.route(url(STATES["notion"]))
    assert isinstance(decision, NoSuchLogin)
    assert "waiting: linear, slack" in decision.message
    assert "notion" not in decision.message
    assert router.waiting == ("linear", "slack")


def test_disarm_is_idempotent(router: PasteRouter) -> None:
    router.disarm("notion")
    router.disarm("notion")
    router.disarm("never-armed")
    assert router.waiting == ("linear", "slack")


def test_nothing_waiting() -> None:
    decision = PasteRouter().route(url("anything"))
    assert isinstance(decision, NoSuchLogin)
    assert "no login is waiting" in decision.message


def test_rearming_replaces_the_state_and_keeps_the_place(router: PasteRouter) -> None:
    router.arm("linear", "st-linear-second-attempt")
    assert isinstance(router.route(url(STATES["linear"])), NoSuchLogin)
    decision = router.route(url("st-linear-second-attempt"))
    assert isinstance(decision, Deliver)
    assert decision.login == "linear"
    assert router.waiting == ("linear", "notion", "slack")


def test_rearming_with_the_same_state_is_allowed(router: PasteRouter) -> None:
    router.arm("linear", STATES["linear"])
    assert router.waiting == ("linear", "notion", "slack")


def test_duplicate_state_across_logins_is_refused_and_changes_nothing(
    router: PasteRouter,
) -> None:
    with pytest.raises(ValueError, match="'notion'") as info:
        router.arm("github", STATES["notion"])
    assert STATES["notion"] not in str(info.value)
    with pytest.raises(ValueError, match="'notion'"):
        router.arm("linear", STATES["notion"])
    assert router.waiting == ("linear", "notion", "slack")
    decision = router.route(url(STATES["linear"]))
    assert isinstance(decision, Deliver)
    assert decision.login == "linear"


def test_a_disarmed_state_may_be_armed_again_by_another_login(router: PasteRouter) -> None:
    router.disarm("notion")
    router.arm("github", STATES["notion"])
    decision = router.route(url(STATES["notion"]))
    assert isinstance(decision, Deliver)
    assert decision.login == "github"


@pytest.mark.parametrize(("login", "state"), [("", "s"), ("x", "")])
def test_empty_login_or_state_is_refused(login: str, state: str) -> None:
    r = PasteRouter()
    with pytest.raises(ValueError, match="empty"):
        r.arm(login, state)
    assert r.waiting == ()


@pytest.mark.parametrize("text", ["", "   ", "\n", "\r\n"])
def test_blank_line_is_unparseable_with_nothing_to_say(router: PasteRouter, text: str) -> None:
    assert router.route(text) == Unparseable("")


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "yes",
        "http://127.0.0.1:5555/callback",
        "http://127.0.0.1:5555/callback?code=abc",
        f"ftp://127.0.0.1/callback?code=c&state={STATES['linear']}",
        f"code=c&state={STATES['linear']}&state={STATES['notion']}",
    ],
)
def test_garbage_is_unparseable_with_a_message(router: PasteRouter, text: str) -> None:
    decision = router.route(text)
    assert isinstance(decision, Unparseable)
    assert decision.message
    assert "address bar" in decision.message


def test_state_is_compared_with_compare_digest_against_every_login(
    router: PasteRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    decision = router.route(url(STATES["linear"]))
    assert isinstance(decision, Deliver)
    assert len(calls) == len(STATES)  # no early exit on the first match
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


def test_repr_redacts_states_and_queries(router: PasteRouter) -> None:
    decision = router.route(url(STATES["linear"], code="SECRET-CODE"))
    assert isinstance(decision, Deliver)
    for text in (repr(decision), str(decision), repr(router)):
        assert "SECRET-CODE" not in text
        for state in STATES.values():
            assert state not in text
    assert "linear" in repr(decision)
    assert "<redacted>" in repr(decision)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/callback", Accepted), ("/elsewhere", Rejected), (None, Accepted)],
)
def test_delivered_target_is_judged_by_the_child_with_its_path(
    router: PasteRouter, path: str | None, expected: type
) -> None:
    """Router and child wired in memory: the child still checks the pasted path."""
    text = url(STATES["slack"], path=path) if path else f"code=c&state={STATES['slack']}"
    decision = router.route(text)
    assert isinstance(decision, Deliver)
    assert decision.login == "slack"
    expect = Expectation("127.0.0.1", 5555, "/callback", state=STATES["slack"])
    verdict = judge_paste(decision.target, expect)
    assert isinstance(verdict, expected)
    if isinstance(verdict, Rejected):
        assert verdict.status == 404


def test_target_forms() -> None:
    assert Deliver("a", "code=c&state=s").target == "code=c&state=s"
    assert Deliver("a", "code=c&state=s", "/cb").target == "/cb?code=c&state=s"
    assert dataclasses.replace(Deliver("a", "q"), path="/p").target == "/p?q"


def test_a_single_waiting_login_is_not_guessed() -> None:
    r = PasteRouter()
    r.arm("linear", STATES["linear"])
    decision = r.route(url("someone-elses-state"))
    assert decision == NoSuchLogin(
        "this URL belongs to no login that is waiting (waiting: linear); "
        "it may be from an earlier attempt"
    )
