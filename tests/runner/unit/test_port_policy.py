"""Which port a login leases: configured, pinned by a stored registration, or any."""

from __future__ import annotations

import pytest
from mcp.shared.auth import OAuthClientInformationFull

from runner._core._port_policy import IfTaken, PortPlan, plan_port, registered_port
from runner._core._spec import ServerSpec
from runner.events import PortTaken


def stored_with(*redirect_uris: str) -> OAuthClientInformationFull:
    """A stored dynamic registration naming ``redirect_uris``."""
    return OAuthClientInformationFull.model_validate(
        {"client_id": "dyn", "redirect_uris": list(redirect_uris)}
    )


SPEC = ServerSpec(name="srv", url="http://127.0.0.1:1/mcp")


def test_a_configured_port_waits_until_the_deadline_and_never_falls_back() -> None:
    spec = ServerSpec(name="srv", url=SPEC.url, redirect_port=5173)
    stored = stored_with("http://127.0.0.1:6000/callback")  # pins another port: ignored
    assert plan_port(spec, stored, time_left=12.5) == PortPlan(5173, 12.5, IfTaken.FAIL)
    assert plan_port(spec, None, time_left=-1.0) == PortPlan(5173, 0.0, IfTaken.FAIL)


def test_a_registered_port_is_tried_at_once_with_a_fallback() -> None:
    plan = plan_port(SPEC, stored_with("http://127.0.0.1:6000/callback"), time_left=30)
    assert plan == PortPlan(6000, 0.0, IfTaken.FALL_BACK)
    taken = plan.taken("srv", "in use")
    assert taken == PortTaken("srv", (6000,), "in use")
    assert str(taken) == "port 6000 is taken (in use); registering again"


def test_otherwise_any_port_with_nothing_to_fall_back_to() -> None:
    assert plan_port(SPEC, None, time_left=30) == PortPlan(0, 0.0, IfTaken.RAISE)
    assert plan_port(SPEC, stored_with(), time_left=30) == PortPlan(0, 0.0, IfTaken.RAISE)


DOCUMENT_PORTS = frozenset({27890, 27891})


def test_a_document_leases_one_of_its_ports_and_falls_back_to_registering() -> None:
    plan = plan_port(SPEC, None, time_left=30, document_ports=DOCUMENT_PORTS)
    assert plan == PortPlan(DOCUMENT_PORTS, 0.0, IfTaken.FALL_BACK, DOCUMENT_PORTS)
    taken = plan.taken("srv", "taken")
    assert taken == PortTaken("srv", (27890, 27891), "taken", document=True)
    assert str(taken) == (
        "the client metadata document's ports (27890, 27891) are taken (taken); registering"
    )


def test_a_stored_registration_pins_its_port_before_a_document() -> None:
    plan = plan_port(
        SPEC, stored_with("http://127.0.0.1:6000/callback"), 30, document_ports=DOCUMENT_PORTS
    )
    assert plan == PortPlan(6000, 0.0, IfTaken.FALL_BACK)


def test_a_configured_port_is_a_document_port_only_if_it_names_it() -> None:
    spec = ServerSpec(name="srv", url=SPEC.url, redirect_port=27890)
    plan = plan_port(spec, None, 5.0, document_ports=DOCUMENT_PORTS)
    assert plan == PortPlan(27890, 5.0, IfTaken.FAIL, DOCUMENT_PORTS)


@pytest.mark.parametrize(
    ("uris", "port"),
    [
        (("http://127.0.0.1:6000/callback",), 6000),
        (("http://localhost:7000/callback", "http://127.0.0.1:6001/callback"), 6001),
        (("http://127.0.0.1:6000/other",), None),  # another path
        (("http://localhost:6000/callback",), None),  # another host spelling
    ],
)
def test_the_registered_port_is_the_one_on_this_host_and_path(
    uris: tuple[str, ...], port: int | None
) -> None:
    assert registered_port(stored_with(*uris), SPEC) == port


def test_ipv6_redirects_match_in_brackets() -> None:
    spec = ServerSpec(name="srv", url=SPEC.url, redirect_host="::1")
    assert registered_port(stored_with("http://[::1]:6002/callback"), spec) == 6002


def test_a_static_client_is_never_pinned_by_a_stored_registration() -> None:
    spec = ServerSpec(name="srv", url=SPEC.url, client_id="static")
    assert registered_port(stored_with("http://127.0.0.1:6000/callback"), spec) is None
    assert plan_port(spec, stored_with("http://127.0.0.1:6000/callback"), 30).port == 0


def test_nothing_stored_pins_nothing() -> None:
    assert registered_port(None, SPEC) is None
