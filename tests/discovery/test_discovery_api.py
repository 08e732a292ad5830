"""Discovery's checks before any socket opens, under asyncio and trio (the LAN behaviour is tested in
namespaces: tests/lan/test_discovery.py)."""

from __future__ import annotations

import pytest

from crdtsync.discovery import Discovery
from crdtsync.errors import InvalidInputError

KEY = b"k" * 32


@pytest.mark.anyio
async def test_an_address_not_on_this_host_is_refused_before_any_socket_opens() -> None:
    discovery = Discovery(KEY, interfaces=["192.0.2.77"], port=7000)
    with pytest.raises(InvalidInputError) as caught:
        async with discovery:
            pass
    assert caught.value.code == "DISCOVERY_NO_INTERFACE"


@pytest.mark.parametrize("interfaces", [[], ["eth0"], ["::1"]])
def test_interfaces_must_be_ipv4_addresses(interfaces: list[str]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        Discovery(KEY, interfaces=interfaces, port=7000)
    assert caught.value.code == "DISCOVERY_NO_INTERFACE"


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_port_outside_1_to_65535_is_refused(port: int) -> None:
    with pytest.raises(InvalidInputError):
        Discovery(KEY, interfaces=["10.0.0.1"], port=port)


def test_instance_names_are_random_per_run_and_interface() -> None:
    first = Discovery(KEY, interfaces=["10.0.0.1", "10.1.0.1"], port=7000)
    second = Discovery(KEY, interfaces=["10.0.0.1", "10.1.0.1"], port=7000)
    names = [*first.own_instances, *second.own_instances]
    assert len(set(names)) == 4 and all(len(n) == 16 for n in names)


@pytest.mark.anyio
async def test_waiting_for_members_before_entering_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        await Discovery(KEY, interfaces=["10.0.0.1"], port=None).next_found()
