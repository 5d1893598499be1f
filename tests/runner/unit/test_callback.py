"""runner._core._callback, _paste, _pages: judging redirects and pastes, reading pastes,
rendering pages. Pure: no sockets."""

from __future__ import annotations

import dataclasses
import hmac
import html
import urllib.parse
from html.parser import HTMLParser
from typing import Any

import pytest

from runner._core._callback import (
    Accepted,
    Denied,
    Expectation,
    Rejected,
    Verdict,
    judge_paste,
    judge_request,
)
from runner._core._callback_query import MAX_QUERY_BYTES
from runner._core._pages import RESPONSE_HEADERS, render_page, response_headers
from runner._core._paste import PastedCallback, PasteProblem, parse_paste

STATE = "s7aTe-0123456789abcdefXYZ_~."
CODE = "c0de-SECRET-abc123"
ISSUER = "https://as.example.com"
PORT = 5555
ARMED = Expectation(host="127.0.0.1", port=PORT, path="/callback", state=STATE)
HOST = f"127.0.0.1:{PORT}"


def q(**params: str) -> str:
    return urllib.parse.urlencode(params)


def judge(
    query: str,
    expect: Expectation = ARMED,
    *,
    method: str = "GET",
    path: str = "/callback",
    host: str | None = HOST,
) -> Verdict:
    return judge_request(method, path, query, host, expect)


GOOD = q(code=CODE, state=STATE)


# --------------------------------------------------------------------------- rules 1-3


def test_good_callback_is_accepted() -> None:
    assert judge(GOOD) == Accepted(code=CODE, state=STATE, iss=None)


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "OPTIONS", "get", "DELETE"])
def test_other_methods_are_405_even_with_valid_state(method: str) -> None:
    assert judge(GOOD, method=method) == Rejected(405, "this address only answers GET requests")


@pytest.mark.parametrize(
    "path",
    [
        "/favicon.ico",
        "/",
        "",
        "/anything",
        "/callback/",
        "/CALLBACK",
        "/Callback",
        "/callback/..",
        "//callback",
        "/%63allback",
        "/callback%2f",
        "/callback%2F",
        "/callback;x",
        "/callback ",
        "http://127.0.0.1:5555/callback",
    ],
)
def test_other_paths_are_404_even_with_valid_state(path: str) -> None:
    verdict = judge(GOOD, path=path)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 404


def test_method_is_checked_before_path() -> None:
    verdict = judge(GOOD, method="POST", path="/favicon.ico")
    assert isinstance(verdict, Rejected)
    assert verdict.status == 405


def test_path_is_checked_before_host_and_armed() -> None:
    not_armed = dataclasses.replace(ARMED, state=None)
    verdict = judge(GOOD, not_armed, path="/favicon.ico", host="evil.example")
    assert isinstance(verdict, Rejected)
    assert verdict.status == 404


@pytest.mark.parametrize(
    ("expect_host", "host_header"),
    [
        ("127.0.0.1", "127.0.0.1:5555"),
        ("127.0.0.1", " 127.0.0.1:5555 "),
        ("::1", "[::1]:5555"),
        ("[::1]", "[::1]:5555"),
        ("localhost", "localhost:5555"),
        ("localhost", "LOCALHOST:5555"),
        ("localhost", "LocalHost:5555"),
        ("LOCALHOST", "localhost:5555"),
    ],
)
def test_host_header_naming_the_redirect_authority_is_accepted(
    expect_host: str, host_header: str
) -> None:
    expect = dataclasses.replace(ARMED, host=expect_host)
    assert isinstance(judge(GOOD, expect, host=host_header), Accepted)


@pytest.mark.parametrize(
    ("expect_host", "host_header"),
    [
        ("127.0.0.1", None),
        ("127.0.0.1", ""),
        ("127.0.0.1", "   "),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1:5556"),
        ("127.0.0.1", "127.0.0.1:05555"),
        ("127.0.0.1", "127.0.0.1:5555."),
        ("127.0.0.1", "localhost:5555"),
        ("127.0.0.1", "[::1]:5555"),
        ("127.0.0.1", "evil.example:5555"),
        ("127.0.0.1", "evil.example"),
        ("127.0.0.1", "127.0.0.1:5555, evil.example"),
        ("127.0.0.1", "127.0.0.1.nip.io:5555"),
        ("127.0.0.1", "user@127.0.0.1:5555"),
        ("::1", "::1:5555"),
        ("::1", "[::1]"),
        ("::1", "127.0.0.1:5555"),
        ("localhost", "127.0.0.1:5555"),
        ("localhost", "localhost.:5555"),
        ("localhost", "localhost"),
    ],
)
def test_wrong_or_missing_host_is_400(expect_host: str, host_header: str | None) -> None:
    expect = dataclasses.replace(ARMED, host=expect_host)
    verdict = judge(GOOD, expect, host=host_header)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


