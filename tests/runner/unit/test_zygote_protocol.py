"""The parent <-> zygote control protocol: round trips, and rejection of anything else."""

from __future__ import annotations

import dataclasses
import json
import signal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner._core import _zygote_protocol as zp

EVERY_MESSAGE: list[zp.ZygoteMessage] = [
    zp.Fork(id=0),
    zp.Fork(id=2**63 - 1),
    zp.Signal(pid=1, sig=signal.SIGTERM),
    zp.Signal(pid=2**31 - 1, sig=signal.SIGKILL),
    zp.Ready(),
    zp.Forked(id=7, pid=4242),
    zp.Refused(id=3, reason="2 descriptors, not 3"),
    zp.Refused(id=None, reason="unknown op"),
    zp.Exited(pid=4242, code=0),
    zp.Exited(pid=4242, code=-signal.SIGKILL),
    zp.Exited(pid=4242, code=255),
]

PROPERTY = settings(deadline=None, max_examples=200)


def body(message: zp.ZygoteMessage) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(zp.encode(message))
    return decoded


def packet(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=repr)
def test_every_message_round_trips(message: zp.ZygoteMessage) -> None:
    data = zp.encode(message)
    assert len(data) <= zp.MAX_PACKET_BYTES
    assert zp.decode(data) == message


def test_every_message_type_is_covered() -> None:
    covered = {type(m) for m in EVERY_MESSAGE}
    assert covered == {zp.Fork, zp.Signal, zp.Ready, zp.Forked, zp.Refused, zp.Exited}


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=repr)
def test_every_packet_carries_the_version(message: zp.ZygoteMessage) -> None:
    assert body(message)["v"] == zp.PROTOCOL_VERSION


def test_messages_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        zp.Fork(id=1).id = 2  # type: ignore[misc]


BAD_PACKETS: dict[str, bytes] = {
    "empty": b"",
    "not json": b"{",
    "not utf-8": b"\xff\xfe\xfd",
    "a list": b"[]",
    "a number": b"1",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "nested under a field": b'{"v":1,"op":"fork","id":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "over the limit": b'{"v":1,"op":"ready","pad":"' + b"x" * zp.MAX_PACKET_BYTES + b'"}',
    "no version": packet({"op": "ready"}),
    "another version": packet({"v": zp.PROTOCOL_VERSION + 1, "op": "ready"}),
    "version as bool": packet({"v": True, "op": "ready"}),
    "version as float": packet({"v": 1.0, "op": "ready"}),
    "no op": packet({"v": 1}),
    "unknown op": packet({"v": 1, "op": "launch"}),
    "op not a str": packet({"v": 1, "op": ["fork"]}),
    "class name as op": packet({"v": 1, "op": "Fork", "id": 1}),
    "missing field": packet({"v": 1, "op": "forked", "id": 0}),
    "extra field": packet({"v": 1, "op": "ready", "id": 0}),
    "pid as bool": packet({"v": 1, "op": "forked", "id": 0, "pid": True}),
    "pid as str": packet({"v": 1, "op": "forked", "id": 0, "pid": "12"}),
    "pid as float": packet({"v": 1, "op": "forked", "id": 0, "pid": 12.0}),
    "pid 0 (kill: my process group)": packet({"v": 1, "op": "signal", "pid": 0, "sig": 9}),
    "pid -1 (kill: everyone)": packet({"v": 1, "op": "signal", "pid": -1, "sig": 9}),
    "pid over pid_t": packet({"v": 1, "op": "exited", "pid": 2**31, "code": 0}),
    "huge pid": packet({"v": 1, "op": "exited", "pid": 10**300, "code": 0}),
    "signal 0": packet({"v": 1, "op": "signal", "pid": 5, "sig": 0}),
    "signal out of range": packet({"v": 1, "op": "signal", "pid": 5, "sig": 10_000}),
    "negative id": packet({"v": 1, "op": "fork", "id": -1}),
    "id as bool": packet({"v": 1, "op": "fork", "id": False}),
    "code out of range": packet({"v": 1, "op": "exited", "pid": 5, "code": 256}),
    "reason not a str": packet({"v": 1, "op": "refused", "id": 1, "reason": 5}),
    "reason too long": packet({"v": 1, "op": "refused", "id": 1, "reason": "x" * 2000}),
    "NaN": b'{"v":1,"op":"fork","id":NaN}',
    "Infinity id": b'{"v":1,"op":"exited","pid":Infinity,"code":0}',
    "huge literal": b'{"v":1,"op":"fork","id":' + b"9" * 4000 + b"}",
}


@pytest.mark.parametrize("data", BAD_PACKETS.values(), ids=BAD_PACKETS.keys())
def test_a_bad_packet_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(zp.ZygoteProtocolError):
        zp.decode(data)


def test_invalid_messages_cannot_be_built() -> None:
    with pytest.raises(zp.ZygoteProtocolError):
        zp.Signal(pid=-1, sig=signal.SIGKILL)
    with pytest.raises(zp.ZygoteProtocolError):
        zp.Forked(id=0, pid=True)


def test_the_error_is_a_value_error() -> None:
    assert issubclass(zp.ZygoteProtocolError, ValueError)


# --- properties: any input decodes to a valid message or raises the module's error ----


def decodes_or_refuses(data: bytes) -> None:
    try:
        message = zp.decode(data)
    except zp.ZygoteProtocolError:
        return
    assert isinstance(message, zp.Fork | zp.Signal | zp.Ready | zp.Forked | zp.Refused | zp.Exited)
    assert zp.decode(zp.encode(message)) == message  # what decodes is a valid message


@PROPERTY
@given(st.binary(max_size=zp.MAX_PACKET_BYTES + 16))
def test_arbitrary_bytes(data: bytes) -> None:
    decodes_or_refuses(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
field_names = st.sampled_from(["v", "op", "id", "pid", "sig", "code", "reason", "x"])
ops = st.sampled_from(["fork", "signal", "ready", "forked", "refused", "exited", "nope"])
versions = st.sampled_from([zp.PROTOCOL_VERSION, zp.PROTOCOL_VERSION + 1, 0, True, 1.0, "1"])
packet_shaped = st.fixed_dictionaries(
    {"v": versions, "op": ops},
    optional={name: json_values for name in ("id", "pid", "sig", "code", "reason")},
)


@PROPERTY
@given(json_values)
def test_arbitrary_json(value: object) -> None:
    decodes_or_refuses(json.dumps(value).encode())


@PROPERTY
@given(packet_shaped)
def test_arbitrary_packet_shaped_json(value: dict[str, Any]) -> None:
    decodes_or_refuses(json.dumps(value).encode())


@PROPERTY
@given(
    st.sampled_from(EVERY_MESSAGE),
    st.lists(st.tuples(field_names, json_values | st.just(None)), max_size=3),
    st.lists(field_names, max_size=2),
)
def test_mutated_valid_packets(
    message: zp.ZygoteMessage,
    replacements: list[tuple[str, object]],
    removals: list[str],
) -> None:
    mutated = body(message)
    for name, value in replacements:
        mutated[name] = value
    for name in removals:
        mutated.pop(name, None)
    decodes_or_refuses(json.dumps(mutated).encode())


@PROPERTY
@given(st.sampled_from(EVERY_MESSAGE), st.data())
def test_byte_flipped_valid_packets(message: zp.ZygoteMessage, data: st.DataObject) -> None:
    raw = bytearray(zp.encode(message))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[index] = data.draw(st.integers(min_value=0, max_value=255))
    decodes_or_refuses(bytes(raw))
