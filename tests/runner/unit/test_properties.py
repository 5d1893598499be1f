"""Property tests for every runner decoder that reads what another process or a person wrote.

The property, for each: any input either decodes to a valid value or raises the module's own
documented error; never anything else, never a hang (``pytest-timeout`` bounds the file).
Pure: no files, sockets or processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner._core import _messages as m
from runner._core._callback import (
    Accepted,
    Denied,
    Expectation,
    Rejected,
    judge_paste,
    judge_request,
)
from runner._core._entries import parse_servers
from runner._core._pages import render_page, response_headers
from runner._core._paste import PastedCallback, PasteProblem, parse_paste
from runner._core._routing import Deliver, NoSuchLogin, PasteRouter, Unparseable
from runner._core._spec import ServerSpec, check_server_name
from runner._core._stored import InvalidLoginRecord, StoredLogin
from runner.errors import InvalidServerSpec

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

# Every code point, lone surrogates included: json.loads produces them from "\ud800".
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
KEYS = st.one_of(
    st.sampled_from(
        [
            "version",
            "server_url",
            "tokens",
            "expires_at",
            "client_info",
            "oauth_metadata",
            "saved_at",
            "access_token",
            "expires_in",
            "client_id",
            "redirect_uris",
            "jwks",
            "issuer",
            "v",
            "type",
            "port",
            "record",
            "url",
            "oauth",
        ]
    ),
    ANY_TEXT,
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    ANY_TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=20,
)
# For values inside a drawn structure (message fields, server entries): small keeps it fast.
SMALL_JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=3)
    ),
    max_leaves=6,
)


def nested(depth: int, *, kind: str) -> Any:
    """A value nested ``depth`` levels deep, built without recursion."""
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"jwks": value}
    return value


VALID_RECORD: dict[str, Any] = {
    "version": 1,
    "server_url": "http://127.0.0.1:1/mcp",
    "tokens": {"access_token": "tok", "refresh_token": "ref", "expires_in": 60},
    "expires_at": 1234.5,
    "client_info": {"client_id": "cid", "redirect_uris": ["http://127.0.0.1:5/callback"]},
    "oauth_metadata": {
        "issuer": "http://127.0.0.1:2",
        "authorization_endpoint": "http://127.0.0.1:2/authorize",
        "token_endpoint": "http://127.0.0.1:2/token",
    },
    "saved_at": 1000.0,
}


@st.composite
def mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with one field (top level or one level down) replaced or removed."""
    record = json.loads(json.dumps(VALID_RECORD))
    target = record
    key = draw(st.sampled_from(sorted(record)))
    if isinstance(record[key], dict) and draw(st.booleans()):
        target = record[key]
        key = draw(st.sampled_from([*sorted(target), "extra"]))
    if draw(st.booleans()):
        target.pop(key, None)
    else:
        target[key] = draw(JSON)
    return record


# --------------------------------------------------------------------------- StoredLogin


def assert_round_trips(login: StoredLogin) -> None:
    """A record that decodes also encodes, to JSON that decodes to the same record."""
    data = login.to_dict()
    text = json.dumps(data, allow_nan=False)
    again = StoredLogin.from_json(text.encode())
    assert again.to_dict() == data


def decode_record(data: object) -> None:
    try:
        login = StoredLogin.from_dict(data)
    except InvalidLoginRecord:
        return
    assert isinstance(login, StoredLogin)
    assert login.expires_at is None or math.isfinite(login.expires_at)
    assert math.isfinite(login.saved_at)
    assert_round_trips(login)


def test_the_valid_record_decodes() -> None:
    login = StoredLogin.from_dict(VALID_RECORD)
    assert login.tokens.access_token == "tok"
    assert_round_trips(login)


@SETTINGS
@given(JSON)
@example({**VALID_RECORD, "saved_at": [1]})
@example({**VALID_RECORD, "saved_at": 10**400})
@example({**VALID_RECORD, "expires_at": math.nan})
@example({**VALID_RECORD, "expires_at": math.inf})
@example({**VALID_RECORD, "tokens": "tok"})
@example({**VALID_RECORD, "version": True})
@example({**VALID_RECORD, "tokens": {"access_token": "\ud800"}})
def test_stored_login_from_dict_any_json(data: Any) -> None:
    decode_record(data)


