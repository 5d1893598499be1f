"""Pure tests of portlease.records: format, staleness, waiter order, port and host decisions.

No sockets, files, psutil or processes: liveness is a dict passed in as a probe.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from portlease.errors import InvalidHost, InvalidRequest, PortleaseError
from portlease.records import (
    DENIED,
    FORMAT_VERSION,
    START_TIME_TOLERANCE,
    WAITER_GRACE,
    EncodedRecords,
    LeaseRecord,
    LeaseTable,
    StartTime,
    TurnState,
    WaiterRecord,
    check_meta,
    claimed_ports,
    decode_table,
    encode_record,
    encode_table,
    fixed_port_turn,
    lease_is_stale,
    lease_on_port,
    lease_url,
    loopback_address,
    next_ticket,
    process_alive,
    pruned,
    record_to_json,
    waiter_is_stale,
)

T0 = 1_700_000_000.25


def lease(
    lease_id: str = "a1",
    port: int = 5000,
    pid: int = 100,
    started: float = T0,
    **kw: Any,
) -> LeaseRecord:
    return LeaseRecord(
        id=lease_id,
        port=port,
        host=kw.pop("host", "127.0.0.1"),
        owner=kw.pop("owner", "linear"),
        pid=pid,
        pid_started=started,
        created=kw.pop("created", T0 + 5),
        **kw,
    )


def waiter(
    waiter_id: str, port: int = 5000, pid: int = 200, ticket: int = 1, **kw: Any
) -> WaiterRecord:
    return WaiterRecord(
        id=waiter_id,
        port=port,
        pid=pid,
        pid_started=kw.pop("started", T0),
        ticket=ticket,
        created=kw.pop("created", T0 + 10),
        deadline=kw.pop("deadline", T0 + 100),
    )


def probe(mapping: Mapping[int, StartTime]) -> Any:
    return lambda pid: mapping.get(pid)


# --- format ------------------------------------------------------------------------------------


def full_table() -> LeaseTable:
    return LeaseTable(
        (
            lease("a1", 5000, meta={"url": "https://mcp.example/é", "flow": 'x\ny"z'}),
            lease("b2", 5001, pid=101, host="::1", server_pid=300, server_started=T0 + 1.5),
            lease("c3", 5002, host="localhost", owner="ünïcode owner"),
        ),
        (waiter("w1", 5000, ticket=1), waiter("w2", 5000, ticket=2, pid=201)),
    )


def test_round_trip_preserves_every_field() -> None:
    table = full_table()
    data = encode_table(table)
    assert decode_table(data) == table
    document = json.loads(data)
    assert document["version"] == FORMAT_VERSION
    assert [r["id"] for r in document["leases"]] == ["a1", "b2", "c3"]
    assert [w["ticket"] for w in document["waiters"]] == [1, 2]


def test_empty_table_round_trip() -> None:
    assert decode_table(encode_table(LeaseTable())) == LeaseTable()
    assert json.loads(encode_table(LeaseTable())) == {"version": 1, "leases": [], "waiters": []}


def test_encode_record_matches_json_dumps() -> None:
    for record in full_table().leases:
        expected = json.dumps(record_to_json(record), separators=(",", ":"), ensure_ascii=False)
        assert encode_record(record) == expected.encode()


def test_encode_table_memo_reuses_identical_records_only() -> None:
    table = full_table()
    memo: EncodedRecords = {}
    first = encode_table(table, memo)
    assert first == encode_table(table)
    assert set(memo) == {"a1", "b2", "c3"}
    poisoned = {key: (record, b'{"poisoned":1}') for key, (record, _) in memo.items()}
    assert b"poisoned" in encode_table(table, dict(poisoned))  # same objects: memo is used
    copy = LeaseTable(tuple(replace(r, owner=r.owner) for r in table.leases), table.waiters)
    assert encode_table(copy, dict(poisoned)) == first  # equal but new objects: re-encoded
    smaller = table.without_lease("b2")
    encode_table(smaller, memo)
    assert set(memo) == {"a1", "c3"}


def valid_document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(encode_table(full_table()))
    return loaded


def mutated(change: Any) -> bytes:
    document = valid_document()
    change(document)
    return json.dumps(document).encode()


BAD_FILES: dict[str, bytes] = {
    "garbage": b"\x00\xffnot json at all",
    "empty": b"",
    "truncated": encode_table(full_table())[:57],
    "top-level list": b"[]",
    "wrong version": mutated(lambda d: d.update(version=2)),
    "version true": mutated(lambda d: d.update(version=True)),
    "missing waiters": mutated(lambda d: d.pop("waiters")),
    "extra top key": mutated(lambda d: d.update(extra=1)),
    "leases not list": mutated(lambda d: d.update(leases={})),
    "lease not object": mutated(lambda d: d["leases"].append(5)),
    "lease missing key": mutated(lambda d: d["leases"][0].pop("pid")),
    "lease extra key": mutated(lambda d: d["leases"][0].update(colour="red")),
    "port as str": mutated(lambda d: d["leases"][0].update(port="5000")),
    "port out of range": mutated(lambda d: d["leases"][0].update(port=70000)),
    "pid as bool": mutated(lambda d: d["leases"][0].update(pid=True)),
    "pid negative": mutated(lambda d: d["leases"][0].update(pid=-4)),
    "non-loopback host": mutated(lambda d: d["leases"][0].update(host="0.0.0.0")),
    "meta value int": mutated(lambda d: d["leases"][0].update(meta={"k": 1})),
    "created null": mutated(lambda d: d["leases"][0].update(created=None)),
    "waiter ticket zero": mutated(lambda d: d["waiters"][0].update(ticket=0)),
    "duplicate lease ids": mutated(lambda d: d["leases"].append(d["leases"][0])),
    "nan": encode_table(full_table()).replace(b'"created":1700000005.25', b'"created":NaN', 1),
    "not utf-8": b'{"version":1,"leases":[],"waiters":[],"\xff":1}',
    # issue 6: each of these escaped as TypeError, OverflowError or RecursionError, or was
    # accepted and then could not be written back.
    "nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
    "leases nested 100k deep": b'{"version":1,"leases":' + b"[" * 100_000 + b"]" * 100_000,
    "host as list": mutated(lambda d: d["leases"][0].update(host=["::1"])),
    "host as object": mutated(lambda d: d["leases"][0].update(host={"a": 1})),
    "pid_started beyond float": mutated(lambda d: d["leases"][0].update(pid_started=10**400)),
    "created beyond float": mutated(lambda d: d["waiters"][0].update(created=-(10**309))),
    "pid beyond pid_t": mutated(lambda d: d["leases"][0].update(pid=2**31)),
    "server_pid beyond pid_t": mutated(lambda d: d["leases"][0].update(server_pid=2**40)),
    "ticket beyond bound": mutated(lambda d: d["waiters"][0].update(ticket=2**63)),
    "meta lone surrogate": mutated(lambda d: d["leases"][0].update(meta={"k": "\ud800"})),
    "id lone surrogate": mutated(lambda d: d["leases"][0].update(id="\udfff")),
    "id not printable": mutated(lambda d: d["leases"][0].update(id="a\nb")),
    "version nested": mutated(lambda d: d.update(version=[[[1]]])),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_decode_rejects_bad_files(name: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ValueError is the documented contract
        decode_table(BAD_FILES[name])


def test_error_messages_stay_short_for_huge_values() -> None:
    # A hostile file's value can be megabytes: the message (shown in a warning) must not be.
    for change in (
        lambda d: d["leases"][0].update(owner="x" * 1_000_000),
        lambda d: d["leases"][0].update(port=["p"] * 100_000),
        lambda d: d["leases"][0].update({f"k{i}": 0 for i in range(10_000)}),
        lambda d: d["leases"][0].update(meta={"k": [[[[[[[[1]]]]]]]] * 10_000}),
    ):
        with pytest.raises(ValueError) as caught:  # noqa: PT011 - the documented contract
            decode_table(mutated(change))
        assert len(str(caught.value)) < 400, str(caught.value)[:400]


def test_nan_case_really_contains_nan() -> None:
    assert b"NaN" in BAD_FILES["nan"]


def test_record_validates_meta() -> None:
    with pytest.raises(InvalidRequest, match="str to str"):
        lease(meta={"k": 1})
    with pytest.raises(InvalidRequest, match="mapping"):
        check_meta([("k", "v")])  # type: ignore[arg-type]
    assert isinstance(InvalidRequest("x"), ValueError)


def test_record_is_immutable_and_copies_meta() -> None:
    source = {"k": "v"}
    record = lease(meta=source)
    source["k"] = "changed"
    assert record.meta == {"k": "v"}
    with pytest.raises(TypeError):
        record.meta["k"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        record.port = 1  # type: ignore[misc]


def test_record_pickles() -> None:
    record = full_table().leases[0]
    assert pickle.loads(pickle.dumps(record)) == record


@pytest.mark.parametrize(
    "owner", ["", "x" * 201, "line\nbreak", 5], ids=["empty", "long", "newline", "int"]
)
def test_record_rejects_bad_owner(owner: Any) -> None:
    with pytest.raises(InvalidRequest, match="owner"):
        lease(owner=owner)


# --- liveness ----------------------------------------------------------------------------------


def test_process_alive_rules() -> None:
    assert process_alive(100, T0, probe({100: T0}))
    assert process_alive(100, T0, probe({100: T0 + START_TIME_TOLERANCE / 2}))
    assert not process_alive(100, T0, probe({}))  # no such process
    assert not process_alive(100, T0, probe({100: T0 + 3600}))  # pid reused
    assert process_alive(100, T0, probe({100: DENIED}))  # may not look: alive
    assert process_alive(100, None, probe({100: T0 + 3600}))  # no start recorded: alive


def test_lease_stale_when_owner_dead() -> None:
    assert lease_is_stale(lease(pid=100), probe({}))
    assert not lease_is_stale(lease(pid=100), probe({100: T0}))


def test_lease_stale_on_pid_reuse() -> None:
    assert lease_is_stale(lease(pid=100, started=T0), probe({100: T0 + 10}))


def test_access_denied_means_alive() -> None:
    assert not lease_is_stale(lease(pid=100), probe({100: DENIED}))


def test_server_keeps_record_alive() -> None:
    handed = lease(pid=100, server_pid=300, server_started=T0 + 2)
    assert not lease_is_stale(handed, probe({300: T0 + 2}))  # owner dead, server alive
    assert not lease_is_stale(handed, probe({100: T0}))  # owner alive, server dead
    assert lease_is_stale(handed, probe({}))  # both dead
    assert lease_is_stale(handed, probe({300: T0 + 50}))  # server pid reused, owner dead
    denied_start = lease(pid=100, server_pid=300, server_started=None)
    assert not lease_is_stale(denied_start, probe({300: T0 + 50}))


def test_waiter_staleness() -> None:
    live = {200: T0}
    assert not waiter_is_stale(waiter("w"), probe(live), now=T0 + 50)
    assert waiter_is_stale(waiter("w"), probe({}), now=T0 + 50)
    assert waiter_is_stale(waiter("w"), probe({200: T0 + 99}), now=T0 + 50)
    # a live process whose deadline passed long ago does not block the queue forever
    assert not waiter_is_stale(waiter("w"), probe(live), now=T0 + 100 + WAITER_GRACE / 2)
    assert waiter_is_stale(waiter("w"), probe(live), now=T0 + 100 + WAITER_GRACE * 2)


def test_pruned_splits_and_keeps_order() -> None:
    table = full_table()
    result = pruned(table, probe({100: T0, 201: T0}), now=T0 + 50)
    assert [r.id for r in result.table.leases] == ["a1", "c3"]  # b2: owner 101 and server dead
    assert [r.id for r in result.stale_leases] == ["b2"]
    assert [w.id for w in result.table.waiters] == ["w2"]
    assert [w.id for w in result.stale_waiters] == ["w1"]
    assert result.changed


def test_pruned_returns_same_table_when_all_live() -> None:
    table = full_table()
    everyone: dict[int, StartTime] = {100: T0, 101: T0, 200: T0, 201: T0}
    result = pruned(table, probe(everyone), now=T0 + 50)
    assert result.table is table
    assert not result.changed


# --- ports -------------------------------------------------------------------------------------


def test_fixed_port_free_is_taken() -> None:
    assert fixed_port_turn(LeaseTable(), 5000, "me").state is TurnState.TAKE


def test_fixed_port_held_reports_holder() -> None:
    holder = lease("h", 5000)
    turn = fixed_port_turn(LeaseTable((holder,)), 5000, "me")
    assert turn.state is TurnState.HELD
    assert turn.holder == holder


def test_waiters_first_come_first_served() -> None:
    table = LeaseTable((), (waiter("first", ticket=1), waiter("second", ticket=2)))
    assert fixed_port_turn(table, 5000, "first").state is TurnState.TAKE
    second = fixed_port_turn(table, 5000, "second")
    assert second.state is TurnState.QUEUED
    assert second.ahead == 1
    newcomer = fixed_port_turn(table, 5000, "new")  # not queued yet: everyone is ahead
    assert newcomer.state is TurnState.QUEUED
    assert newcomer.ahead == 2


def test_waiters_for_other_ports_do_not_count() -> None:
    table = LeaseTable((), (waiter("other", port=6000, ticket=1), waiter("me", ticket=2)))
    assert fixed_port_turn(table, 5000, "me").state is TurnState.TAKE


def test_held_port_counts_waiters_ahead() -> None:
    table = LeaseTable((lease("h", 5000),), (waiter("w1", ticket=1), waiter("me", ticket=5)))
    turn = fixed_port_turn(table, 5000, "me")
    assert (turn.state, turn.ahead) == (TurnState.HELD, 1)


def test_next_ticket_follows_every_ticket() -> None:
    assert next_ticket(LeaseTable()) == 1
    table = LeaseTable((), (waiter("a", ticket=7), waiter("b", ticket=3)))
    assert next_ticket(table) == 8


def test_claims_span_hosts() -> None:
    table = LeaseTable((lease("a", 5000, host="::1"), lease("b", 5001)))
    assert claimed_ports(table) == {5000, 5001}
    assert lease_on_port(table, 5000) is table.leases[0]
    assert lease_on_port(table, 5002) is None


# --- hosts and urls ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", "127.0.0.1")),
        ("::1", ("::1", "::1")),
        ("[::1]", ("::1", "::1")),
        ("localhost", ("localhost", "127.0.0.1")),
        ("LocalHost", ("localhost", "127.0.0.1")),
    ],
)
def test_loopback_spellings(given: str, expected: tuple[str, str]) -> None:
    assert loopback_address(given) == expected


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.10", "127.0.0.2", "example.com", "", "::ffff:127.0.0.1"]
)
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(InvalidHost) as caught:
        loopback_address(host)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, PortleaseError)
    assert repr(host) in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_urls() -> None:
    assert lease_url("127.0.0.1", 8080, "/callback") == "http://127.0.0.1:8080/callback"
    assert lease_url("::1", 8080, "/callback") == "http://[::1]:8080/callback"
    assert lease_url("localhost", 8080, "cb") == "http://localhost:8080/cb"
    assert lease_url("127.0.0.1", 8080) == "http://127.0.0.1:8080/"


def test_tolerance_is_positive_and_small() -> None:
    assert 0 < START_TIME_TOLERANCE <= 2
    assert not math.isnan(WAITER_GRACE)