def test_default_port_may_be_left_out_of_host() -> None:
    expect = dataclasses.replace(ARMED, port=80)
    assert isinstance(judge(GOOD, expect, host="127.0.0.1"), Accepted)
    assert isinstance(judge(GOOD, expect, host="127.0.0.1:80"), Accepted)


# --------------------------------------------------------------------------- rules 4-6


def test_query_at_the_limit_is_judged_and_one_byte_more_is_414() -> None:
    base = GOOD + "&pad="
    at_limit = base + "x" * (MAX_QUERY_BYTES - len(base))
    assert len(at_limit.encode()) == MAX_QUERY_BYTES
    assert isinstance(judge(at_limit), Accepted)
    verdict = judge(at_limit + "x")
    assert isinstance(verdict, Rejected)
    assert verdict.status == 414


def test_size_counts_utf8_bytes_not_characters() -> None:
    base = GOOD + "&pad="
    query = base + "\u00e9" * ((MAX_QUERY_BYTES - len(base)) // 2 + 1)
    assert len(query) <= MAX_QUERY_BYTES < len(query.encode())
    verdict = judge(query)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 414


def test_size_is_checked_before_host() -> None:
    # rule 3 wins over rule 4: a rebinding page learns nothing about limits
    verdict = judge("x" * (MAX_QUERY_BYTES + 1), host="evil.example")
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


@pytest.mark.parametrize(
    "name", ["code", "state", "iss", "error", "error_description", "error_uri"]
)
def test_repeated_oauth_parameter_is_400(name: str) -> None:
    expect = dataclasses.replace(ARMED, issuer=ISSUER)
    values = {
        "code": CODE,
        "state": STATE,
        "iss": ISSUER,
        "error": "access_denied",
        "error_description": "no",
        "error_uri": "https://as.example.com/e",
    }
    once = q(**{name: values[name]})
    extra = {k: v for k, v in {"code": CODE, "state": STATE, "iss": ISSUER}.items() if k != name}
    query = "&".join([q(**extra), once, once])
    verdict = judge(query, expect)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400
    assert name in verdict.reason


def test_repeated_identical_state_is_still_400() -> None:
    verdict = judge(GOOD + "&" + q(state=STATE))
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


def test_other_parameters_may_repeat() -> None:
    assert isinstance(judge(GOOD + "&x=1&x=2&scope=a&scope=b"), Accepted)


@pytest.mark.parametrize(
    "query",
    [
        GOOD + "&x=%ff",  # not UTF-8
        "code=%C3%28&state=" + STATE,  # invalid UTF-8 sequence in a value
        GOOD + "&" + "&".join(f"p{i}=1" for i in range(70)),  # too many fields
    ],
)
def test_unreadable_query_is_400(query: str) -> None:
    verdict = judge(query)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


def test_sloppy_but_readable_query_is_accepted() -> None:
    assert judge("&&" + GOOD + "&flag&") == Accepted(code=CODE, state=STATE, iss=None)


def test_plus_and_percent_encoding_are_decoded() -> None:
    assert judge("code=a+b%2Fc&state=" + STATE) == Accepted("a b/c", STATE, None)


def test_not_armed_is_503_and_never_accepted() -> None:
    verdict = judge(GOOD, dataclasses.replace(ARMED, state=None))
    assert isinstance(verdict, Rejected)
    assert verdict.status == 503
    assert "not ready" in verdict.reason


def test_repeated_parameter_is_400_even_when_not_armed() -> None:
    verdict = judge(GOOD + "&" + q(code=CODE), dataclasses.replace(ARMED, state=None))
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


# --------------------------------------------------------------------------- rule 7: state


@pytest.mark.parametrize(
    "query",
    [
        q(code=CODE),
        q(code=CODE, state=""),
        q(code=CODE, state="wrong"),
        q(code=CODE, state=STATE[:-1]),
        q(code=CODE, state=STATE + "x"),
        q(code=CODE, state=STATE.upper()),
        q(code=CODE, state=" " + STATE),
        q(code=CODE, state="\u00e9t\u00e0t"),
        q(code=CODE, state="\x00"),
        q(code=CODE, STATE="x") + "&STATE=" + STATE,
    ],
)
def test_missing_or_wrong_state_is_400_and_the_login_keeps_waiting(query: str) -> None:
    verdict = judge(query)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400
    assert "state does not match" in verdict.reason


def test_wrong_state_with_error_is_rejected_not_denied() -> None:
    verdict = judge(q(error="access_denied", state="forged"))
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


def test_non_ascii_armed_state_compares_safely() -> None:
    # hmac.compare_digest raises TypeError on non-ASCII str: the judge compares bytes
    expect = dataclasses.replace(ARMED, state="\u00e9t\u00e0t-\u2603")
    assert judge(q(code=CODE, state="\u00e9t\u00e0t-\u2603"), expect) == Accepted(
        CODE, "\u00e9t\u00e0t-\u2603", None
    )
    verdict = judge(q(code=CODE, state="etat-x"), expect)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


def test_state_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert isinstance(judge(GOOD), Accepted)
    assert calls == [(STATE.encode(), STATE.encode())]


# --------------------------------------------------------------------------- rule 8: iss


def with_issuer(required: bool = False, issuer: str | None = ISSUER) -> Expectation:
    return dataclasses.replace(ARMED, issuer=issuer, issuer_required=required)


@pytest.mark.parametrize("required", [False, True])
def test_matching_iss_is_accepted_and_returned(required: bool) -> None:
    verdict = judge(q(code=CODE, state=STATE, iss=ISSUER), with_issuer(required))
    assert verdict == Accepted(CODE, STATE, ISSUER)


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.example.com",
        ISSUER + "/",
        ISSUER.upper(),
        "https://AS.example.com",
        ISSUER + ":443",
        "",
    ],
)
@pytest.mark.parametrize("required", [False, True])
def test_iss_mismatch_is_400(iss: str, required: bool) -> None:
    verdict = judge(q(code=CODE, state=STATE, iss=iss), with_issuer(required))
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