@SETTINGS
@given(mutated_records())
def test_stored_login_from_dict_mutated_record(data: dict[str, Any]) -> None:
    decode_record(data)


@SETTINGS
@given(st.binary(max_size=200))
@example(b"[" * 100_000)
@example(b'{"a":' * 100_000)
@example(b"\xff\xfe")
@example(b'{"version": 1, "saved_at": NaN}')
def test_stored_login_from_json_any_bytes(data: bytes) -> None:
    try:
        login = StoredLogin.from_json(data)
    except InvalidLoginRecord:
        return
    assert_round_trips(login)


@SETTINGS
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from(["[", '{"jwks":']))
def test_stored_login_from_json_deep_nesting(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + "1" + closer * depth
    text = json.dumps({**VALID_RECORD, "client_info": None})[:-1] + f', "deep": {inner}}}'
    try:
        login = StoredLogin.from_json(text.encode())
    except InvalidLoginRecord:
        assert depth > 30
        return
    assert_round_trips(login)


# --------------------------------------------------------------------------- messages


MESSAGE_TYPES: list[type[Any]] = [
    *m.ParentMessage.__args__,  # type: ignore[attr-defined]
    *m.ChildMessage.__args__,  # type: ignore[attr-defined]
]


@st.composite
def message_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A line's object: the right version and a real type, fields drawn loosely."""
    cls = draw(st.sampled_from(MESSAGE_TYPES))
    body: dict[str, Any] = {"v": draw(st.sampled_from([m.PROTOCOL_VERSION, 1, "2", True]))}
    body["type"] = draw(st.sampled_from([cls.__name__, cls.__name__.lower(), 5]))
    for f in dataclasses.fields(cls):
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing field
        body[f.name] = draw(SMALL_JSON)
    if draw(st.integers(0, 9)) == 0:
        body[draw(KEYS)] = draw(SMALL_JSON)
    return body


def decode_line(line: bytes) -> None:
    try:
        message = m.decode(line)
    except m.ProtocolViolation:
        return
    assert type(message) in MESSAGE_TYPES
    # What decodes must encode again (the parent re-sends a StartLogin's parts, the child
    # a TokensIssued's login), and come back equal.
    assert m.decode(m.encode(message)) == message


def to_line(body: object) -> bytes:
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass") + b"\n"


@SETTINGS
@given(st.binary(max_size=300))
@example(b"[" * 100_000)
@example(b'{"v":' * 100_000)
@example(b'{"v":3,"type":"ServerReady","port":' + b"9" * 5000 + b"}")
@example(
    b'{"v":3,"type":"StartLogin","name":"n","server_url":"u","redirect_host":"127.0.0.1",'
    b'"redirect_port":5,"callback_path":"/c","scope":null,"client_id":null,'
    b'"client_secret":null,"client_name":"c","time_left":NaN,"configured_timeout":Infinity,'
    b'"interactive":true}'
)
@example(b'{"v":3,"type":"CallbackAccepted","source":"\\ud800"}')
@example(b'{"v":3,"type":{"a":1}}')
@example(b'{"v":3,"type":"ServerReady","port":1,"port":2}')
def test_message_decode_any_bytes(line: bytes) -> None:
    decode_line(line)


@SETTINGS
@given(message_bodies())
def test_message_decode_any_body(body: dict[str, Any]) -> None:
    try:
        line = to_line(body)
    except (UnicodeEncodeError, ValueError):
        return  # not a line anyone could send
    decode_line(line)


@SETTINGS
@given(st.sampled_from(MESSAGE_TYPES), st.data())
def test_message_decode_valid_bodies_round_trip(cls: type[Any], data: st.DataObject) -> None:
    """Bodies whose fields have the right JSON types: decode succeeds, never raises."""
    kinds: dict[str, st.SearchStrategy[Any]] = {
        "str": ANY_TEXT,
        "int": st.integers(-(2**40), 2**40),
        "float": st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 10**6),
        "bool": st.booleans(),
    }
    body: dict[str, Any] = {"v": m.PROTOCOL_VERSION, "type": cls.__name__}
    for f in dataclasses.fields(cls):
        hint = str(f.type)
        if hint.startswith("dict"):
            body[f.name] = data.draw(st.dictionaries(ANY_TEXT, SMALL_JSON, max_size=3))
            continue
        first = hint.split(" | ")[0]
        strategy = kinds.get(first, st.none())
        if "None" in hint:
            strategy = strategy | st.none()
        body[f.name] = data.draw(strategy)
    try:
        line = to_line(body)
    except ValueError:
        return
    decode_line(line)


