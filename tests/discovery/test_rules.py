"""The pure rules of discovery: which interfaces are used by default, named ones, member tags."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from crdtsync.discovery import _rules
from crdtsync.discovery._rules import Interface, choose_interfaces, default_interfaces, make_tag, tag_matches
from crdtsync.errors import InvalidInputError, exit_status

KEY, OTHER_KEY = b"k" * 32, b"o" * 32
NONCE, OTHER_NONCE = bytes(16), bytes(range(16))

HOST = [
    Interface("lo", "127.0.0.1", 8),
    Interface("eth0", "192.168.1.20", 24),
    Interface("eth1", "10.0.0.5", 8),
    Interface("wlan0", "172.20.3.4", 16),
    Interface("eno1", "169.254.10.10", 16),
    Interface("eth2", "203.0.113.7", 24),  # public
    Interface("eth3", "172.32.0.1", 16),  # just past 172.16/12
    Interface("docker0", "172.17.0.1", 16),
    Interface("br-1a2b3c", "172.18.0.1", 16),
    Interface("veth9f8e", "10.200.0.1", 24),
    Interface("tun0", "10.8.0.2", 24),
    Interface("wg0", "10.9.0.2", 24),
    Interface("tailscale0", "100.101.102.103", 32),
    Interface("eth0", "fe80::1", 64),
]


def test_by_default_private_and_link_local_lan_interfaces_are_chosen_in_order() -> None:
    assert default_interfaces(HOST) == ["192.168.1.20", "10.0.0.5", "172.20.3.4", "169.254.10.10"]


@pytest.mark.parametrize("interface", [i for i in HOST if i.address not in
                                       ("192.168.1.20", "10.0.0.5", "172.20.3.4", "169.254.10.10")],
                         ids=lambda i: f"{i.name}-{i.address}")
def test_loopback_public_ipv6_container_and_vpn_interfaces_are_left_out_by_default(interface: Interface) -> None:
    assert default_interfaces([interface]) == []


def test_an_address_is_chosen_once() -> None:
    assert default_interfaces([Interface("eth0", "10.1.1.1", 24), Interface("eth0:1", "10.1.1.1", 24)]) == [
        "10.1.1.1"]


def test_named_addresses_are_taken_as_named_bridges_included() -> None:
    assert choose_interfaces(["172.18.0.1", "10.0.0.5", "172.18.0.1"], HOST) == ["172.18.0.1", "10.0.0.5"]
    assert choose_interfaces([], HOST) == default_interfaces(HOST)


@pytest.mark.parametrize("named", [["192.168.1.99"], ["eth0"], ["fe80::1"], ["10.0.0.5", "not-an-ip"]])
def test_a_named_address_that_is_not_an_ipv4_address_of_this_host_is_refused_with_a_code(named: list[str]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        choose_interfaces(named, HOST)
    assert caught.value.code == "DISCOVERY_NO_INTERFACE"
    assert "--interface" in caught.value.message
    assert exit_status(caught.value) == 3


def test_no_qualifying_interface_is_an_error_that_says_to_name_one() -> None:
    with pytest.raises(InvalidInputError) as caught:
        choose_interfaces([], [Interface("lo", "127.0.0.1", 8), Interface("docker0", "172.17.0.1", 16)])
    assert caught.value.code == "DISCOVERY_NO_INTERFACE"
    assert "--interface" in caught.value.message


def test_a_tag_matches_its_key_instance_and_port_only() -> None:
    tag = make_tag(KEY, NONCE, instance="a1b2", port=7000)
    assert tag_matches(KEY, tag, instance="a1b2", port=7000)
    assert not tag_matches(OTHER_KEY, tag, instance="a1b2", port=7000)
    assert not tag_matches(KEY, tag, instance="a1b3", port=7000)
    assert not tag_matches(KEY, tag, instance="a1b2", port=7001)


def test_two_tags_for_one_key_differ_and_share_nothing() -> None:
    first = make_tag(KEY, NONCE, instance="a1b2", port=7000)
    second = make_tag(KEY, OTHER_NONCE, instance="a1b2", port=7000)
    assert first != second and len(first) == len(second) == 43
    # The MAC halves (the nonces here are chosen, in use they are random) do not resemble each other either.
    assert sum(x == y for x, y in zip(first[22:], second[22:], strict=True)) < 8


@pytest.mark.parametrize("tag", ["", "x" * 43, "=" * 43, "a" * 42, "a" * 44, "é" * 43, "+" * 43])
def test_anything_that_is_not_a_tag_is_no_match(tag: str) -> None:
    assert not tag_matches(KEY, tag, instance="a1b2", port=7000)


def test_a_tag_spelled_other_than_canonically_is_no_match() -> None:
    tag = make_tag(KEY, NONCE, instance="a1b2", port=7000)
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(tag[-1])
    other = tag[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 1]  # unused bits
    assert not tag_matches(KEY, other, instance="a1b2", port=7000)


def test_a_nonce_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError):
        make_tag(KEY, b"short", instance="a1b2", port=7000)


def test_the_rules_module_is_pure() -> None:
    tree = ast.parse(Path(_rules.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "base64", "binascii", "hashlib", "hmac", "ipaddress", "collections",
                        "dataclasses", "typing", "crdtsync"}