@pytest.mark.parametrize("required", [False, True])
def test_iss_mismatch_hides_and_ignores_error_fields(required: bool) -> None:
    query = q(
        state=STATE,
        iss="https://attacker.example",
        error="access_denied",
        error_description="<script>alert(1)</script> please visit evil",
        error_uri="https://attacker.example/phish",
    )
    verdict = judge(query, with_issuer(required))
    assert isinstance(verdict, Rejected)  # not Denied: the login keeps waiting
    assert verdict.status == 400
    for leaked in ("access_denied", "script", "evil", "attacker", "phish"):
        assert leaked not in verdict.reason
    _, page = render_page(verdict)
    for leaked in ("access_denied", "script", "evil", "attacker", "phish"):
        assert leaked not in page


def test_missing_iss_when_required_is_400_even_for_an_error() -> None:
    for query in (GOOD, q(state=STATE, error="access_denied")):
        verdict = judge(query, with_issuer(required=True))
        assert isinstance(verdict, Rejected)
        assert verdict.status == 400
        assert "access_denied" not in verdict.reason


def test_missing_iss_when_not_required_is_accepted() -> None:
    assert judge(GOOD, with_issuer(required=False)) == Accepted(CODE, STATE, None)


def test_iss_with_unknown_issuer_is_passed_through_for_the_sdk() -> None:
    verdict = judge(q(code=CODE, state=STATE, iss="https://whoever.example"), ARMED)
    assert verdict == Accepted(CODE, STATE, "https://whoever.example")


def test_empty_iss_with_unknown_issuer_is_400() -> None:
    verdict = judge(q(code=CODE, state=STATE, iss=""), ARMED)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


# --------------------------------------------------------------------------- rules 9-11


def test_error_with_right_state_is_denied() -> None:
    query = q(
        state=STATE,
        error="access_denied",
        error_description="The user declined",
        error_uri="https://as.example.com/errors/denied",
    )
    assert judge(query) == Denied(
        "access_denied", "The user declined", "https://as.example.com/errors/denied"
    )


