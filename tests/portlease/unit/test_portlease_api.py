"""The public surface of portlease: exports, error tree, pickling. Pure."""

from __future__ import annotations

import pickle

import pytest

import portlease
from portlease import (
    InvalidHost,
    InvalidRequest,
    LeaseClosed,
    LeaseRecord,
    LeaseTimeout,
    PortBusy,
    PortleaseError,
    PortleaseWarning,
    RegistryError,
)

HOLDER = LeaseRecord(
    id="ab12", port=8080, host="127.0.0.1", owner="linear", pid=42, pid_started=1.0, created=2.0
)


def test_all_is_sorted_and_complete() -> None:
    assert portlease.__all__ == sorted(portlease.__all__)
    for name in portlease.__all__:
        assert hasattr(portlease, name), name
    for name in ("Registry", "Lease", "LeaseRecord", "PortBusy", "LeaseTimeout", "PortleaseError"):
        assert name in portlease.__all__


def test_error_tree() -> None:
    for cls in (PortBusy, LeaseTimeout, InvalidRequest, InvalidHost, LeaseClosed, RegistryError):
        assert issubclass(cls, PortleaseError)
    assert issubclass(LeaseTimeout, TimeoutError)
    assert issubclass(InvalidHost, ValueError)
    assert issubclass(InvalidHost, InvalidRequest)
    assert issubclass(PortleaseWarning, UserWarning)


ERRORS = [
    PortBusy(8080, 1234, "nginx"),
    PortBusy(8080),
    PortBusy(8080, host="::1", detail="Permission denied"),
    LeaseTimeout(8080, HOLDER, 1.5),
    LeaseTimeout(8080, None, 0.0),
    InvalidRequest("bad port"),
    InvalidHost("0.0.0.0"),
    LeaseClosed("lease ab12 was released"),
    RegistryError("cannot open", "/x/leases.json.lock"),
]


@pytest.mark.parametrize("error", ERRORS, ids=[type(e).__name__ for e in ERRORS])
def test_errors_pickle_with_their_fields(error: PortleaseError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_messages_name_what_matters() -> None:
    assert "pid 1234 (nginx)" in str(PortBusy(8080, 1234, "nginx"))
    assert "8080" in str(PortBusy(8080))
    assert "Permission denied" in str(PortBusy(80, detail="Permission denied"))
    timeout = LeaseTimeout(8080, HOLDER, 1.5)
    assert "linear" in str(timeout)
    assert "pid 42" in str(timeout)
    assert timeout.holder == HOLDER
    assert "waiters" in str(LeaseTimeout(8080, None, 0.0))
    assert "'0.0.0.0'" in str(InvalidHost("0.0.0.0"))