# --------------------------------------------------------------------------- callback

EXPECTATIONS = st.builds(
    Expectation,
    host=st.sampled_from(["127.0.0.1", "::1", "[::1]", "localhost", "LOCALHOST"]),
    port=st.integers(1, 65535),
    path=st.sampled_from(["/callback", "/cb", "/"]),
    state=st.none() | st.text(min_size=1, max_size=20) | st.just("s7aTe"),
    issuer=st.none() | st.just("https://as.example.com"),
)

PARAM_NAMES = st.sampled_from(
    ["code", "state", "iss", "error", "error_description", "error_uri", "x", ""]
)


@st.composite
def queries(draw: st.DrawFn) -> str:
    """Queries that look like callbacks, sometimes encoded, sometimes raw, sometimes broken."""
    pairs = draw(
        st.lists(
            st.tuples(PARAM_NAMES, ANY_TEXT | st.just("s7aTe") | st.just("https://as.example.com")),
            max_size=6,
        )
    )
    if draw(st.booleans()):
        query = urllib.parse.urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs])
    else:
        query = "&".join(f"{k}={v}" for k, v in pairs)
    if draw(st.booleans()):
        query += draw(st.sampled_from(["%", "%zz", "%ff", "%ed%a0%80", "#frag", "&&", "=&="]))
    return query


@st.composite
def pastes(draw: st.DrawFn) -> str:
    shape = draw(st.integers(0, 5))
    query = draw(queries())
    host = draw(
        st.sampled_from(
            ["127.0.0.1", "127.0.0.1:5555", "localhost:0", "[::1]:99999", "[::1", "[", "x:y"]
        )
    )
    scheme = draw(st.sampled_from(["http://", "https://", "", "ftp://", "HTTP://"]))
    path = draw(st.sampled_from(["/callback", "/", "", "/%63allback", "//x"]))
    wrap = draw(st.sampled_from(["{}", '"{}"', "<{}>", " {} \n", "\u201c{}\u201d"]))
    text = [
        f"{scheme}{host}{path}?{query}",
        f"{path}?{query}",
        f"?{query}",
        query,
        draw(ANY_TEXT),
        draw(st.text(max_size=400)),
    ][shape]
    return wrap.format(text)


def check_verdict(verdict: object) -> None:
    assert isinstance(verdict, Accepted | Denied | Rejected)
    status, page = render_page(verdict)
    assert isinstance(status, int)
    page.encode("utf-8")  # the child sends it: no lone surrogate may reach a page
    assert response_headers(verdict)
    if isinstance(verdict, Accepted):
        assert verdict.code and all(0x20 <= ord(c) <= 0x7E for c in verdict.code)


@SETTINGS
@given(pastes() | ANY_TEXT)
@example("http://[::1/callback?code=c&state=s")
@example("http://127.0.0.1:99999/callback?code=c&state=s")
@example("127.0.0.1:x/callback?code=c&state=s")
@example("?state=%ed%a0%80&code=c")
@example("state=\ud800&code=c")
@example("state=s&" + "&".join(["a=1"] * 100) + "&code=c")
@example("<" * 40_000 + "state=s&code=c" + ">" * 40_000)
@example('"' + "state=\ud800&code=c&error_description=%ed%a0%80" + '"')
def test_parse_paste_any_text(text: str) -> None:
    pasted = parse_paste(text)
    assert isinstance(pasted, PastedCallback | PasteProblem)
    if isinstance(pasted, PastedCallback):
        assert pasted.state


@SETTINGS
@given(pastes() | ANY_TEXT, EXPECTATIONS)
def test_judge_paste_any_text(text: str, expect: Expectation) -> None:
    check_verdict(judge_paste(text, expect))