def test_error_with_right_iss_is_denied() -> None:
    query = q(state=STATE, iss=ISSUER, error="access_denied")
    assert judge(query, with_issuer(required=True)) == Denied("access_denied", None, None)


def test_error_wins_over_code() -> None:
    assert judge(q(code=CODE, state=STATE, error="server_error")) == Denied(
        "server_error", None, None
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("invalid_scope", "invalid_scope"),
        ("a b!#[]~", "a b!#[]~"),
        ('bad"quote\\slash', "bad?quote?slash"),
        ("esc\x1b[31mred\x00\n", "esc?[31mred??"),
        ("\u00e9rreur", "?rreur"),
        ("", "unspecified_error"),
        ("x" * 1000, "x" * 128),
    ],
)
def test_malformed_error_is_still_denied_but_sanitised(raw: str, expected: str) -> None:
    verdict = judge(q(state=STATE, error=raw))
    assert verdict == Denied(expected, None, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The user said no.", "The user said no."),
        ("L'utilisateur a refus\u00e9", "L'utilisateur a refus\u00e9"),
        ("line1\nline2\x1b[2J\x07", "line1?line2?[2J?"),
        ("", None),
    ],
)
def test_error_description_is_sanitised(raw: str, expected: str | None) -> None:
    verdict = judge(q(state=STATE, error="access_denied", error_description=raw))
    assert isinstance(verdict, Denied)
    assert verdict.description == expected


def test_error_description_is_capped() -> None:
    verdict = judge(q(state=STATE, error="e", error_description="d" * 5000))
    assert isinstance(verdict, Denied)
    assert verdict.description is not None
    assert len(verdict.description) == 1024


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://as.example.com/e?x=1#y", "https://as.example.com/e?x=1#y"),
        ("http://as.example.com/e", "http://as.example.com/e"),
        ("javascript:alert(1)", None),
        ("data:text/html,<script>", None),
        ("/relative", None),
        ("https://", None),
        ("https://as.example.com/a b", None),
        ('https://as.example.com/"><script>', None),
        ("https://as.example.com/\u00e9", None),
        ("https://[bad", None),
        ("https://as.example.com/" + "x" * 3000, None),
    ],
)
def test_error_uri_is_kept_only_when_an_http_uri(raw: str, expected: str | None) -> None:
    verdict = judge(q(state=STATE, error="access_denied", error_uri=raw))
    assert isinstance(verdict, Denied)
    assert verdict.uri == expected


@pytest.mark.parametrize(
    "query",
    [
        q(state=STATE),
        q(state=STATE, code=""),
        q(state=STATE, code="a\x00b"),
        q(state=STATE, code="caf\u00e9"),
        q(state=STATE, code="a\nb"),
        q(state=STATE, error_description="only a description"),
    ],
)
def test_missing_empty_or_malformed_code_is_400(query: str) -> None:
    verdict = judge(query)
    assert isinstance(verdict, Rejected)
    assert verdict.status == 400


# --------------------------------------------------------------------------- expectation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "0.0.0.0"},
        {"host": "example.com"},
        {"host": "127.0.0.2"},
        {"port": 0},
        {"port": 65536},
        {"port": True},
        {"path": "callback"},
        {"path": ""},
        {"path": "/callback?x=1"},
        {"path": "/call back"},
        {"state": ""},
        {"issuer": ""},
        {"issuer_required": True},
    ],
)
def test_expectation_refuses_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        dataclasses.replace(ARMED, **kwargs)


def test_expectation_authority_and_redirect_uri() -> None:
    v6 = Expectation(host="[::1]", port=8080, path="/cb")
    assert v6.host == "::1"
    assert v6.authority == "[::1]:8080"
    assert v6.redirect_uri == "http://[::1]:8080/cb"
    assert ARMED.redirect_uri == "http://127.0.0.1:5555/callback"


# --------------------------------------------------------------------------- repr


