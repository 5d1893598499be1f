"""Properties of the lease-file decoder, which reads what another process (or a person) wrote.

Property: whatever the bytes, ``decode_table`` either returns a valid ``LeaseTable`` that
``encode_table`` can write back, or raises ``ValueError``; never anything else. And every valid
table survives a round trip. Pure: no files, sockets or processes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portlease.records import (
    LeaseRecord,
    LeaseTable,
    WaiterRecord,
    decode_table,
    encode_table,
)

#: Modest: the suite runs on 2 shared cores. deadline=None: a slow example is not a failure.
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies --------------------------------------------------------------------------------

ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=16)
ports = st.integers(1, 65535)
pids = st.integers(1, 2**31 - 1)
times = st.floats(min_value=0.0, max_value=4e9, allow_nan=False, allow_infinity=False)
owners = st.text(min_size=1, max_size=40).filter(str.isprintable)
meta_text = st.text(max_size=20)  # any str Hypothesis makes is UTF-8 encodable (no surrogates)


@st.composite
def lease_records(draw: st.DrawFn) -> LeaseRecord:
    handed = draw(st.booleans())
    return LeaseRecord(
        id=draw(ids),
        port=draw(ports),
        host=draw(st.sampled_from(["127.0.0.1", "::1", "localhost"])),
        owner=draw(owners),
        pid=draw(pids),
        pid_started=draw(times),
        server_pid=draw(pids) if handed else None,
        server_started=draw(st.none() | times) if handed else None,
        created=draw(times),
        meta=draw(st.dictionaries(meta_text, meta_text, max_size=3)),
    )


@st.composite
def waiter_records(draw: st.DrawFn) -> WaiterRecord:
    return WaiterRecord(
        id=draw(ids),
        port=draw(ports),
        pid=draw(pids),
        pid_started=draw(times),
        ticket=draw(st.integers(1, 2**40)),
        created=draw(times),
        deadline=draw(times),
    )


@st.composite
def tables(draw: st.DrawFn, min_leases: int = 0, min_waiters: int = 0) -> LeaseTable:
    leases = draw(st.lists(lease_records(), min_size=min_leases, max_size=4, unique_by=_id))
    waiters = draw(st.lists(waiter_records(), min_size=min_waiters, max_size=3, unique_by=_id))
    return LeaseTable(tuple(leases), tuple(waiters))


def _id(record: LeaseRecord | WaiterRecord) -> str:
    return record.id


#: Any str, lone surrogates included (JSON can spell them, "\\ud800"; UTF-8 cannot write them).
any_text = st.text(st.characters(exclude_categories=()), max_size=10)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**31 - 2, max_value=2**64)  # around the pid and ticket bounds
    | st.integers(min_value=10**300, max_value=10**400)  # beyond any float
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
    | st.sampled_from(["127.0.0.1", "::1", "localhost", "", "x" * 300])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)


def _dicts(value: object) -> list[dict[str, Any]]:
    """The JSON objects in ``value`` if it is a list (a mutation may have replaced it)."""
    return [item for item in value if type(item) is dict] if type(value) is list else []


def dumps(value: Any) -> bytes:
    """JSON text for ``value``; NaN and Infinity as Python's json writes them (invalid JSON)."""
    return json.dumps(value, allow_nan=True).encode()


def check(data: bytes) -> None:
    """The property: a table that can be written back, or ValueError, nothing else."""
    try:
        table = decode_table(data)
    except ValueError:
        return
    assert isinstance(table, LeaseTable)
    assert decode_table(encode_table(table)) == table  # what was accepted can be written back


# --- properties --------------------------------------------------------------------------------


@PROPERTY
@given(tables())
def test_round_trip(table: LeaseTable) -> None:
    assert decode_table(encode_table(table)) == table


@PROPERTY
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_value_error(data: bytes) -> None:
    check(data)


@PROPERTY
@given(json_values)
def test_arbitrary_json_decodes_or_raises_value_error(value: Any) -> None:
    check(dumps(value))
    check(dumps({"version": 1, "leases": value, "waiters": []}))
    check(dumps({"version": 1, "leases": [], "waiters": value}))


@PROPERTY
@given(tables(min_leases=1, min_waiters=1), st.data())
def test_mutated_valid_table_decodes_or_raises_value_error(
    table: LeaseTable, data: st.DataObject
) -> None:
    document = json.loads(encode_table(table))
    # Replace one to three fields (of a lease, its meta, a waiter, the top level) by any JSON:
    # mostly an existing field, so that the rest stays valid and the decoder gets as far as
    # the field's own check; now and then a new key.
    for _ in range(data.draw(st.integers(1, 3))):
        objects = [document, *_dicts(document.get("leases")), *_dicts(document.get("waiters"))]
        objects += [o["meta"] for o in objects if type(o.get("meta")) is dict]
        # Mostly a record or a meta (they hold the typed fields), the top level now and then.
        records = objects[1:]
        top = not records or data.draw(st.integers(0, 7)) == 0
        target: dict[str, Any] = document if top else data.draw(st.sampled_from(records))
        fields = sorted(target)
        if fields and data.draw(st.integers(0, 9)) != 0:  # 9 in 10: an existing field
            key = data.draw(st.sampled_from(fields))
        else:
            key = data.draw(any_text)
        target[key] = data.draw(json_values)
    check(dumps(document))


@PROPERTY
@given(tables(), st.data())
def test_truncated_or_corrupted_valid_table_decodes_or_raises_value_error(
    table: LeaseTable, data: st.DataObject
) -> None:
    encoded = bytearray(encode_table(table))
    cut = data.draw(st.integers(0, len(encoded)))
    check(bytes(encoded[:cut]))
    where = data.draw(st.integers(0, len(encoded) - 1))
    encoded[where] = data.draw(st.integers(0, 255))
    check(bytes(encoded))


@settings(PROPERTY, max_examples=40)
@given(st.integers(1, 200_000), st.sampled_from([b"[", b'{"a":', b'{"version":1,"leases":[']))
def test_deep_nesting_is_a_value_error(depth: int, opener: bytes) -> None:
    check(opener * depth + b"]" * depth)


def test_non_finite_numbers_are_refused() -> None:
    valid = json.loads(encode_table(LeaseTable((example_record(),))))
    for constant in (math.nan, math.inf, -math.inf):
        valid["leases"][0]["created"] = constant
        check(dumps(valid))
        try:
            decode_table(dumps(valid))
        except ValueError:
            continue
        raise AssertionError(f"{constant} was accepted")


def example_record() -> LeaseRecord:
    return LeaseRecord(id="ab12", port=8080, host="127.0.0.1", owner="o", pid=4, pid_started=1.0)