@SETTINGS
@given(
    st.sampled_from(["GET", "POST", "get"]) | ANY_TEXT,
    st.sampled_from(["/callback", "/cb", "/"]) | ANY_TEXT,
    queries() | ANY_TEXT,
    st.none() | st.sampled_from(["127.0.0.1:5555", "localhost", " ", "[::1]:1"]) | ANY_TEXT,
    EXPECTATIONS,
)
@example(
    "GET",
    "/callback",
    "state=\ud800&code=c",
    "127.0.0.1:1",
    Expectation(host="127.0.0.1", port=1, path="/callback", state="\ud800"),
)
def test_judge_request_any_request(
    method: str, path: str, query: str, host: str | None, expect: Expectation
) -> None:
    check_verdict(judge_request(method, path, query, host, expect))


# --------------------------------------------------------------------------- routing


@SETTINGS
@given(
    st.dictionaries(st.text(min_size=1, max_size=8), ANY_TEXT.filter(bool), max_size=4),
    pastes() | ANY_TEXT,
)
def test_paste_router_routes_any_text(states: dict[str, str], text: str) -> None:
    router = PasteRouter()
    armed: dict[str, str] = {}
    for login, state in states.items():
        if state in armed.values():
            continue  # arm refuses a state another login holds
        router.arm(login, state)
        armed[login] = state
    decision = router.route(text)
    assert isinstance(decision, Deliver | NoSuchLogin | Unparseable)
    if isinstance(decision, Deliver):
        pasted = parse_paste(text)
        assert isinstance(pasted, PastedCallback)
        assert armed[decision.login] == pasted.state


# --------------------------------------------------------------------------- spec

ENTRY_KEYS = st.sampled_from(["url", "oauth", "headers", "timeout", "enabled", "bogus"]) | KEYS
OAUTH_KEYS = (
    st.sampled_from([f.name for f in dataclasses.fields(ServerSpec)] + ["bogus", ""]) | ANY_TEXT
)
OAUTH_VALUES = SMALL_JSON | st.sampled_from(["127.0.0.1", "/callback", "http://[::1", 0, 65536])
URLS = (
    st.sampled_from(
        [
            "http://127.0.0.1/mcp",
            "https://x/mcp",
            "http://[::1",
            "http://[::1]:99999/",
            "mailto:x",
            "http://",
            "http://a:b@/",
        ]
    )
    | ANY_TEXT
)


@st.composite
def server_entries(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(SMALL_JSON)
    entry: dict[Any, Any] = {}
    if draw(st.integers(0, 5)):
        entry["url"] = draw(URLS | SMALL_JSON)
    if draw(st.booleans()):
        entry["oauth"] = draw(st.dictionaries(OAUTH_KEYS, OAUTH_VALUES, max_size=3) | SMALL_JSON)
    for key in draw(st.lists(ENTRY_KEYS, max_size=2)):
        entry[key] = draw(SMALL_JSON)
    return entry


NAMES = st.sampled_from(["linear", "../x", "a/b", "", ".", "..", "a\0", "x" * 65]) | ANY_TEXT


@SETTINGS
@given(st.dictionaries(NAMES | st.integers() | st.none(), server_entries(), max_size=3))
@example({"a": {"url": "http://[::1/mcp"}})
@example({"a": {"url": "http://127.0.0.1/mcp", "oauth": {"timeout": math.inf}}})
@example({"a": {"url": "http://127.0.0.1/mcp", "oauth": {1: 2}}})
def test_parse_servers_any_mapping(servers: dict[Any, Any]) -> None:
    try:
        specs = parse_servers(servers)
    except InvalidServerSpec:
        return
    assert [spec.name for spec in specs] == [str(name) for name in servers]
    for spec in specs:
        assert check_server_name(spec.name) == spec.name
        assert spec.timeout is None or math.isfinite(spec.timeout)


@SETTINGS
@given(NAMES | JSON)
def test_check_server_name_any_value(name: object) -> None:
    try:
        checked = check_server_name(name)
    except InvalidServerSpec:
        return
    assert checked == name and isinstance(checked, str)
    assert "/" not in checked and "\0" not in checked and checked not in (".", "..")
    assert 1 <= len(checked) <= 64
