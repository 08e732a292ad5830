"""The LAN-of-namespaces fixture itself: hosts reach each other, a pulled cable cuts them off, teardown is
complete."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.netns import Lan, NetnsUnavailable, netns_names

# A UDP echo: the server answers each datagram, for at most 20 s.
_ECHO_SERVER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 9999))
    s.settimeout(0.5)
    print("ready", flush=True)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            data, peer = s.recvfrom(100)
        except TimeoutError:
            continue
        s.sendto(b"echo " + data, peer)
""")
# A UDP client: up to 10 tries of 0.2 s; prints the answer or "nothing".
_ECHO_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    for _ in range(10):
        s.sendto(b"hello", (sys.argv[1], 9999))
        try:
            print(s.recv(100).decode())
            break
        except TimeoutError:
            pass
    else:
        print("nothing")
""")


def living_in_group(pgid: int) -> list[str]:
    """The processes of group ``pgid`` that are not zombies (an orphan's zombie waits for init to reap it)."""
    out = subprocess.run(["ps", "-o", "pid=,stat=", "--sid", str(pgid)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if not line.split()[1].startswith("Z")]


def echo(lan: Lan) -> str:
    a, b = lan.hosts[:2]
    return str(b.run([sys.executable, "-c", _ECHO_CLIENT, a.ip], capture_output=True, text=True,
                     check=True, timeout=10).stdout.strip())


@pytest.fixture
def two(lan: Lan) -> Lan:
    server = lan.host("a")
    lan.host("b")
    proc = server.popen([sys.executable, "-c", _ECHO_SERVER, server.ip], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return lan


def test_two_hosts_exchange_a_datagram(two: Lan) -> None:
    assert echo(two) == "echo hello"


def test_a_pulled_cable_cuts_the_host_off_and_plugging_it_back_restores_it(two: Lan) -> None:
    two.hosts[0].link_down()
    assert echo(two) == "nothing"
    two.hosts[0].link_up()
    assert echo(two) == "echo hello"


def test_iptables_rules_apply_inside_the_host_only(two: Lan) -> None:
    two.hosts[0].iptables("-A", "INPUT", "-p", "udp", "--dport", "9999", "-j", "DROP")
    assert echo(two) == "nothing"


def test_hosts_have_distinct_addresses_on_one_subnet_and_names_under_the_prefix(lan: Lan) -> None:
    hosts = [lan.host(name) for name in ("a", "b", "c")]
    assert len({h.ip for h in hosts}) == 3
    assert len({h.ip.rsplit(".", 1)[0] for h in hosts}) == 1
    assert all(h.ns == f"{lan.prefix}-{h.name}" and h.iface == "eth0" for h in hosts)
    with pytest.raises(ValueError):
        lan.host("a")
    out = hosts[0].run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], capture_output=True, text=True,
                       check=True).stdout
    assert f"{hosts[0].ip}/24" in out


def test_nothing_of_the_lan_appears_in_the_root_namespace(lan: Lan) -> None:
    hosts = [lan.host("a"), lan.host("b")]
    # (Other test runs on this machine may add links meanwhile: only links tied to this LAN count.)
    root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    switch = subprocess.run(["ip", "-n", lan.switch_ns, "-o", "link"], capture_output=True, text=True,
                            check=True).stdout
    assert all(f"link-netns {h.ns}" in switch for h in hosts)  # the cables run from the switch to the hosts
    assert f"link-netns {lan.prefix}-" not in root


def test_teardown_kills_processes_and_leaves_no_namespace_of_its_prefix() -> None:
    try:
        lan = Lan()
    except NetnsUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to make network namespaces: {exc}")
        pytest.skip(str(exc))
    try:
        host = lan.host("a")
        lan.host("b")
        # A process that ignores SIGTERM, with a child: both must go.
        stubborn = host.popen([sys.executable, "-c", "import signal, subprocess, sys, time; "
                               "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                               "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        assert {f"{lan.prefix}-sw", f"{lan.prefix}-a", f"{lan.prefix}-b"} <= set(netns_names())
    finally:
        lan.close()
    assert stubborn.returncode is not None
    assert not [ns for ns in netns_names() if ns.startswith(lan.prefix)]
    assert living_in_group(stubborn.pid) == []
    lan.close()  # idempotent