def test_reprs_redact_code_and_state() -> None:
    pasted = parse_paste(f"http://127.0.0.1:5555/callback?{GOOD}")
    assert isinstance(pasted, PastedCallback)
    for obj in (Accepted(CODE, STATE, ISSUER), ARMED, pasted):
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}"):
            assert CODE not in text
            assert STATE not in text
            assert "<redacted>" in text
    assert ISSUER in repr(Accepted(CODE, STATE, ISSUER))
    assert "state=None" in repr(dataclasses.replace(ARMED, state=None))


def test_rejected_status_must_be_an_error() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Rejected(200, "fine")


# --------------------------------------------------------------------------- pages

XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</title><script>alert(1)</script>",
    "</style><script>alert(1)</script>",
    "<a href='javascript:alert(1)'>x</a>",
]

_PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "p"}
_PAGE_ATTRS = {"lang", "charset", "name", "content"}


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.update(name for name, _ in attrs)


def assert_inert(page: str) -> None:
    """The page holds only the tags and attributes the template writes."""
    collector = _TagCollector()
    collector.feed(page)
    collector.close()
    assert set(collector.tags) <= _PAGE_TAGS, collector.tags
    assert collector.attrs <= _PAGE_ATTRS, collector.attrs
    assert collector.tags.count("style") == 1


@pytest.mark.parametrize("payload", XSS)
@pytest.mark.parametrize("field", ["error", "error_description", "error_uri"])
def test_denied_page_escapes_every_value(payload: str, field: str) -> None:
    fields = {
        "error": "access_denied",
        "error_description": "declined",
        "error_uri": "https://as.example.com/e",
    }
    fields[field] = payload if field != "error_uri" else "https://as.example.com/" + payload
    verdict = judge(q(state=STATE, **fields))
    assert isinstance(verdict, Denied)
    status, page = render_page(verdict)
    assert status == 200
    assert "<script" not in page.lower()
    assert_inert(page)


@pytest.mark.parametrize("payload", XSS)
def test_denied_page_shows_the_escaped_form(payload: str) -> None:
    status, page = render_page(Denied(payload, payload, payload))
    assert status == 200
    assert "<script" not in page
    assert_inert(page)
    assert payload not in page
    assert page.count(html.escape(payload, quote=True)) == 3


@pytest.mark.parametrize("payload", XSS)
@pytest.mark.parametrize("field", ["code", "state", "iss", "other"])
def test_payload_in_any_parameter_never_reaches_a_page(payload: str, field: str) -> None:
    params = {"code": CODE, "state": STATE, "iss": ISSUER, "other": "x"}
    params[field] = payload
    for expect in (ARMED, with_issuer(required=True)):
        verdict = judge(q(**params), expect)
        _, page = render_page(verdict)
        assert "<script" not in page
        assert_inert(page)


@pytest.mark.parametrize("payload", XSS)
def test_payload_in_path_or_host_is_404_or_400_and_escaped(payload: str) -> None:
    for verdict in (
        judge(GOOD, path="/" + payload),
        judge(GOOD, path="/" + urllib.parse.quote(payload)),
        judge(GOOD, host=payload),
    ):
        assert isinstance(verdict, Rejected)
        status, page = render_page(verdict)
        assert status == verdict.status
        assert "<script" not in page
        assert_inert(page)


@pytest.mark.parametrize("payload", XSS)
def test_rejected_reason_is_escaped(payload: str) -> None:
    status, page = render_page(Rejected(418, payload))
    assert status == 418
    assert payload not in page
    assert html.escape(payload, quote=True) in page
    assert_inert(page)


def test_pages_have_no_script_or_external_resource() -> None:
    verdicts: list[Verdict] = [
        Accepted(CODE, STATE, None),
        Denied("access_denied", "d", "https://as.example.com/e"),
        Rejected(400, "r"),
        Rejected(404, "r"),
        Rejected(405, "r"),
        Rejected(414, "r"),
        Rejected(503, "r"),
    ]
    for verdict in verdicts:
        _, page = render_page(verdict)
        lowered = page.lower()
        assert page.startswith("<!DOCTYPE html>")
        for banned in ("<script", "<link", "<img", "<iframe", "src=", "href=", "url("):
            assert banned not in lowered
        assert_inert(page)
        assert CODE not in page
        assert STATE not in page


def test_accepted_page() -> None:
    status, page = render_page(Accepted(CODE, STATE, None))
    assert status == 200
    assert "Login complete" in page
    assert "close this tab" in page


