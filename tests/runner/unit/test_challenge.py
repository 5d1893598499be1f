"""runner._core._challenge: reading a server's WWW-Authenticate challenge, and writing one back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner._core._challenge import MAX_HEADER_CHARS, Challenge, parse_challenge, union_scopes

PRM = "http://127.0.0.1:8123/.well-known/oauth-protected-resource/mcp"


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (401, None, Challenge(401)),
        (401, "", Challenge(401)),
        (
            401,
            f'Bearer resource_metadata="{PRM}", scope="files:read"',
            Challenge(401, scope="files:read", resource_metadata=PRM),
        ),
        (
            403,
            'Bearer error="insufficient_scope", scope="files:read files:write", '
            'error_description="needs write"',
            Challenge(403, error="insufficient_scope", scope="files:read files:write"),
        ),
        # RFC 6750 §3 example, unquoted token values and other schemes around it.
        (
            401,
            'Basic realm="x", Bearer realm="example", error=invalid_token, scope="q"',
            Challenge(401, error="invalid_token", scope="q"),
        ),
        (401, 'Basic abc==, Bearer scope="q", Digest realm="z"', Challenge(401, scope="q")),
        # Only the first Bearer challenge counts, and a repeated parameter's first value.
        (401, 'Bearer scope="a", scope="b", Bearer scope="c"', Challenge(401, scope="a")),
        # A quoted-string with escapes.
        (
            401,
            r'Newauth title="say \"hi\"", Bearer error_description="a \"b\"", scope=x',
            Challenge(401, scope="x"),
        ),
        # Parameters of other schemes are not Bearer's.
        (401, 'Basic scope="nope"', Challenge(401)),
    ],
)
def test_reads_the_bearer_challenge(status: int, header: str | None, expected: Challenge) -> None:
    assert parse_challenge(status, header) == expected


@pytest.mark.parametrize("status", [200, 302, 400, 404, 500])
def test_other_statuses_ask_for_nothing(status: int) -> None:
    assert parse_challenge(status, 'Bearer error="insufficient_scope"') is None


def test_a_403_asks_only_for_scopes() -> None:
    assert parse_challenge(403, 'Bearer error="invalid_token"') is None
    assert parse_challenge(403, None) is None
    challenge = parse_challenge(403, 'Bearer error="insufficient_scope", scope="a"')
    assert challenge is not None
    assert challenge.step_up
    assert not Challenge(401, error="insufficient_scope").step_up


@pytest.mark.parametrize(
    "header",
    [
        'Bearer scope="a\\"b"',  # a quote in a scope
        'Bearer resource_metadata="ftp://127.0.0.1/x"',
        'Bearer resource_metadata="/relative"',
        'Bearer resource_metadata="http://127.0.0.1/a b"',
        'Bearer error="' + "e" * 65 + '"',
    ],
)
def test_values_not_of_their_kind_are_left_out(header: str) -> None:
    assert parse_challenge(401, header) == Challenge(401)


def test_an_oversized_header_is_not_read() -> None:
    header = 'Bearer scope="a", ' + "x" * MAX_HEADER_CHARS
    assert parse_challenge(401, header) == Challenge(401)
    assert (
        parse_challenge(403, 'Bearer error="insufficient_scope",' + " " * MAX_HEADER_CHARS) is None
    )


def test_the_header_names_the_scope_decided() -> None:
    challenge = Challenge(403, error="insufficient_scope", scope="b", resource_metadata=PRM)
    written = challenge.header(scope="a b")
    assert parse_challenge(403, written) == Challenge(
        403, error="insufficient_scope", scope="a b", resource_metadata=PRM
    )
    assert Challenge(401).header() == "Bearer"


def test_union_keeps_order_and_drops_repeats() -> None:
    assert union_scopes("a b", None, "b c", "") == "a b c"
    assert union_scopes(None, "") is None


_scope_token = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
    min_size=1,
    max_size=12,
)
_challenges = st.builds(
    Challenge,
    status=st.sampled_from([401, 403]),
    error=st.one_of(
        st.none(),
        st.sampled_from(["invalid_token", "invalid_request"]),
    ),
    scope=st.one_of(st.none(), st.lists(_scope_token, min_size=1, max_size=4).map(" ".join)),
    resource_metadata=st.one_of(
        st.none(),
        st.from_regex(
            r"https?://127\.0\.0\.1(:[1-9][0-9]{0,3})?(/[a-z0-9._-]{1,9}){0,3}", fullmatch=True
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(_challenges)
def test_round_trip(challenge: Challenge) -> None:
    if challenge.status == 403:
        challenge = Challenge(
            403, "insufficient_scope", challenge.scope, challenge.resource_metadata
        )
    assert parse_challenge(challenge.status, challenge.header()) == challenge


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=-1, max_value=1000), st.one_of(st.none(), st.text(max_size=300)))
def test_never_raises(status: int, header: str | None) -> None:
    result = parse_challenge(status, header)
    assert result is None or result.status in (401, 403)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["Bearer", "Basic", " ", ",", "=", '"', "\\", "scope", "error", "abc==", "x", "\t"]
        ),
        max_size=40,
    ).map("".join)
)
def test_never_raises_on_header_shaped_noise(header: str) -> None:
    parse_challenge(401, header)