@pytest.mark.parametrize("status", [400, 404, 405, 414, 503])
def test_rejected_page_carries_its_status(status: int) -> None:
    assert render_page(Rejected(status, "because"))[0] == status


def test_response_headers() -> None:
    assert RESPONSE_HEADERS["Content-Type"] == "text/html; charset=utf-8"
    assert RESPONSE_HEADERS["Cache-Control"] == "no-store"
    assert RESPONSE_HEADERS["Referrer-Policy"] == "no-referrer"
    assert RESPONSE_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert RESPONSE_HEADERS["X-Frame-Options"] == "DENY"
    csp = RESPONSE_HEADERS["Content-Security-Policy"]
    assert csp.startswith("default-src 'none';")
    assert "script-src" not in csp
    assert "unsafe-inline" not in csp
    with pytest.raises(TypeError):
        RESPONSE_HEADERS["X-Frame-Options"] = "ALLOW"  # type: ignore[index]


def test_csp_style_hash_matches_the_inline_style() -> None:
    import base64
    import hashlib
    import re

    _, page = render_page(Rejected(404, "r"))
    match = re.search(r"<style>(.*?)</style>", page, re.S)
    assert match is not None
    digest = base64.b64encode(hashlib.sha256(match.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in RESPONSE_HEADERS["Content-Security-Policy"]


def test_response_headers_per_verdict() -> None:
    assert response_headers(Rejected(405, "x"))["Allow"] == "GET"
    assert response_headers(Rejected(503, "x"))["Retry-After"] == "1"
    assert response_headers(Accepted(CODE, STATE, None)) == RESPONSE_HEADERS
    assert "Allow" not in response_headers(Rejected(404, "x"))
    assert response_headers(Rejected(405, "x"))["Cache-Control"] == "no-store"


# --------------------------------------------------------------------------- pastes


@pytest.mark.parametrize(
    ("text", "path", "host", "port"),
    [
        (f"http://127.0.0.1:5555/callback?{GOOD}", "/callback", "127.0.0.1", 5555),
        (f"HTTP://LOCALHOST:5555/callback?{GOOD}", "/callback", "localhost", 5555),
        (f"http://[::1]:5555/callback?{GOOD}#frag", "/callback", "::1", 5555),
        (f"http://127.0.0.1:5555?{GOOD}", "/", "127.0.0.1", 5555),
        (f"127.0.0.1:5555/callback?{GOOD}", "/callback", "127.0.0.1", 5555),
        (f"localhost:5555/callback?{GOOD}", "/callback", "localhost", 5555),
        (f"/callback?{GOOD}", "/callback", None, None),
        (f"?{GOOD}", None, None, None),
        (GOOD, None, None, None),
        (f"{GOOD}#_=_", None, None, None),
        (f"  http://127.0.0.1:5555/callback?{GOOD}\n", "/callback", "127.0.0.1", 5555),
        (f'"http://127.0.0.1:5555/callback?{GOOD}"', "/callback", "127.0.0.1", 5555),
        (f"'{GOOD}'", None, None, None),
        (f"<http://127.0.0.1:5555/callback?{GOOD}>", "/callback", "127.0.0.1", 5555),
        (f" \u201c '?{GOOD}' \u201d ", None, None, None),
        (
            f"http://127.0.0.1:5555/call\nback?{GOOD[:10]}\n{GOOD[10:]}",
            "/callback",
            "127.0.0.1",
            5555,
        ),
    ],
)
def test_paste_forms_are_read(
    text: str, path: str | None, host: str | None, port: int | None
) -> None:
    pasted = parse_paste(text)
    assert pasted == PastedCallback(query=GOOD, state=STATE, path=path, host=host, port=port)


def test_paste_with_unencoded_iss_in_bare_query_is_a_query() -> None:
    text = f"code={CODE}&state={STATE}&iss=https://as.example.com"
    pasted = parse_paste(text)
    assert isinstance(pasted, PastedCallback)
    assert pasted.path is None
    assert pasted.state == STATE


def test_paste_with_error_and_no_code_is_read() -> None:
    pasted = parse_paste(q(state=STATE, error="access_denied"))
    assert isinstance(pasted, PastedCallback)
    assert pasted.state == STATE


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hello world", "no parameters"),
        ("http://127.0.0.1:5555/callback", "no parameters"),
        ("http://127.0.0.1:5555/callback?code=abc", "no state parameter"),
        (f"code={CODE}", "no state parameter"),
        (f"code={CODE}&state=", "no state parameter"),
        (f"state={STATE}", "neither a code nor an error"),
        (f"state={STATE}&state=other&code=x", "more than one state"),
        (f"ftp://127.0.0.1/callback?{GOOD}", "ftp"),
        (f"http://127.0.0.1:99999/callback?{GOOD}", "could not be read"),
        (f"http://[::1/callback?{GOOD}", "could not be read"),
        (f"{GOOD}&x=%ff", "malformed"),
        ("x" * 20000 + "=" + GOOD, "too long"),
    ],
)
def test_garbage_paste_gets_an_actionable_message(text: str, words: str) -> None:
    pasted = parse_paste(text)
    assert isinstance(pasted, PasteProblem)
    assert words in pasted.message
    assert "browser's address bar" in pasted.message
    assert CODE not in pasted.message


@pytest.mark.parametrize("text", ["", "   ", "\n", "\t \r\n", '""', "<>", "' '"])
def test_blank_paste_is_a_problem_with_nothing_to_say(text: str) -> None:
    assert parse_paste(text) == PasteProblem("")


@pytest.mark.parametrize(
    "text",
    [
        f"http://127.0.0.1:5555/callback?{GOOD}",
        f"http://127.0.0.1:9999/callback?{GOOD}",  # another port: not checked
        f"http://localhost:5555/callback?{GOOD}",  # another host spelling: not checked
        f"/callback?{GOOD}",
        f"?{GOOD}",
        GOOD,
    ],
)
def test_judge_paste_accepts_a_good_paste(text: str) -> None:
    assert judge_paste(text, ARMED) == Accepted(CODE, STATE, None)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (f"http://127.0.0.1:5555/other?{GOOD}", 404),
        (f"http://127.0.0.1:5555/callback/?{GOOD}", 404),
        (f"http://127.0.0.1:5555/?{GOOD}", 404),
        (f"http://127.0.0.1:5555?{GOOD}", 404),
        (f"/favicon.ico?{GOOD}", 404),
        (q(code=CODE, state="stale"), 400),
        (q(code=CODE), 400),
        ("garbage", 400),
        ("", 400),
        (GOOD + "&" + q(code="second"), 400),
        (GOOD + "&pad=" + "x" * MAX_QUERY_BYTES, 414),
    ],
)
def test_judge_paste_rejects(text: str, status: int) -> None:
    verdict = judge_paste(text, ARMED)
    assert isinstance(verdict, Rejected)
    assert verdict.status == status
    assert verdict.reason


def test_judge_paste_applies_armed_iss_and_error_rules() -> None:
    assert isinstance(judge_paste(GOOD, dataclasses.replace(ARMED, state=None)), Rejected)
    assert judge_paste(GOOD, dataclasses.replace(ARMED, state=None)).status == 503  # type: ignore[union-attr]
    wrong_iss = q(state=STATE, iss="https://evil.example", error="access_denied")
    assert isinstance(judge_paste(wrong_iss, with_issuer()), Rejected)
    assert isinstance(judge_paste(GOOD, with_issuer(required=True)), Rejected)
    assert judge_paste(q(state=STATE, error="access_denied"), ARMED) == Denied(
        "access_denied", None, None
    )


@pytest.mark.timeout(5)
def test_a_huge_wrapped_paste_is_refused_in_linear_time() -> None:
    # Peeling '<'/'>' layer by layer used to slice the whole text once per layer: O(n**2),
    # minutes for a 1 MB paste, with the parent's paste reader stuck meanwhile.
    text = "<" * 500_000 + f"?{GOOD}" + ">" * 500_000
    assert isinstance(parse_paste(text), PasteProblem)
    assert judge_paste(text, ARMED).status == 400  # type: ignore[union-attr]


def test_wrappers_are_peeled_in_layers() -> None:
    wrapped = f' " <  http://127.0.0.1:{PORT}/callback?{GOOD} > " '
    pasted = parse_paste(wrapped)
    assert isinstance(pasted, PastedCallback) and pasted.path == "/callback"
    assert judge_paste(wrapped, ARMED) == Accepted(code=CODE, state=STATE, iss=None)
